"""What every omero-iscc script does around its own work, in one place: read the inputs,
connect across groups, keep the session alive, report input errors through the ``ERROR``
output (OMERO.web shows it), and set ``Message`` and the object outputs.

A script's ``run_script()`` keeps the official skeleton (``scripts.client(...)``, then
``try: ... finally: client.closeSession()``) and calls :func:`run` inside it.
"""

from __future__ import annotations

import signal
from typing import Callable

from .config import ScriptSettings, script_settings
from .errors import InputError
from .worker import WorkerError, stop_workers


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
        from .connection import omero_access as omero_factory

    import Ice
    import omero

    omero_access = omero_factory(client)
    client.enableKeepAlive(60)
    previous = signal.signal(signal.SIGTERM, _cancelled)
    try:
        message, outputs = work(omero_access, params)
    except REPORTED as exc:
        client.setOutput("ERROR", rstring(str(exc)))
        message, outputs = f"{nothing_done}: {exc}", {}
    except (omero.ServerError, Ice.Exception) as exc:
        # What the server refused or lost (a permission, a vanished object, the session):
        # the user reads why in OMERO.web instead of a traceback.
        reason = f"OMERO: {describe(exc)}"
        client.setOutput("ERROR", rstring(reason))
        message, outputs = f"{nothing_done}: {reason}", {}
    finally:
        signal.signal(signal.SIGTERM, previous)
    client.setOutput("Message", rstring(message))
    for name, obj in outputs.items():
        client.setOutput(name, robject(obj))


def _cancelled(signum: int, _frame) -> None:
    """A cancelled script: OMERO's Processor sends SIGTERM to the script's pid alone
    (``ProcessI._term``), so the workers it started are stopped here, and waited for, before
    the script ends; none is left reading the repository for no one."""
    stop_workers()
    raise SystemExit(128 + signum)


def settings_for(omero_access) -> ScriptSettings:
    """The scripts' settings from the configuration file, their time budget ending before
    OMERO's script timeout (``omero.scripts.timeout``), read from the server."""
    return script_settings().within(omero_access.script_timeout())


def time_note(left: list[int], settings: ScriptSettings, command: str) -> str:
    """What a script that stopped before its time limit says (``""`` when nothing is left):
    how many images are left, and that long runs belong to ``command`` or the scheduler."""
    if not left:
        return ""
    limit = f"{settings.script_timeout / 60:g} min, omero.scripts.timeout" if settings.script_timeout else "its budget"
    return (
        f"; stopped before the script's time limit ({limit}) with {len(left)} image(s) left "
        f"(first: {', '.join(map(str, left[:5]))}): run the script again, or for long runs use "
        f"`{command}` or the scheduler"
    )


def describe(exc: BaseException) -> str:
    """An OMERO or Ice exception in a line: its type and the server's message."""
    text = getattr(exc, "message", None) or str(exc) or ""
    return f"{type(exc).__name__}: {text}".strip().rstrip(":")


def attach_report(
    omero_access, kind: str, obj_id: int | None, name: str, data: bytes, namespace: str, mimetype: str = "text/csv"
) -> tuple[dict, str]:
    """Attaches a script's report to the selected object; where that is refused (the object
    may be read but not annotated, or is gone), returns the report as the script's ``File``
    output instead. Returns the outputs and a sentence for the message ("" when attached).
    Nothing is left orphaned either way."""
    import omero

    if obj_id is not None:
        try:
            return {"File_Annotation": omero_access.attach_file(kind, obj_id, name, data, namespace, mimetype)}, ""
        except (LookupError, omero.ServerError) as exc:
            why = str(exc) if isinstance(exc, LookupError) else describe(exc)
            where = f"the report could not be attached to {kind} {obj_id} ({why})"
    else:
        where = "no selected object to attach the report to"
    try:
        # In the object's group, whose members the report was written for; else the session's.
        place = omero_access.place_of(kind, obj_id) if obj_id is not None else None
        group = place[0] if place is not None else None
        uploaded = omero_access.upload_file(name, data, mimetype, group)
        return {"File": uploaded}, f"; {where}: it is the script's File output"
    except omero.ServerError as exc:
        return {}, f"; {where}, and it could not be uploaded either ({describe(exc)})"


def report_for_administrators(omero_access, name: str, data: bytes, mimetype: str = "text/csv") -> tuple[dict, str]:
    """A report that lists images of every group (an administrator's server-wide one): the
    script's ``File`` output, uploaded in the group "system", which only administrators read;
    never attached to an object that others read. Returns the outputs and a sentence."""
    import omero

    try:
        uploaded = omero_access.upload_file(name, data, mimetype, omero_access.administrators_group())
    except omero.ServerError as exc:
        return {}, f"; the server-wide report could not be uploaded ({describe(exc)})"
    return {"File": uploaded}, (
        "; the report lists images of every group, so it is not attached to the selection: it is the "
        'script\'s File output, kept in the group "system", where only administrators can read it'
    )
