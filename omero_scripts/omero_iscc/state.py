"""The scheduler's state file and its one-instance lock, in ``state_dir``.

Failures are kept per image with their error and attempt count; an image is retried with
backoff at most ``MAX_ATTEMPTS`` times, then left alone and listed by ``status``.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass, field

from .errors import InputError

MAX_ATTEMPTS = 3
STATE_FILE = "state.json"
LOCK_FILE = "scheduler.lock"


class LockedError(InputError):
    """Another scheduler holds the lock."""


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


def load(state_dir: str) -> State:
    path = os.path.join(state_dir, STATE_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return State()
    return State(
        failures={int(k): Failure(**v) for k, v in data.get("failures", {}).items()},
        annotated_total=int(data.get("annotated_total", 0)),
        last_poll=data.get("last_poll"),
    )


def save(state_dir: str, state: State) -> None:
    """Writes the state atomically (a crash never leaves half a file)."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    path = os.path.join(state_dir, STATE_FILE)
    tmp = f"{path}.{os.getpid()}.tmp"
    data = {
        "failures": {str(i): vars(f) for i, f in sorted(state.failures.items())},
        "annotated_total": state.annotated_total,
        "last_poll": state.last_poll,
    }
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Lock:
    """An exclusive, non-blocking lock on ``state_dir/scheduler.lock`` (released on exit,
    also when the process dies)."""

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, LOCK_FILE)
        self.fd: int | None = None

    def acquire(self) -> Lock:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(f"another omero-iscc scheduler is running (pid {holder}); lock: {self.path}") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return self

    def free(self) -> bool:
        """Whether nobody holds the lock right now (for ``doctor``)."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
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
