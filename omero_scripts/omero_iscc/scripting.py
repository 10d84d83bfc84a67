"""What every omero-iscc script does around its own work, in one place: read the inputs,
connect across groups, keep the session alive, report input errors through the ``ERROR``
output (OMERO.web shows it), and set ``Message`` and the object outputs.

A script's ``run_script()`` keeps the official skeleton (``scripts.client(...)``, then
``try: ... finally: client.closeSession()``) and calls :func:`run` inside it.
"""

from __future__ import annotations

from typing import Callable

from .errors import InputError
from .worker import WorkerError


class ScriptError(InputError):
    """The script cannot run for this user or input (reported through ``ERROR``)."""


#: Errors that end a script with a message through ``ERROR`` instead of a traceback: what the
#: user must change (``InputError``: a bad selection or configuration, a missing worker, a
#: held lock), and a worker run that failed as a whole.
REPORTED = (InputError, WorkerError)

Work = Callable[[object, dict], tuple[str, dict]]


def run(client, work: Work, nothing_done: str, omero_factory=None) -> None:
    """Runs ``work(omero_access, params) -> (message, {output name: model object})``."""
    from omero.rtypes import robject, rstring

    params = client.getInputs(unwrap=True)
    if omero_factory is None:
        from omero.gateway import BlitzGateway

        from .gateway import BlitzOmero

        def omero_factory(c):
            return BlitzOmero(BlitzGateway(client_obj=c))

    omero_access = omero_factory(client)
    client.enableKeepAlive(60)
    try:
        message, outputs = work(omero_access, params)
    except REPORTED as exc:
        client.setOutput("ERROR", rstring(str(exc)))
        message, outputs = f"{nothing_done}: {exc}", {}
    client.setOutput("Message", rstring(message))
    for name, obj in outputs.items():
        client.setOutput(name, robject(obj))
