"""The ISCC key-value annotation's layout: what is written, and reading it back.

Layout 2.0: one MapAnnotation per Fileset (or per image without one), linked to every image of
the Fileset and to the Fileset. Keys, in this order: ``iscc:sum``, ``iscc:datahash``,
``iscc:filesize``, ``iscc:data``, ``iscc:instance``, ``iscc:version``, ``iscc:source_file``,
``iscc:files``, ``iscc:timestamp``, ``iscc:processor``, ``iscc:input``; then the files' own
codes: for a Fileset of 2 to ``FILES_IN_TABLE`` files one ``iscc:file`` pair per file
(``<code> <path relative to the fileset directory>``); for a larger one the id of a file
annotation (same namespace, JSON Lines ``{"path", "iscc", "datahash", "filesize"}`` per file,
linked to the Fileset) in ``iscc:files_annotation``.

Layout 1.0 (before): one annotation per image, every file's ``iscc:file`` pair in the table;
still read, and replaced by the shared one when an image is annotated again.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from . import ANNOTATION_VERSION, __version__

#: ``iscc:input`` values: where the bytes came from.
INPUT_REPOSITORY = "managed-repository"
INPUT_STREAM = "raw-file-store"

#: Most files listed in the key-value table; a larger Fileset's go into a file annotation.
FILES_IN_TABLE = 16
#: Name of that file annotation.
FILES_ANNOTATION_NAME = "iscc_files.jsonl"

#: Older keys written by the earlier seed service, read as their current names.
LEGACY_KEYS = {"iscc:inst": "iscc:instance"}


@dataclass
class FileCode:
    """One file of an image's Fileset, with its own code."""

    path: str
    iscc: str
    datahash: str | None = None
    filesize: int | None = None


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
    #: Layout 2.0, large Filesets: the id of the file annotation that lists the files' codes.
    files_annotation: int | None = None

    @property
    def wide(self) -> bool:
        return self.iscc.startswith("ISCC:K4")

    @property
    def files_in_table(self) -> bool:
        """Whether the files' own codes are written into the key-value table."""
        return 1 < len(self.files) <= FILES_IN_TABLE


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
    if record.files_in_table:
        pairs += [["iscc:file", f"{f.iscc} {f.path}"] for f in record.files]
    elif record.files_annotation is not None:
        pairs.append(["iscc:files_annotation", str(record.files_annotation)])
    return pairs


def files_jsonl(record: IsccRecord) -> bytes:
    """The files' own codes as the file annotation of a large Fileset holds them."""
    lines = [
        json.dumps({"path": f.path, "iscc": f.iscc, "datahash": f.datahash, "filesize": f.filesize}, ensure_ascii=False)
        for f in record.files
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


def parse_files_jsonl(data: bytes) -> list[FileCode]:
    """Reads the file annotation back; lines that are not records are skipped."""
    files = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            item = json.loads(line)
            files.append(
                FileCode(
                    path=item["path"], iscc=item["iscc"], datahash=item.get("datahash"), filesize=item.get("filesize")
                )
            )
        except (ValueError, KeyError, TypeError):
            continue
    return files


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
        files_annotation=as_int("iscc:files_annotation"),
    )


def newest_record(annotations: Iterable) -> IsccRecord | None:
    """The newest parsable ISCC record among an image's MapAnnotations."""
    for ann in sorted(annotations, key=lambda a: a.getId().val, reverse=True):
        record = from_pairs((nv.name, nv.value) for nv in (ann.getMapValue() or []))
        if record is not None:
            return record
    return None
