"""``python -m omero_iscc``: the scheduler and its admin commands.

    python -m omero_iscc [run] [--once]     poll for images without an ISCC and annotate them
    python -m omero_iscc status             failures kept in the state file
    python -m omero_iscc doctor [--test T]  connection | processing | service | list
    python -m omero_iscc find ISCC:...|ID   images whose ISCC equals or is near a code or image
    python -m omero_iscc backlog --slurm | --local N [--resume] [--wait]
                                            every image without an ISCC, hashed on a Slurm
                                            cluster (or N at a time here), annotated here
    python -m omero_iscc backlog ingest [--wait]
                                            annotate what the cluster has hashed so far (and
                                            what it hashes next, until its tasks have ended)
    python -m omero_iscc backlog status     shards per state; throughput, time left; refusals
    python -m omero_iscc backlog close      cancel the plan's tasks, hand its images back
    python -m omero_iscc scripts install --omero-dir DIR [--uninstall]
                                            copy the OMERO.scripts into DIR/lib/scripts/iscc
                                            (`omero iscc scripts install --upload` uploads them)

Exit status (``statuses.ExitStatus``, 0 to 3 as the worker's): 0 when nothing failed, 1 when
an image (or a check) failed, 2 on configuration errors (the server refusing the login
included), 3 when another scheduler already holds the lock (nothing was done), 5 when the
OMERO server cannot be reached (no image is counted as failed).
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .commands import COMMANDS, SCRIPTS_HELP, add_overrides, add_scripts_arguments, run


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m omero_iscc",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"omero-iscc {__version__}")
    p.add_argument("--config", default=None, help="JSON configuration file (default /etc/omero-iscc/config.json)")
    add_overrides(p)
    sub = p.add_subparsers(dest="command")
    for name, (help_text, add_arguments) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text))
    add_scripts_arguments(sub.add_parser("scripts", help=SCRIPTS_HELP), upload=False)
    p.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None, connect=None) -> int:
    """Parses ``argv`` once and runs the command (``commands.run``); returns its exit status."""
    return run(parser().parse_args(argv), connect)


if __name__ == "__main__":
    sys.exit(main())
