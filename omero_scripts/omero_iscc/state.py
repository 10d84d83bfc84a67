"""The scheduler's state file, its one-instance lock, and the scripts' one-per-host slot, in
``state_dir``.

Failures are kept per image with their error and attempt count; an image is retried with
backoff at most ``MAX_ATTEMPTS`` times, then left alone and listed by ``status``.

The directory holds files whose contents steer what runs (which images are skipped, who holds
a lock), so it must belong to the account that uses it and be closed to others: an existing
one that is not is refused, never repaired. Files in it are opened without following links,
and the state is replaced through a fresh temporary file (``mkstemp``: created exclusively,
mode 0600), so a link planted under a predictable name is never written through.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Callable

from .errors import InputError

MAX_ATTEMPTS = 3
STATE_FILE = "state.json"
LOCK_FILE = "scheduler.lock"
#: The host-wide slot of the OMERO scripts that run the worker: one at a time.
SCRIPT_LOCK_FILE = "scripts.lock"


class LockedError(InputError):
    """Another scheduler holds the lock (or another script the scripts' slot)."""


class StateDirError(InputError):
    """The state directory cannot be trusted or created."""


@dataclass
class Failure:
    attempts: int
    error: str
    last: float
    next_try: float


@dataclass
class State:
    failures: dict[int, Failure] = field(default_factory=dict)
    annotated_total: int = 0
    last_poll: float | None = None

    def record_failure(self, image_id: int, error: str, now: float, base_delay: float) -> Failure:
        old = self.failures.get(image_id)
        attempts = (old.attempts if old else 0) + 1
        delay = min(base_delay * 2 ** (attempts - 1), 6 * 3600)
        f = Failure(attempts=attempts, error=error, last=now, next_try=now + delay)
        self.failures[image_id] = f
        return f

    def record_success(self, image_id: int) -> None:
        self.failures.pop(image_id, None)
        self.annotated_total += 1

    def excluded(self, now: float) -> list[int]:
        """Images not to try now: given up, or waiting for their next try."""
        return sorted(i for i, f in self.failures.items() if f.attempts >= MAX_ATTEMPTS or f.next_try > now)

    def given_up(self) -> dict[int, Failure]:
        return {i: f for i, f in self.failures.items() if f.attempts >= MAX_ATTEMPTS}


def check_dir(path: str) -> None:
    """Refuses a state directory that another account could tamper with: it must be a
    directory owned by this process's user, writable by nobody else, in a parent that others
    cannot rename it out of (not writable by others, or sticky like ``/tmp``)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise StateDirError(f"state directory {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise StateDirError(f"state directory {path} is not a directory")
    if st.st_uid != os.geteuid():
        raise StateDirError(
            f"state directory {path} belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()}): "
            "give it to the account the scheduler runs as, or set state_dir"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StateDirError(
            f"state directory {path} is writable by others (mode {stat.S_IMODE(st.st_mode):o}): chmod 700 it"
        )
    parent = os.path.dirname(os.path.realpath(path))
    pst = os.stat(parent)
    if pst.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not pst.st_mode & stat.S_ISVTX:
        raise StateDirError(f"state directory {path} lies in {parent}, which others may write: move it")


def ensure_dir(path: str) -> str:
    """Creates the state directory (mode 0700) if it is missing, then :func:`check_dir`."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise StateDirError(f"cannot create the state directory {path}: {exc.strerror or exc}") from exc
    check_dir(path)
    return path


def load(state_dir: str) -> State:
    """The state kept in ``state_dir`` (an empty one if there is none yet)."""
    if not os.path.lexists(state_dir):
        return State()
    check_dir(state_dir)
    path = os.path.join(state_dir, STATE_FILE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return State()
    except OSError as exc:
        raise StateDirError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with open(fd, encoding="utf-8") as f:
        data = json.load(f)
    return State(
        failures={int(k): Failure(**v) for k, v in data.get("failures", {}).items()},
        annotated_total=int(data.get("annotated_total", 0)),
        last_poll=data.get("last_poll"),
    )


def save(state_dir: str, state: State) -> None:
    """Writes the state atomically (a crash never leaves half a file), through a temporary
    file created exclusively beside it."""
    ensure_dir(state_dir)
    data = {
        "failures": {str(i): vars(f) for i, f in sorted(state.failures.items())},
        "annotated_total": state.annotated_total,
        "last_poll": state.last_poll,
    }
    fd, tmp = tempfile.mkstemp(prefix=STATE_FILE + ".", suffix=".tmp", dir=state_dir)
    try:
        with open(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(state_dir, STATE_FILE))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _open_lock(path: str) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 200).decode(errors="replace").strip() or "unknown"


def _claim(fd: int, who: str) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, who.encode(), 0)


class Lock:
    """An exclusive, non-blocking lock on ``state_dir/scheduler.lock`` (released on exit,
    also when the process dies)."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, LOCK_FILE)
        self.fd: int | None = None

    def acquire(self) -> Lock:
        ensure_dir(self.state_dir)
        fd = _open_lock(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise LockedError(f"another omero-iscc scheduler is running (pid {holder}); lock: {self.path}") from None
        _claim(fd, str(os.getpid()))
        self.fd = fd
        return self

    def free(self) -> bool:
        """Whether nobody holds the lock right now (for ``doctor``)."""
        try:
            fd = _open_lock(self.path)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return True
        except BlockingIOError:
            return False
        finally:
            os.close(fd)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> Lock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def script_slot(
    state_dir: str,
    name: str,
    wait: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[float]:
    """``with script_slot(state_dir, "ISCC_Annotate.py", wait) as waited:`` one OMERO script
    that runs the worker per host at a time (any OMERO user may start scripts, in parallel,
    each of which would take every core). Waits up to ``wait`` seconds for the slot, then
    raises ``LockedError`` naming the script that holds it; yields the seconds waited (the
    caller's time budget is that much shorter)."""
    ensure_dir(state_dir)
    path = os.path.join(state_dir, SCRIPT_LOCK_FILE)
    fd = _open_lock(path)
    try:
        start = clock()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                left = start + wait - clock()
                if left <= 0:
                    raise LockedError(
                        f"another omero-iscc script is hashing on this server ({_holder(fd)}); waited "
                        f"{wait:.0f} s for it: run this one again later"
                    ) from None
                sleep(min(1.0, left))
        _claim(fd, f"{name}, pid {os.getpid()}")
        yield clock() - start
    finally:
        os.close(fd)
