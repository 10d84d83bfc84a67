"""Hashing units of images: through the worker over ManagedRepository paths, or, for images
without a Fileset and files the process cannot read there, streamed through the
RawFileStore into ``omero-iscc sum -``."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from .annotation import INPUT_REPOSITORY, INPUT_STREAM, FileCode, IsccRecord, utc_timestamp
from .connection import is_connection_error
from .filesets import Unit, source_file
from .gateway import Omero
from .worker import FileResult, GroupResult, WorkerError, run_groups, sum_streams

log = logging.getLogger(__name__)

#: Worker error kinds after which the file is tried through the RawFileStore.
STREAMABLE = {"not_found", "permission_denied", "io"}
#: Groups per worker run.
BATCH = 200


@dataclass
class UnitResult:
    """What hashing a unit gave: an annotation record, or why not."""

    unit: Unit
    record: IsccRecord | None = None
    files: list[FileResult] = field(default_factory=list)
    problem: str | None = None  # "missing_file", "unreadable", "no_files", "worker"
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.record is not None


def _record(unit: Unit, whole: FileResult | GroupResult, files: list[FileResult], via: str) -> IsccRecord:
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
        files=[FileCode(path=unit.relative(sf), iscc=fr.iscc or "") for sf, fr in zip(unit.files, files)],
    )


def _stream(
    omero: Omero,
    unit: Unit,
    worker: str,
    wide: bool,
    checksums: Iterable[str],
    chunk_size: int,
    repository_error: str | None = None,
) -> UnitResult:
    streams = [omero.read_file(f.id, chunk_size) for f in unit.files]
    try:
        results = sum_streams(worker, streams, wide, checksums)
    except WorkerError as exc:
        if is_connection_error(exc):
            raise
        if repository_error:  # not in the repository, and OMERO cannot serve it either
            message = f"file missing from repository ({repository_error})"
        else:
            message = f"file cannot be read through OMERO: {exc.__cause__ or exc}"
        return UnitResult(unit, problem="missing_file", message=message)
    whole = results[-1]
    per_file = results[:-1] if len(results) > 1 else results
    return UnitResult(unit, record=_record(unit, whole, per_file, INPUT_STREAM), files=per_file)


def compute(
    omero: Omero,
    units: list[Unit],
    worker: str,
    root: str | None,
    wide: bool = False,
    checksums: Iterable[str] = (),
    chunk_size: int = 1 << 20,
) -> dict[str, UnitResult]:
    """Hashes every unit; one unit's failure never stops the others."""
    checksums = sorted(set(checksums))
    out: dict[str, UnitResult] = {}
    for unit in units:
        if unit.fileset_id is None:
            unit.files = [source_file(f) for f in omero.legacy_files(unit.images[0].getId().val)]
            if not unit.files:
                out[unit.key] = UnitResult(
                    unit, problem="no_files", message="no original files are stored for this image"
                )
    repo_units = [u for u in units if u.fileset_id is not None and u.files]
    for u in units:
        if u.fileset_id is not None and not u.files:
            out[u.key] = UnitResult(u, problem="no_files", message="the fileset has no files")
    stream_units = [u for u in units if u.fileset_id is None and u.files]
    if root is None:
        stream_units += repo_units
        repo_units = []
    repository_errors: dict[str, str] = {}
    for start in range(0, len(repo_units), BATCH):
        batch = repo_units[start : start + BATCH]
        by_key = {u.key: u for u in batch}
        try:
            results = list(
                run_groups(
                    worker,
                    root,
                    [(u.key, [f.repo_path for f in u.files]) for u in batch],
                    wide=wide,
                    checksums=checksums,
                )
            )
        except WorkerError as exc:
            for u in batch:
                out[u.key] = UnitResult(u, problem="worker", message=str(exc))
            continue
        for result in results:
            unit = by_key[result.id]
            if result.ok:
                out[unit.key] = UnitResult(
                    unit, record=_record(unit, result, result.files, INPUT_REPOSITORY), files=result.files
                )
            elif result.error_kind in STREAMABLE:
                log.info("%s: %s; reading through the RawFileStore", unit.key, result.error)
                repository_errors[unit.key] = result.error or result.error_kind or ""
                stream_units.append(unit)
            else:
                out[unit.key] = UnitResult(unit, problem="unreadable", message=result.error)
    for unit in stream_units:
        try:
            out[unit.key] = _stream(omero, unit, worker, wide, checksums, chunk_size, repository_errors.get(unit.key))
        except Exception as exc:  # noqa: BLE001 - an OMERO or I/O error on one unit must not stop the batch
            if is_connection_error(exc):
                raise
            log.warning("%s: %s", unit.key, exc)
            out[unit.key] = UnitResult(unit, problem="missing_file", message=str(exc))
    return out
