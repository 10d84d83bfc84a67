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

The pixel code (namespace ``org.iscc.omero.pixels``, one MapAnnotation per image): keys
``iscc:pixels``, ``iscc:data``, ``iscc:instance``, ``iscc:datahash``, ``iscc:walk``,
``iscc:dimensions`` (``XxYxZxCxT``), ``iscc:pixel_type``, ``iscc:planes``, ``iscc:version``,
``iscc:timestamp``, ``iscc:processor``; with simprints, ``iscc:simprints_annotation``: the id of
a JSON file annotation (same namespace, on the image) in iscc-bio's ``IsccEntry`` shape.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Callable

from . import ANNOTATION_VERSION, NAMESPACE, PIXELS_NAMESPACE, __version__

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


# -- the pixel code ---------------------------------------------------------------------------

#: The walk the pixel code follows: the IMAGEWALK draft of this date (bio-codes/iscc-bio).
WALK = "IMAGEWALK draft 2025-10-03"
#: Name of the simprints file annotation.
SIMPRINTS_ANNOTATION_NAME = "iscc_simprints.json"


@dataclass
class PixelRecord:
    """The content of one pixel-code annotation."""

    iscc: str
    data: str | None = None
    instance: str | None = None
    datahash: str | None = None
    walk: str = WALK
    dimensions: str = ""
    pixel_type: str = ""
    planes: int | None = None
    version: str = ANNOTATION_VERSION
    timestamp: str | None = None
    processor: str | None = None
    #: Per-plane simprints as the worker gives them (``{"simprint", "offset", "size"}``), to
    #: be written as the file annotation; not read back from the table.
    simprints: list[dict] | None = None
    simprints_annotation: int | None = None


def pixel_pairs(record: PixelRecord) -> list[list[str]]:
    """The key-value pairs of a pixel annotation, in the documented order."""
    pairs = [
        ["iscc:pixels", record.iscc],
        ["iscc:data", record.data or ""],
        ["iscc:instance", record.instance or ""],
        ["iscc:datahash", record.datahash or ""],
        ["iscc:walk", record.walk],
        ["iscc:dimensions", record.dimensions],
        ["iscc:pixel_type", record.pixel_type],
        ["iscc:planes", "" if record.planes is None else str(record.planes)],
        ["iscc:version", record.version],
        ["iscc:timestamp", record.timestamp or utc_timestamp()],
        ["iscc:processor", record.processor or f"omero-iscc {__version__}"],
    ]
    if record.simprints_annotation is not None:
        pairs.append(["iscc:simprints_annotation", str(record.simprints_annotation)])
    return pairs


def pixel_record_from_pairs(pairs: Iterable[tuple[str, str]]) -> PixelRecord | None:
    """Reads a pixel annotation back; ``None`` without ``iscc:pixels``."""
    values: dict[str, str] = {}
    for key, value in pairs:
        values.setdefault(key, value)
    if not values.get("iscc:pixels"):
        return None
    planes = values.get("iscc:planes", "")
    annotation = values.get("iscc:simprints_annotation", "")
    return PixelRecord(
        iscc=values["iscc:pixels"],
        data=values.get("iscc:data") or None,
        instance=values.get("iscc:instance") or None,
        datahash=values.get("iscc:datahash") or None,
        walk=values.get("iscc:walk") or "",
        dimensions=values.get("iscc:dimensions") or "",
        pixel_type=values.get("iscc:pixel_type") or "",
        planes=int(planes) if planes.isdigit() else None,
        version=values.get("iscc:version") or "",
        timestamp=values.get("iscc:timestamp") or None,
        processor=values.get("iscc:processor") or None,
        simprints_annotation=int(annotation) if annotation.isdigit() else None,
    )


def newest_pixel_record(annotations: Iterable) -> PixelRecord | None:
    """The newest parsable pixel record among an image's MapAnnotations."""
    for ann in sorted(annotations, key=lambda a: a.getId().val, reverse=True):
        record = pixel_record_from_pairs((nv.name, nv.value) for nv in (ann.getMapValue() or []))
        if record is not None:
            return record
    return None


def simprints_json(record: PixelRecord) -> bytes:
    """The simprints file annotation: iscc-bio's ``IsccEntry`` shape for the image."""
    entry = {
        "iscc_code": record.iscc,
        "units": [record.data, record.instance],
        "walk": record.walk,
        "simprints": {"DATA_NONE_V0": record.simprints or []},
    }
    return (json.dumps(entry, indent=1) + "\n").encode("utf-8")


# -- what differs between the two annotations, for the code that saves and replaces them -------


@dataclass(frozen=True)
class Attachment:
    """A file annotation that goes with a MapAnnotation, uploaded before it; ``saved(id)``
    records the new file annotation's id on the record (for the key-value table)."""

    kind: str
    obj_id: int
    name: str
    data: bytes
    mimetype: str
    saved: Callable[[int], None]


@dataclass(frozen=True)
class Layout:
    """One kind of code annotation: its namespace, its key-value pairs, the file annotation
    that goes with it, and (for replacing an old one) the file annotations an old one names."""

    code: str
    namespace: str
    pairs_of: Callable
    attachment_of: Callable
    attached_ids: Callable

    def in_namespace(self, namespace: str) -> Layout:
        return replace(self, namespace=namespace)


def _files_attachment(images: list, fileset_id: int | None, record: IsccRecord) -> Attachment | None:
    if len(record.files) <= FILES_IN_TABLE or fileset_id is None:
        return None

    def saved(ann_id: int) -> None:
        record.files_annotation = ann_id

    return Attachment("Fileset", fileset_id, FILES_ANNOTATION_NAME, files_jsonl(record), "application/jsonl", saved)


def _files_attached(annotation) -> list[int]:
    record = newest_record([annotation])
    return [record.files_annotation] if record is not None and record.files_annotation is not None else []


def _simprints_attachment(images: list, fileset_id: int | None, record: PixelRecord) -> Attachment | None:
    if record.simprints is None:
        return None

    def saved(ann_id: int) -> None:
        record.simprints_annotation = ann_id

    image_id = images[0].getId().val
    data = simprints_json(record)
    return Attachment("Image", image_id, SIMPRINTS_ANNOTATION_NAME, data, "application/json", saved)


def _simprints_attached(annotation) -> list[int]:
    record = newest_pixel_record([annotation])
    return [record.simprints_annotation] if record is not None and record.simprints_annotation is not None else []


FILES = Layout("files", NAMESPACE, to_pairs, _files_attachment, _files_attached)
PIXELS = Layout("pixels", PIXELS_NAMESPACE, pixel_pairs, _simprints_attachment, _simprints_attached)
