"""Finding and running the ``omero-iscc`` worker binary.

The worker is always run without a shell, over paths computed on the server side from
Fileset entries, confined with ``--root``; its JSON Lines output is parsed as it streams.
Each run takes what :class:`Limits` allows of the host: by default a low CPU and I/O priority
and half its cores.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Callable, Union

from .errors import InputError

WORKER_NAME = "omero-iscc"

#: The worker's exit status when its time budget ran out: every record was written, and the
#: files it did not hash have the error kind ``budget`` (hash them in a later run).
EXIT_OUT_OF_TIME = 4

#: A file of a group: its repository-relative path, or the path and the size OMERO recorded
#: (``None`` when unknown), which the worker checks before it reads the file.
GroupFile = Union[str, tuple[str, Union[int, None]]]


def default_threads() -> int:
    """Threads of a worker run when the caller names none: half the cores (at least one), so
    that hashing beside a production server leaves it the other half."""
    return max(1, (os.cpu_count() or 2) // 2)


@dataclass(frozen=True)
class Limits:
    """What a worker run may take of the host.

    ``priority``: ``"low"`` (nice 10, best-effort I/O at its lowest level) or ``"normal"``.
    ``threads``: worker threads, ``None`` for :func:`default_threads`. ``time_budget``: seconds
    after which the run stops hashing (files not hashed get ``budget`` records and the worker
    exits with :data:`EXIT_OUT_OF_TIME`). ``max_file_size``: bytes above which a file is not
    read (a ``too_large`` record). The last two apply to ``sum`` over repository paths only.
    """

    priority: str = "low"
    threads: int | None = None
    time_budget: float | None = None
    max_file_size: int | None = None

    def args(self, budgets: bool = True) -> list[str]:
        """The worker's arguments for these limits (``budgets``: with the time budget and size
        ceiling, for ``sum`` over paths)."""
        out = ["--priority", self.priority, "--threads", str(self.threads or default_threads())]
        if budgets and self.time_budget is not None:
            out += ["--time-budget", repr(float(self.time_budget))]
        if budgets and self.max_file_size is not None:
            out += ["--max-file-size", str(int(self.max_file_size))]
        return out


class WorkerError(RuntimeError):
    """The worker could not be run, or broke its output contract."""


class WorkerMissing(WorkerError, InputError):
    """No usable worker binary where the configuration and the installer put it."""


def find_worker(configured: str | None = None) -> str:
    """The worker's path: the configured one, else next to ``sys.executable`` (where the
    installer puts it), else on ``PATH``. OMERO's processor gives scripts a whitelisted
    environment, so no custom variable is consulted here."""
    candidates = []
    if configured:
        candidates.append(configured)
    candidates.append(os.path.join(os.path.dirname(sys.executable), WORKER_NAME))
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    if configured:
        raise WorkerMissing(f"the configured worker {configured!r} is not an executable file")
    found = shutil.which(WORKER_NAME)
    if found:
        return found
    raise WorkerMissing(
        f"{WORKER_NAME} not found next to {sys.executable} or on PATH; run install.sh "
        "or set the worker path in the configuration"
    )


@dataclass
class Result:
    """What a worker record says: the codes, or an error."""

    iscc: str | None = None
    datahash: str | None = None
    filesize: int | None = None
    units: list[str] = field(default_factory=list)
    error_kind: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_kind is None

    @staticmethod
    def fields_of(record: dict) -> dict:
        """The fields every record has, as keyword arguments."""
        err = record.get("error") or {}
        return {
            "iscc": record.get("iscc"),
            "datahash": record.get("datahash"),
            "filesize": record.get("filesize"),
            "units": list(record.get("units") or []),
            "error_kind": err.get("kind"),
            "error": err.get("message"),
        }


@dataclass
class FileResult(Result):
    """One file's record from the worker."""

    path: str = ""
    checksums: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_record(cls, record: dict) -> FileResult:
        return cls(
            path=record.get("path", ""), checksums=dict(record.get("checksums") or {}), **Result.fields_of(record)
        )


@dataclass
class GroupResult(Result):
    """A group's record: the code over its files in order, and each file's record."""

    id: str = ""
    files: list[FileResult] = field(default_factory=list)

    @classmethod
    def from_record(cls, record: dict) -> GroupResult:
        return cls(
            id=str(record.get("id")),
            files=[FileResult.from_record(f) for f in record.get("files") or []],
            **Result.fields_of(record),
        )


def _base_args(worker: str, wide: bool, checksums: Iterable[str]) -> list[str]:
    args = [worker, "sum", "--json", "--units", "--progress", "never"]
    if wide:
        args.append("--wide")
    for name in sorted(set(checksums)):
        args += ["--checksum", name]
    return args


#: The worker processes this process started (a script stops those still running when it is
#: cancelled: :func:`stop_workers`).
_STARTED: weakref.WeakSet = weakref.WeakSet()


def _popen(args: list[str], detach: bool) -> subprocess.Popen:
    """Starts the worker. ``detach``: in a session of its own, for the scheduler's daemon, so
    that a SIGTERM meant for the scheduler lets the hashing in hand finish. Scripts never
    detach; OMERO's Processor cancels a script with a SIGTERM to the script's pid alone
    (``ProcessI._term``), which the script forwards to its workers (:func:`stop_workers`)."""
    proc = subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=detach
    )
    _STARTED.add(proc)
    return proc


def stop_workers(grace: float = 5.0) -> int:
    """Terminates the workers this process started that still run, and waits up to ``grace``
    seconds for each (then kills it), so that none outlives a cancelled script; returns how
    many were running."""
    running = [p for p in list(_STARTED) if p.poll() is None]
    for proc in running:
        with contextlib.suppress(ProcessLookupError):  # ended meanwhile
            proc.terminate()
    for proc in running:
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return len(running)


def run_command(
    args: list[str], input: bytes | None = None, timeout: float | None = None
) -> subprocess.CompletedProcess:
    """Runs a short worker command (``index stats``, ``--version``, ``selftest``...) to its end:
    its exit status and its output, as bytes."""
    return subprocess.run(args, input=input, capture_output=True, timeout=timeout, check=False)


class Streamed:
    """A worker command whose standard input is written from a thread while its output is
    read (so that neither pipe fills up and stalls the other), its standard error collected.

        run = Streamed([worker, "similar", "--json", "-"], lines)
        for raw in run: ...
        status = run.finish()   # then run.stderr, and run.failure: what writing the input raised

    ``lines``: ``None`` for a command that reads no input.
    """

    def __init__(self, args: list[str], lines: Iterable[bytes] | None = None) -> None:
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL if lines is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.failure: BaseException | None = None
        self._errors: list[bytes] = []
        self._threads = [threading.Thread(target=self._drain, daemon=True)]
        if lines is not None:
            self._threads.append(threading.Thread(target=self._write, args=(lines,), daemon=True))
        for thread in self._threads:
            thread.start()

    def _write(self, lines: Iterable[bytes]) -> None:
        try:
            for line in lines:
                self.proc.stdin.write(line)  # type: ignore[union-attr]
        except BaseException as exc:  # noqa: BLE001 - the caller's to judge, in its own thread
            self.failure = exc
        finally:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()  # type: ignore[union-attr]

    def _drain(self) -> None:
        self._errors.append(self.proc.stderr.read())  # type: ignore[union-attr]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.proc.stdout)  # type: ignore[arg-type]

    def read(self) -> bytes:
        return self.proc.stdout.read()  # type: ignore[union-attr]

    def finish(self) -> int:
        """Waits for the command (what it has not written yet is not read) and returns its exit
        status."""
        self.proc.stdout.close()  # type: ignore[union-attr]
        self.proc.wait()
        for thread in self._threads:
            thread.join()
        return self.proc.returncode

    @property
    def stderr(self) -> bytes:
        return b"".join(self._errors)


def _feed(stream: IO[bytes], lines: list[bytes]) -> None:
    try:
        for line in lines:
            stream.write(line)
        stream.close()
    except BrokenPipeError:
        pass


def _group_file(f: GroupFile) -> str | dict:
    """A file of a ``--groups`` line: its path, with the recorded size when known."""
    if isinstance(f, str):
        return f
    path, size = f
    if size is None or size < 0:
        return path
    return {"path": path, "size": int(size)}


def run_groups(
    worker: str,
    root: str,
    groups: Sequence[tuple[str, Sequence[GroupFile]]],
    wide: bool = False,
    checksums: Iterable[str] = (),
    threads: int | None = None,
    detach: bool = False,
    allowed_roots: Iterable[str] = (),
    limits: Limits | None = None,
) -> Iterator[GroupResult]:
    """Hashes groups of repository-relative paths; yields one result per group, in order.

    A file given with its recorded size is not hashed when its size differs (a
    ``size_mismatch`` record). ``allowed_roots``: directories outside the repository that its
    entries may link to (the instrument shares of in-place imports). ``threads`` overrides
    ``limits.threads``. ``detach``: see :func:`_popen`."""
    if not groups:
        return
    limits = limits or Limits()
    if threads:
        limits = Limits(limits.priority, threads, limits.time_budget, limits.max_file_size)
    args = _base_args(worker, wide, checksums) + ["--root", root, "--groups", "-"] + limits.args()
    for allowed in allowed_roots:
        args += ["--allow-root", allowed]
    lines = [
        (json.dumps({"id": gid, "files": [_group_file(f) for f in files]}) + "\n").encode() for gid, files in groups
    ]
    proc = _popen(args, detach)
    feeder = threading.Thread(target=_feed, args=(proc.stdin, lines), daemon=True)
    feeder.start()
    count = 0
    assert proc.stdout is not None
    for raw in proc.stdout:
        try:
            record = json.loads(raw)
        except ValueError as exc:
            proc.kill()
            raise WorkerError(f"worker wrote a line that is not JSON: {raw[:200]!r}") from exc
        count += 1
        yield GroupResult.from_record(record)
    feeder.join()
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    status = proc.wait()
    if status not in (0, 1, EXIT_OUT_OF_TIME) or count != len(groups):
        raise WorkerError(f"worker exited with status {status} after {count} of {len(groups)} groups: {stderr.strip()}")


def sum_stream(worker: str, chunks: Iterable[bytes], wide: bool = False, checksums: Iterable[str] = ()) -> FileResult:
    """Hashes a byte stream (a file read through OMERO's RawFileStore) with ``sum -``."""
    return sum_streams(worker, [chunks], wide, checksums)[0]


def sum_streams(
    worker: str,
    streams: list[Iterable[bytes]],
    wide: bool = False,
    checksums: Iterable[str] = (),
    detach: bool = False,
    limits: Limits | None = None,
) -> list[FileResult]:
    """Hashes several streams read one after the other. Returns one result per stream and,
    when there are several, a last one for their concatenation; every byte is read once.
    ``limits``: priority and threads (the time budget and size ceiling are for paths)."""
    args = _base_args(worker, wide, checksums) + (limits or Limits()).args(budgets=False) + ["-"]
    procs = [_popen(args, detach) for _ in range(len(streams) + (1 if len(streams) > 1 else 0))]
    whole = procs[-1] if len(streams) > 1 else None
    readers = []
    outputs: list[bytes] = [b""] * len(procs)

    def collect(i: int, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        outputs[i] = proc.stdout.read()

    for i, proc in enumerate(procs):
        t = threading.Thread(target=collect, args=(i, proc), daemon=True)
        t.start()
        readers.append(t)
    failure: BaseException | None = None
    try:
        for i, chunks in enumerate(streams):
            for chunk in chunks:
                procs[i].stdin.write(chunk)  # type: ignore[union-attr]
                if whole is not None:
                    whole.stdin.write(chunk)  # type: ignore[union-attr]
            procs[i].stdin.close()  # type: ignore[union-attr]
    except Exception as exc:  # noqa: BLE001 - any failure of the source (I/O, OMERO) means no code
        # The chunks come from OMERO or a file: whatever broke, the partial streams must
        # not yield codes, so every worker is killed below.
        failure = exc
    finally:
        for proc in procs:
            if failure is not None:
                proc.kill()
            elif proc.stdin and not proc.stdin.closed:
                proc.stdin.close()
        for t in readers:
            t.join()
        for proc in procs:
            proc.wait()
    if failure is not None:
        raise WorkerError(f"reading the stream failed: {failure}") from failure
    results = []
    for proc, out in zip(procs, outputs):
        if proc.returncode != 0 or not out.strip():
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise WorkerError(f"worker failed on a stream (status {proc.returncode}): {err.strip()}")
        results.append(FileResult.from_record(json.loads(out.splitlines()[0])))
    return results


def selftest(worker: str) -> tuple[bool, str]:
    """Runs ``omero-iscc selftest``; returns whether it passed and its last line."""
    proc = run_command([worker, "selftest"], timeout=120)
    lines = proc.stdout.decode(errors="replace").strip().splitlines()
    return proc.returncode == 0, lines[-1] if lines else proc.stderr.decode(errors="replace").strip()


@dataclass
class PixelJob:
    """One image for ``pixels``: its id, its plane count and size, and its canonical bytes in
    walk order, in pieces of any size (read lazily: ``pieces`` may raise, which gives the
    image an error and the next images their codes)."""

    id: str
    planes: int
    plane_bytes: int
    pieces: Iterable[bytes]


@dataclass
class PixelResult:
    """One image's record from ``pixels``."""

    id: str
    iscc: str | None = None
    datahash: str | None = None
    size: int | None = None
    planes: int = 0
    units: list[str] = field(default_factory=list)
    simprints: list[dict] | None = None
    error_kind: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_kind is None and self.iscc is not None

    @classmethod
    def from_record(cls, record: dict) -> PixelResult:
        err = record.get("error") or {}
        return cls(
            id=str(record.get("image")),
            iscc=record.get("iscc"),
            datahash=record.get("datahash"),
            size=record.get("size"),
            planes=int(record.get("planes") or 0),
            units=list(record.get("units") or []),
            simprints=record.get("simprints"),
            error_kind=err.get("kind"),
            error=err.get("message"),
        )


def _describe(exc: BaseException) -> str:
    """An exception in one line: an OMERO (Ice) exception by its class and message, whose
    ``str`` would be its whole multi-line structure."""
    message = getattr(exc, "message", None)
    if isinstance(message, str) and message:
        return f"{type(exc).__name__}: {message}"
    return str(exc) or type(exc).__name__


#: Pieces read ahead of the worker: reading the next plane overlaps hashing the last, and
#: memory stays a few pieces whatever the image.
READ_AHEAD = 4


def _frames_ahead(
    jobs: Iterable[PixelJob], out: queue.Queue, fatal: Callable[[BaseException], bool], stop: threading.Event
) -> None:
    """The reader thread: each job's frames into ``out``, ``None`` at the end; returns early
    once ``stop`` is set."""
    try:
        for job in jobs:
            if stop.is_set():
                return
            out.put(("begin", job, None))
            try:
                for piece in job.pieces:
                    if stop.is_set():
                        return
                    if piece:
                        out.put(("data", job, piece))
            except Exception as exc:  # noqa: BLE001 - this image's failure, unless fatal
                if fatal(exc):
                    out.put(("fatal", job, exc))
                    return
                out.put(("abort", job, _describe(exc)))
                continue
            out.put(("end", job, None))
    except Exception as exc:  # noqa: BLE001 - the job list itself failed: stop, and say why
        out.put(("fatal", None, exc))
        return
    out.put(None)


def run_pixels(
    worker: str,
    jobs: Iterable[PixelJob],
    simprints: bool = False,
    detach: bool = False,
    fatal: Callable[[BaseException], bool] = lambda exc: False,
    limits: Limits | None = None,
) -> dict[str, PixelResult]:
    """Pixel codes of a batch of images through one ``omero-iscc pixels`` process. Returns
    a result per job id; an image whose reading failed has the error. An exception for which
    ``fatal`` is true (a lost connection) stops the batch and is raised. ``limits``: priority
    and threads (the time budget and size ceiling are for ``sum``)."""
    limits = limits or Limits()
    args = [worker, "pixels"] + (["--simprints"] if simprints else []) + limits.args(budgets=False)
    proc = _popen(args, detach)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    records: list[bytes] = []
    errors: list[bytes] = []
    readers = [
        threading.Thread(target=lambda: records.extend(proc.stdout), daemon=True),  # type: ignore[arg-type]
        threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True),  # type: ignore[union-attr]
    ]
    for t in readers:
        t.start()
    ahead: queue.Queue = queue.Queue(maxsize=READ_AHEAD)
    stop = threading.Event()
    producer = threading.Thread(target=_frames_ahead, args=(jobs, ahead, fatal, stop), daemon=True)
    producer.start()
    seen: list[str] = []
    aborted: dict[str, str] = {}
    failure: BaseException | None = None
    try:
        while True:
            item = ahead.get()
            if item is None:
                break
            kind, job, payload = item
            if kind == "fatal":
                failure = payload
                break
            if kind == "begin":
                seen.append(job.id)
                header = {"image": job.id, "planes": job.planes, "plane_bytes": job.plane_bytes}
                proc.stdin.write((json.dumps(header) + "\n").encode())
            elif kind == "data":
                proc.stdin.write(b'{"bytes": %d}\n' % len(payload))
                proc.stdin.write(payload)
            elif kind == "end":
                proc.stdin.write(b'{"end": true}\n')
            else:
                aborted[job.id] = payload
                proc.stdin.write((json.dumps({"abort": payload}) + "\n").encode())
        proc.stdin.close()
    except BrokenPipeError:
        pass  # the worker died: judged by its status and records below
    finally:
        stop.set()
        if failure is not None:
            proc.kill()
        while producer.is_alive():  # unblock the reader thread's put so that it sees the stop
            with contextlib.suppress(queue.Empty):
                ahead.get(timeout=0.1)
        if not proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
        status = proc.wait()
        for t in readers:
            t.join()
    if failure is not None:
        raise failure
    results: dict[str, PixelResult] = {}
    for raw in records:
        try:
            result = PixelResult.from_record(json.loads(raw))
        except ValueError as exc:
            raise WorkerError(f"worker wrote a line that is not JSON: {raw[:200]!r}") from exc
        if result.id in aborted:
            result.error = aborted[result.id]  # ours, without the worker's wrapping
        results[result.id] = result
    stderr = b"".join(errors).decode(errors="replace").strip()
    missing = [i for i in seen if i not in results]
    if status not in (0, 1) or missing:
        raise WorkerError(
            f"pixels worker exited with status {status}, {len(missing)} image(s) without a record: {stderr}"
        )
    return results
