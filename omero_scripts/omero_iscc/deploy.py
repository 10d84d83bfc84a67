"""Putting the OMERO.scripts where the server runs them, and taking them away again.

The scripts travel inside this package (``omero_iscc/scripts/ISCC_*.py``), so whatever
installed the package (the wheel, install.sh) also holds the scripts of the same release.
Two routes, as OMERO offers them:

- **upload** through a session (``omero iscc scripts install --upload``): each script becomes
  the official script ``iscc/NAME.py`` (``IScript.uploadOfficialScript``); one already there is
  replaced in place (``editScript``), so a second run keeps the scripts' ids. Needs an
  administrator with the ``WriteScriptRepo`` privilege (``DeleteScriptRepo`` to uninstall).
- **copy** on the server host (``--omero-dir DIR``): into ``DIR/lib/scripts/iscc/``, as the
  account that runs the server. The directory is checked first: a link, or a directory that
  another account owns or may write, is refused rather than written through. Each file is
  written to a fresh temporary file beside it and renamed over the old one, so a link planted
  under a script's name is replaced, never followed.

Uninstalling removes only what this release installs: a script whose content differs from
the packaged one (edited by the site, or from another release) is kept and named, other files
are never touched, and the ``iscc`` directory goes only when it is empty.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError

#: The folder of the server's script repository that holds the scripts.
FOLDER = "iscc"
BUNDLED = Path(__file__).resolve().parent / "scripts"


class DeployError(InputError):
    """The scripts cannot be put where they were asked to go."""


@dataclass
class Report:
    """What was done, one line per script."""

    lines: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        self.lines.append(line)


def bundled() -> dict[str, bytes]:
    """The scripts of this release by file name."""
    scripts = {p.name: p.read_bytes() for p in sorted(BUNDLED.glob("ISCC_*.py"))}
    if not scripts:
        raise DeployError(f"no scripts in {BUNDLED}: the omero-iscc installation is incomplete")
    return scripts


# -- copy ------------------------------------------------------------------------------------
def scripts_dir(omero_dir: str) -> Path:
    """``OMERO.server/lib/scripts/iscc`` of ``omero_dir``, after checking that it is an
    OMERO.server (symbolic links to the server directory itself are usual and followed)."""
    base = Path(omero_dir).resolve() / "lib" / "scripts"
    if not base.is_dir():
        raise DeployError(f"{omero_dir} does not look like OMERO.server (no lib/scripts)")
    return base / FOLDER


def _check_dir(path: Path, exists_ok: bool = True) -> None:
    """Refuses a scripts directory that is a link, not a directory, or that an account other
    than this one (or root) owns or may write: what is written there runs in the server."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise DeployError(f"{path} is a symbolic link: refusing to write through it (remove it, or make it a folder)")
    if not stat.S_ISDIR(st.st_mode):
        raise DeployError(f"{path} is not a directory")
    if st.st_uid not in (os.geteuid(), 0):
        raise DeployError(f"{path} belongs to uid {st.st_uid}: run this as the account that owns OMERO.server")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise DeployError(f"{path} may be written by others (mode {stat.S_IMODE(st.st_mode):o}): chmod go-w it")


def _write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def copy(omero_dir: str, dry_run: bool = False) -> Report:
    """Copies the scripts into ``OMERO.server/lib/scripts/iscc/``; unchanged ones stay."""
    report = Report()
    target = scripts_dir(omero_dir)
    _check_dir(target.parent)
    if os.path.lexists(target):
        _check_dir(target)
    else:
        report.say(f"create {target}/")
        if not dry_run:
            os.mkdir(target, 0o755)
            _check_dir(target)
    for name, data in bundled().items():
        path = target / name
        if os.path.lexists(path) and not path.is_symlink() and path.is_file() and path.read_bytes() == data:
            report.say(f"unchanged {path}")
            continue
        report.say(f"install {path}")
        if not dry_run:
            _write(path, data)
    return report


def remove_copies(omero_dir: str, dry_run: bool = False) -> Report:
    """Removes the scripts of this release from ``lib/scripts/iscc/``; keeps changed ones and
    anything else, and the directory unless it is left empty."""
    report = Report()
    target = scripts_dir(omero_dir)
    if not os.path.lexists(target):
        report.say(f"absent {target}/")
        return report
    _check_dir(target)
    for name, data in bundled().items():
        path = target / name
        if not os.path.lexists(path):
            report.say(f"absent {path}")
        elif path.is_symlink() or not path.is_file() or path.read_bytes() != data:
            report.say(f"kept {path}: not the script this release installs")
            report.kept.append(str(path))
        else:
            report.say(f"remove {path}")
            if not dry_run:
                os.unlink(path)
    left = sorted(p.name for p in target.iterdir()) if target.is_dir() else []
    if dry_run:
        left = [n for n in left if n not in bundled() or str(target / n) in report.kept]
    if left:
        report.say(f"kept {target}/: it holds {', '.join(left)}")
    else:
        report.say(f"remove {target}/")
        if not dry_run:
            os.rmdir(target)
    return report


# -- upload ----------------------------------------------------------------------------------
def _script_id(svc, path: str) -> int:
    """The id of the official script at ``path`` (``iscc/NAME.py``), or -1."""
    for candidate in (path, "/" + path):
        found = svc.getScriptID(candidate)
        found = getattr(found, "val", found)
        if found is not None and found >= 0:
            return int(found)
    return -1


def upload(script_service, query_service, dry_run: bool = False) -> Report:
    """Uploads each script as the official script ``iscc/NAME.py``, or replaces the one there
    (its id stays)."""
    report = Report()
    for name, data in bundled().items():
        path = f"{FOLDER}/{name}"
        text = data.decode("utf-8")
        sid = _script_id(script_service, path)
        if sid < 0:
            report.say(f"upload {path}")
            if not dry_run:
                sid = script_service.uploadOfficialScript(path, text)
                report.lines[-1] += f" (OriginalFile:{getattr(sid, 'val', sid)})"
        else:
            report.say(f"replace {path} (OriginalFile:{sid})")
            if not dry_run:
                script_service.editScript(query_service.get("OriginalFile", sid), text)
    return report


def delete_uploads(script_service, dry_run: bool = False) -> Report:
    """Deletes the official scripts ``iscc/NAME.py`` of this release's names."""
    report = Report()
    for name in bundled():
        path = f"{FOLDER}/{name}"
        sid = _script_id(script_service, path)
        if sid < 0:
            report.say(f"absent {path}")
            continue
        report.say(f"delete {path} (OriginalFile:{sid})")
        if not dry_run:
            try:
                script_service.deleteScript(sid)
            except Exception as exc:  # noqa: BLE001 - one script the server keeps must not stop the others
                report.lines[-1] = f"kept {path} (OriginalFile:{sid}): the server refused: {describe(exc)}"
                report.kept.append(path)
    return report


def describe(exc: BaseException) -> str:
    """A server's refusal in a line; a security violation names the privileges it needs."""
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    if type(exc).__name__ == "SecurityViolation":
        text += " (official scripts need an administrator with WriteScriptRepo, and DeleteScriptRepo to delete)"
    return text


def run(uninstall: bool, omero_dir: str | None, services=None, dry_run: bool = False, out=print) -> int:
    """``scripts install [--uninstall]``: by copy when ``omero_dir`` is given, else by upload
    through ``services`` (a callable giving the script and query services of a session).
    Returns the exit status: 0, 1 when something was kept or refused, 2 when nothing could be
    done."""
    from .statuses import ExitStatus

    try:
        if omero_dir:
            report = remove_copies(omero_dir, dry_run) if uninstall else copy(omero_dir, dry_run)
        else:
            import omero

            script_service, query_service = services()
            try:
                report = (
                    delete_uploads(script_service, dry_run)
                    if uninstall
                    else upload(script_service, query_service, dry_run)
                )
            except omero.ServerError as exc:
                out(f"omero-iscc: the server refused: {describe(exc)}")
                return ExitStatus.FAILURE
    except OSError as exc:
        out(f"omero-iscc: {exc.filename or ''}: {exc.strerror or exc}")
        return ExitStatus.USAGE
    for line in report.lines:
        out(("would " if dry_run else "") + line)
    return ExitStatus.FAILURE if report.kept else ExitStatus.SUCCESS
