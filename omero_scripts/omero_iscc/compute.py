"""Hashing units of images: through the worker over ManagedRepository paths, or, for images
without a Fileset and files the process cannot read there, streamed through the
RawFileStore into ``omero-iscc sum -``. Batching is the caller's."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from .connection import is_connection_error
from .filesets import Unit, resolve_files
from .gateway import Omero
from .layout import INPUT_REPOSITORY, INPUT_STREAM, FileCode, IsccRecord, utc_timestamp
from .statuses import Problem
from .worker import FileResult, GroupResult, Limits, WorkerError, run_groups, sum_streams

log = logging.getLogger(__name__)

#: Worker error kinds after which the file is tried through the RawFileStore: not there, not
#: readable, or a link out of the repository to a place not among the allowed roots (an
#: in-place import): OMERO itself still serves all of them.
STREAMABLE = {"not_found", "permission_denied", "io", "outside_root"}


def repository_mode(root: str | None) -> tuple[str | None, str]:
    """The repository root to read from on this host, or ``None`` when every file must be
    read through OMERO; and why (for logs and ``doctor``)."""
    if not root:
        return None, "no repository root is known: every file is read through OMERO (RawFileStore)"
    if not os.path.isdir(root):
        return None, f"{root} is not mounted on this host: every file is read through OMERO (RawFileStore)"
    if not os.access(root, os.R_OK | os.X_OK):
        return None, f"{root} cannot be read by this user: every file is read through OMERO (RawFileStore)"
    return root, f"files are read from the ManagedRepository at {root}"


#: Units per worker run, as the callers batch them.
BATCH = 200


@dataclass
class UnitResult:
    """What hashing a unit gave: an annotation record, or why not."""

    unit: Unit
    record: IsccRecord | None = None
    files: list[FileResult] = field(default_factory=list)
    problem: Problem | None = None
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.record is not None


def unit_record(unit: Unit, whole: FileResult | GroupResult, files: list[FileResult], via: str) -> IsccRecord:
    """The annotation record of a hashed unit: the whole's code and each file's (``via``: where
    the bytes came from, ``layout.INPUT_*``)."""
    units = whole.units or [None, None]
    return IsccRecord(
        iscc=whole.iscc or "",
        datahash=whole.datahash,
        filesize=whole.filesize,
        data=units[0],
        instance=units[1],
        source_file=unit.source_file,
        file_count=len(unit.files),
        timestamp=utc_timestamp(),
        input=via,
        files=[
            FileCode(path=unit.relative(sf), iscc=fr.iscc or "", datahash=fr.datahash, filesize=fr.filesize)
            for sf, fr in zip(unit.files, files)
        ],
    )


def _stream(
    omero: Omero,
    unit: Unit,
    worker: str,
    wide: bool,
    checksums: Iterable[str],
    chunk_size: int,
    repository_error: str | None = None,
    detach: bool = False,
    limits: Limits | None = None,
) -> UnitResult:
    streams = [omero.read_file(f.id, chunk_size) for f in unit.files]
    try:
        results = sum_streams(worker, streams, wide, checksums, detach=detach, limits=limits)
    except WorkerError as exc:
        if is_connection_error(exc):
            raise
        if repository_error:  # not in the repository, and OMERO cannot serve it either
            message = f"file missing from repository ({repository_error})"
        else:
            message = f"file cannot be read through OMERO: {exc.__cause__ or exc}"
        return UnitResult(unit, problem=Problem.MISSING_FILE, message=message)
    whole = results[-1]
    per_file = results[:-1] if len(results) > 1 else results
    return UnitResult(unit, record=unit_record(unit, whole, per_file, INPUT_STREAM), files=per_file)


def route(units: list[Unit], root: str | None) -> tuple[list[Unit], list[Unit]]:
    """Which units the worker reads in the repository, and which are streamed through OMERO:
    images without a Fileset, and every unit when no repository root is known."""
    in_repository = [u for u in units if u.fileset_id is not None and root is not None]
    streamed = [u for u in units if u.fileset_id is None or root is None]
    return in_repository, streamed


def _hash_in_repository(
    units: list[Unit],
    worker: str,
    root: str,
    wide: bool,
    checksums: list[str],
    out: dict[str, UnitResult],
    detach: bool = False,
    allowed_roots: tuple[str, ...] = (),
    limits: Limits | None = None,
    recorded_sizes: bool = True,
) -> dict[str, str]:
    """One worker run over the units' repository paths (with ``recorded_sizes``, each file
    with the size OMERO recorded, which the worker checks before reading it); returns the
    units to stream instead, with why the repository could not serve them."""
    if not units:
        return {}
    by_key = {u.key: u for u in units}
    try:
        results = list(
            run_groups(
                worker,
                root,
                [(u.key, [(f.repo_path, f.size if recorded_sizes else None) for f in u.files]) for u in units],
                wide=wide,
                checksums=checksums,
                detach=detach,
                allowed_roots=allowed_roots,
                limits=limits,
            )
        )
    except WorkerError as exc:
        for u in units:
            out[u.key] = UnitResult(u, problem=Problem.WORKER, message=str(exc))
        return {}
    to_stream: dict[str, str] = {}
    for result in results:
        unit = by_key.pop(result.id, None)
        if unit is None:
            # A record that names no unit of this run (no id, or one it was not given) fails
            # alone: the unit it stood for is reported below as having no record.
            log.warning("the worker returned a record for no unit of this run (id %r): %s", result.id, result.error)
            continue
        if result.ok:
            out[unit.key] = UnitResult(
                unit, record=unit_record(unit, result, result.files, INPUT_REPOSITORY), files=result.files
            )
        elif result.error_kind in (Problem.BUDGET, Problem.SIZE_MISMATCH):
            out[unit.key] = UnitResult(unit, problem=Problem(result.error_kind), message=result.error)
        elif result.error_kind in STREAMABLE:
            log.info("%s: %s; reading through the RawFileStore", unit.key, result.error)
            to_stream[unit.key] = result.error or result.error_kind or ""
        else:
            out[unit.key] = UnitResult(unit, problem=Problem.UNREADABLE, message=result.error)
    for unit in by_key.values():
        out[unit.key] = UnitResult(unit, problem=Problem.WORKER, message="the worker returned no record for it")
    return to_stream


def compute(
    omero: Omero,
    units: list[Unit],
    worker: str,
    root: str | None,
    wide: bool = False,
    checksums: Iterable[str] = (),
    chunk_size: int = 1 << 20,
    detach: bool = False,
    allowed_roots: tuple[str, ...] = (),
    limits: Limits | None = None,
    recorded_sizes: bool = True,
) -> dict[str, UnitResult]:
    """Hashes every unit (the caller chooses the batch: one worker run serves them all); one
    unit's failure never stops the others. ``limits``: what the worker may take of the host
    (default: low priority, half the cores, no budget). ``recorded_sizes``: a file whose size
    is not the one OMERO recorded is not hashed (the unit's problem is ``size_mismatch``).

    Three jobs, in order: the files of each unit (``filesets.resolve_files``), where each unit
    is read (``route``), and the hashing itself.
    """
    checksums = sorted(set(checksums))
    out = {
        key: UnitResult(unit, problem=Problem.NO_FILES, message=why)
        for key, (unit, why) in resolve_files(omero, units).items()
    }
    root, _why = repository_mode(root)
    in_repository, streamed = route([u for u in units if u.key not in out], root)
    repository_errors = _hash_in_repository(
        in_repository, worker, root or "", wide, checksums, out, detach, allowed_roots, limits, recorded_sizes
    )
    streamed += [u for u in in_repository if u.key in repository_errors]
    for unit in streamed:
        try:
            out[unit.key] = _stream(
                omero, unit, worker, wide, checksums, chunk_size, repository_errors.get(unit.key), detach, limits
            )
        except Exception as exc:  # noqa: BLE001 - an OMERO or I/O error on one unit must not stop the batch
            if is_connection_error(exc):
                raise
            log.warning("%s: %s", unit.key, exc)
            out[unit.key] = UnitResult(unit, problem=Problem.MISSING_FILE, message=str(exc))
    return out
