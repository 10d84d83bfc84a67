"""Files written whole or not at all, readable by their owner only, and exclusive locks.

A file is written under a temporary name that no other writer can pick (host name, process id
and random bytes: the directory may be on storage several hosts share), flushed to the disk,
renamed over the old one, and the directory is flushed too, so that a crash leaves the old
file or the new one, never half of one. Locks are ``flock`` locks on a file of their own
(on NFS, Linux turns them into NFS byte-range locks, which every host sees; Lustre needs
its ``flock`` mount option for the same).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import secrets
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

#: Permission bits no one but the owner may have on the backlog's files.
OTHERS = stat.S_IRWXG | stat.S_IRWXO


def write(path: Path | str, data: str | bytes, mode: int = 0o600) -> None:
    """Replaces ``path`` with ``data`` atomically; the new file has ``mode``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    raw = data.encode() if isinstance(data, str) else data
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # the umask may have taken bits the file needs (an executable)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    sync_dir(path.parent)


def sync_dir(directory: Path | str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems cannot sync a directory; the rename stands
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def private_dir(path: Path | str) -> Path:
    """``path`` as a directory only its owner can enter (made, with its parents, if missing)."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & OTHERS:
        path.chmod(0o700)
    return path


def exposed(path: Path | str) -> bool:
    """Whether anyone but the owner may read, write or enter ``path``."""
    return bool(os.stat(path).st_mode & OTHERS)


def holder(path: Path | str) -> str:
    """Who holds (or last held) the lock ``path``, as it wrote itself in."""
    try:
        return Path(path).read_text().strip() or "unknown"
    except OSError:
        return "unknown"


@contextlib.contextmanager
def locked(path: Path | str, what: str, wait: bool = True) -> Iterator[None]:
    """Holds the exclusive lock ``path`` for the block. When another process holds it: waits
    (saying who holds it), or with ``wait=False`` raises :class:`BlockingIOError`."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise
            log.info("waiting for %s, held by %s", path, holder(path))
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{socket.gethostname()} pid {os.getpid()} ({what}) since {time.ctime()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
