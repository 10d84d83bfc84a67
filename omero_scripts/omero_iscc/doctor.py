"""``python -m omero_iscc doctor``: what an administrator runs when nothing happens.

Each check prints ``OK`` or what to fix; the exit status is 1 if any check failed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable

from . import __version__
from .compute import repository_mode
from .config import Config, mask_url
from .connection import session
from .state import Lock
from .statuses import ExitStatus
from .webhook import post
from .worker import WorkerError, find_worker, run_command, selftest

TESTS = ("connection", "processing", "service", "list")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def worker_version(worker: str) -> str | None:
    """The version ``omero-iscc --version`` reports (``omero-iscc 0.1.0`` -> ``0.1.0``)."""
    try:
        out = run_command([worker, "--version"], timeout=30)
    except OSError:
        return None
    words = out.stdout.decode(errors="replace").split()
    return words[1] if out.returncode == 0 and len(words) == 2 and words[0] == "omero-iscc" else None


def _static(worker: str) -> tuple[bool, str]:
    try:
        out = subprocess.run(["ldd", worker], capture_output=True, text=True, timeout=30, check=False)
    except OSError as exc:
        return False, f"cannot run ldd: {exc}"
    text = (out.stdout + out.stderr).strip()
    if "not a dynamic executable" in text or "statically linked" in text:
        return True, "statically linked"
    return (
        False,
        f"dynamically linked ({text.splitlines()[0] if text else 'ldd said nothing'}); rebuild with install.sh",
    )


def check_connection(cfg: Config, connect: Callable) -> list[Check]:
    try:
        with session(cfg, connect):
            pass
    except Exception as exc:  # noqa: BLE001 - every failure here is the answer to the check
        return [
            Check(
                "connection",
                False,
                f"cannot log in to {cfg.host}:{cfg.port} as {cfg.username or '(session key)'}: {exc}; "
                "check host, port and credentials in the configuration",
            )
        ]
    return [Check("connection", True, f"logged in to {cfg.host}:{cfg.port}")]


def check_processing(cfg: Config, connect: Callable | None) -> list[Check]:
    checks = []
    try:
        worker = find_worker(cfg.worker)
    except WorkerError as exc:
        return [Check("worker found", False, str(exc))]
    where = "configured" if cfg.worker else describe_location(worker)
    checks.append(Check("worker found", True, f"{worker} ({where})"))
    version = worker_version(worker)
    checks.append(
        Check(
            "worker version",
            version == __version__,
            f"{version} (the helper's)"
            if version == __version__
            else f"{version or 'unknown'}, but the helper is {__version__}: install the worker of the same "
            "release (pip install the omero-iscc wheel, or install.sh)",
        )
    )
    if version != __version__:
        return checks
    ok, detail = _static(worker)
    checks.append(Check("worker statically linked", ok, detail))
    ok, detail = selftest(worker)
    checks.append(Check("worker selftest", ok, detail))
    root = cfg.repository
    if root is None and connect is not None:
        try:
            with session(cfg, connect) as omero:
                root = omero.repository_root()
        except Exception as exc:  # noqa: BLE001 - reported as the check's failure
            checks.append(Check("repository root", False, f"cannot ask the server for it: {exc}"))
            return checks
    if not root:
        checks.append(Check("repository root", False, "unknown: set 'repository' in the configuration"))
        return checks
    usable, mode = repository_mode(root)
    # Reading through OMERO works everywhere, only slower: the mode is information, not a failure.
    checks.append(Check("file access", True, mode))
    if usable is None:
        return checks
    for allowed in cfg.allowed_roots:
        ok = os.path.isdir(allowed) and os.access(allowed, os.R_OK | os.X_OK)
        checks.append(
            Check(
                "allowed root readable",
                ok,
                allowed
                if ok
                else f"{allowed} is not a readable directory here: in-place imports linking there are read "
                "through OMERO",
            )
        )
    sample = _first_file(root)
    if sample is None:
        checks.append(Check("one real file hashed", False, f"no file found under {root}"))
        return checks
    rel = os.path.relpath(sample, root)
    out = run_command([worker, "sum", "--json", "--root", root, rel], timeout=600)
    text = (out.stdout or out.stderr).decode(errors="replace")
    checks.append(Check("one real file hashed", out.returncode == 0, text.strip()[:300]))
    return checks


def describe_location(worker: str) -> str:
    """Where :func:`find_worker` found it: beside this Python, or on PATH."""
    if os.path.dirname(os.path.abspath(worker)) == os.path.dirname(os.path.abspath(sys.executable)):
        return f"next to {sys.executable}"
    return "on PATH"


def _first_file(root: str) -> str | None:
    for dirpath, _dirs, files in os.walk(root):
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and os.access(path, os.R_OK):
                return path
    return None


def check_service(cfg: Config) -> list[Check]:
    checks = []
    try:
        os.makedirs(cfg.state_dir, mode=0o700, exist_ok=True)
        probe = os.path.join(cfg.state_dir, ".doctor-probe")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
        checks.append(Check("state dir writable", True, cfg.state_dir))
    except OSError as exc:
        checks.append(Check("state dir writable", False, f"{cfg.state_dir}: {exc.strerror or exc}"))
        return checks
    free = Lock(cfg.state_dir).free()
    checks.append(
        Check(
            "lock free", free, "no scheduler running" if free else "a scheduler is running now (or hung); see its log"
        )
    )
    if cfg.webhook_url:
        try:
            status = post(cfg.webhook_url, {"doctor": True, "server": cfg.host}, timeout=5)
            checks.append(Check("webhook answers", 200 <= status < 300, f"HTTP {status}"))
        except Exception as exc:  # noqa: BLE001 - reported as the check's failure
            checks.append(Check("webhook answers", False, f"{mask_url(cfg.webhook_url)}: {exc}"))
    return checks


def check_list(cfg: Config, connect: Callable, limit: int = 10) -> list[Check]:
    try:
        with session(cfg, connect) as omero:
            newest = omero.newest_codes(cfg.namespace, limit)
    except Exception as exc:  # noqa: BLE001 - reported as the check's failure
        return [Check("list", False, f"cannot list the annotations: {exc}")]
    lines = [
        f"image {image_id}: {values.get('iscc:sum', '?')} ({values.get('iscc:timestamp', '')})"
        for image_id, values in newest
    ]
    return [
        Check(
            "list",
            True,
            f"{len(lines)} most recent ISCC annotation(s)" + "".join("\n    " + line for line in lines),
        )
    ]


def run(cfg: Config, connect: Callable, tests: list[str] | None = None, out=print) -> int:
    tests = tests or list(TESTS[:3])
    checks: list[Check] = []
    for test in tests:
        if test == "connection":
            checks += check_connection(cfg, connect)
        elif test == "processing":
            checks += check_processing(cfg, connect)
        elif test == "service":
            checks += check_service(cfg)
        elif test == "list":
            checks += check_list(cfg, connect)
    for c in checks:
        out(f"{'OK  ' if c.ok else 'FAIL'} {c.name}: {c.detail}")
    return ExitStatus.SUCCESS if all(c.ok for c in checks) else ExitStatus.FAILURE
