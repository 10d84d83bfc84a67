"""``omero iscc``: registers the command class of the helper package (``omero_iscc.cli``)."""

import sys

from omero_iscc.cli import HELP, IsccControl

try:
    register("iscc", IsccControl, HELP)  # noqa: F821 - provided by the CLI when it loads plugins
except NameError:
    if __name__ == "__main__":
        from omero.cli import CLI

        cli = CLI()
        cli.register("iscc", IsccControl, HELP)
        cli.invoke(sys.argv[1:])
