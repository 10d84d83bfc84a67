"""The ISCC key-value annotation's layout: what is written on an image, and reading it back.

Keys, in this order: ``iscc:sum``, ``iscc:datahash``, ``iscc:filesize``, ``iscc:data``,
``iscc:instance``, ``iscc:version``, ``iscc:source_file``, ``iscc:files``, ``iscc:timestamp``,
``iscc:processor``, ``iscc:input``, then for a multi-file Fileset one ``iscc:file`` pair per
file: ``<code> <path relative to the fileset directory>``.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from dataclasses import dataclass, field

from . import ANNOTATION_VERSION, __version__

#: ``iscc:input`` values: where the bytes came from.
INPUT_REPOSITORY = "managed-repository"
INPUT_STREAM = "raw-file-store"

#: Older keys written by the earlier seed service, read as their current names.
LEGACY_KEYS = {"iscc:inst": "iscc:instance"}


@dataclass
class FileCode:
    """One file of an image's Fileset, with its own code."""

    path: str
    iscc: str


@dataclass
class IsccRecord:
    """The content of one ISCC annotation."""

    iscc: str
    datahash: str | None = None
    filesize: int | None = None
    data: str | None = None
    instance: str | None = None
    version: str = ANNOTATION_VERSION
    source_file: str | None = None
    file_count: int | None = None
    timestamp: str | None = None
    processor: str | None = None
    input: str | None = None
    files: list[FileCode] = field(default_factory=list)

    @property
    def wide(self) -> bool:
        return self.iscc.startswith("ISCC:K4")


def utc_timestamp(now: _dt.datetime | None = None) -> str:
    """UTC, ISO 8601, seconds, with ``Z``."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return now.astimezone(_dt.timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_pairs(record: IsccRecord) -> list[list[str]]:
    """The key-value pairs of the annotation, in the documented order."""
    pairs = [
        ["iscc:sum", record.iscc],
        ["iscc:datahash", record.datahash or ""],
        ["iscc:filesize", "" if record.filesize is None else str(record.filesize)],
        ["iscc:data", record.data or ""],
        ["iscc:instance", record.instance or ""],
        ["iscc:version", record.version],
        ["iscc:source_file", record.source_file or ""],
        ["iscc:files", str(record.file_count if record.file_count is not None else max(1, len(record.files)))],
        ["iscc:timestamp", record.timestamp or utc_timestamp()],
        ["iscc:processor", record.processor or f"omero-iscc {__version__}"],
        ["iscc:input", record.input or INPUT_REPOSITORY],
    ]
    if len(record.files) > 1:
        pairs += [["iscc:file", f"{f.iscc} {f.path}"] for f in record.files]
    return pairs


def from_pairs(pairs: Iterable[tuple[str, str]]) -> IsccRecord | None:
    """Reads an annotation back; ``None`` if it has no ``iscc:sum``. Unknown keys are ignored
    and the seed service's older keys (``iscc:inst``) are accepted."""
    values: dict[str, str] = {}
    files: list[FileCode] = []
    for given, value in pairs:
        key = LEGACY_KEYS.get(given, given)
        if key == "iscc:file":
            code, _, path = (value or "").partition(" ")
            files.append(FileCode(path=path, iscc=code))
        elif key not in values:
            values[key] = value
    code = values.get("iscc:sum")
    if not code:
        return None

    def as_int(name: str) -> int | None:
        try:
            return int(values[name])
        except (KeyError, ValueError):
            return None

    return IsccRecord(
        iscc=code,
        datahash=values.get("iscc:datahash") or None,
        filesize=as_int("iscc:filesize"),
        data=values.get("iscc:data") or None,
        instance=values.get("iscc:instance") or None,
        version=values.get("iscc:version") or "",
        source_file=values.get("iscc:source_file") or None,
        file_count=as_int("iscc:files"),
        timestamp=values.get("iscc:timestamp") or None,
        processor=values.get("iscc:processor") or None,
        input=values.get("iscc:input") or None,
        files=files,
    )


def newest_record(annotations: Iterable) -> IsccRecord | None:
    """The newest parsable ISCC record among an image's MapAnnotations."""
    for ann in sorted(annotations, key=lambda a: a.getId().val, reverse=True):
        record = from_pairs((nv.name, nv.value) for nv in (ann.getMapValue() or []))
        if record is not None:
            return record
    return None
