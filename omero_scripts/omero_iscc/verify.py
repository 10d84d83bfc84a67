"""Verifying images against what was stored: their ISCC annotation and OMERO's own import
checksum of every file (``OriginalFile.hash``), both recomputed in one read of each file; and,
where an image has one, its pixel code, recomputed from the planes the server decodes now."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from . import spreadsheet
from .compute import BATCH, compute
from .config import WorkerLimits, worker_limits
from .connection import is_connection_error
from .filesets import plan
from .gateway import Omero
from .layout import PIXELS, newest_pixel_record, newest_record, parse_files_jsonl
from .pixels import compute_pixels, pixels_infos
from .statuses import Verdict

OK, CHANGED, MISSING_FILE, NO_ANNOTATION = Verdict.OK, Verdict.CHANGED, Verdict.MISSING_FILE, Verdict.NO_ANNOTATION
STATUSES = list(Verdict)

#: OMERO hashers the worker can recompute.
SUPPORTED_HASHERS = {"SHA1-160", "MD5-128", "CRC-32", "Adler-32", "File-Size-64"}

CSV_COLUMNS = [
    "image_id",
    "image_name",
    "fileset_id",
    "status",
    "detail",
    "stored_iscc",
    "computed_iscc",
    "stored_datahash",
    "computed_datahash",
    "files",
    "checksums_checked",
    "checksum_mismatches",
    "stored_pixels",
    "computed_pixels",
]


@dataclass
class ImageVerdict:
    image_id: int
    image_name: str
    fileset_id: int | None
    status: Verdict
    detail: str = ""
    stored_iscc: str = ""
    computed_iscc: str = ""
    stored_datahash: str = ""
    computed_datahash: str = ""
    files: int = 0
    checksums_checked: int = 0
    checksum_mismatches: list[str] = field(default_factory=list)
    stored_pixels: str = ""
    computed_pixels: str = ""


def verify(
    omero: Omero,
    image_ids: list[int],
    worker: str,
    root: str | None,
    namespace: str,
    chunk_size: int = 1 << 20,
    allowed_roots: tuple[str, ...] = (),
    pixels_namespace: str = PIXELS.namespace,
    limits: WorkerLimits | None = None,
) -> list[ImageVerdict]:
    images = omero.images(image_ids)
    found = {im.getId().val for im in images}
    verdicts = [
        ImageVerdict(i, "", None, MISSING_FILE, "image not found or not visible") for i in image_ids if i not in found
    ]
    stored = {i: newest_record(anns) for i, anns in omero.iscc_annotations(sorted(found), namespace).items()}
    _load_file_lists(omero, [r for r in stored.values() if r is not None])
    # Compute each unit at the width its stored code has (narrow when there is none).
    for wide in (False, True):
        chosen = [
            im for im in images if (stored.get(im.getId().val) is not None and stored[im.getId().val].wide) == wide
        ]
        units = plan(omero, chosen)
        hashers = {f.hasher for u in units for f in u.files if f.hasher in SUPPORTED_HASHERS}
        for start in range(0, len(units), BATCH):
            batch = units[start : start + BATCH]
            results = compute(
                omero,
                batch,
                worker,
                root,
                wide=wide,
                checksums=hashers,
                chunk_size=chunk_size,
                allowed_roots=allowed_roots,
                # Every file is read, whatever its recorded size: a changed one is CHANGED,
                # and named.
                recorded_sizes=False,
                **worker_limits(limits),
            )
            for unit in batch:
                result = results[unit.key]
                for image in unit.images:
                    verdicts.append(_judge(image, unit, result, stored.get(image.getId().val)))
    _verify_pixels(omero, verdicts, sorted(found), worker, pixels_namespace, limits)
    order = {i: n for n, i in enumerate(image_ids)}
    verdicts.sort(key=lambda v: order.get(v.image_id, len(order)))
    return verdicts


def _verify_pixels(
    omero: Omero,
    verdicts: list[ImageVerdict],
    found: list[int],
    worker: str,
    namespace: str,
    limits: WorkerLimits | None = None,
) -> None:
    """Recomputes the pixel code of every image that has one stored and folds the comparison
    into its verdict: a different code is CHANGED (the pixels, or how the server decodes
    them, changed); planes that cannot be read now are MISSING_FILE."""
    stored = {i: newest_pixel_record(anns) for i, anns in omero.iscc_annotations(found, namespace).items()}
    stored = {i: r for i, r in stored.items() if r is not None}
    if not stored:
        return
    infos = pixels_infos(omero, sorted(stored))
    results = compute_pixels(omero, [infos[i] for i in sorted(stored) if i in infos], worker, limits=limits)
    for v in verdicts:
        record = stored.get(v.image_id)
        if record is None:
            continue
        v.stored_pixels = record.iscc
        result = results.get(v.image_id)
        if result is None or not result.ok:
            why = result.error if result is not None else "the image has no pixels"
            problem, status = f"pixels could not be read: {why}", MISSING_FILE
        else:
            v.computed_pixels = result.iscc or ""
            if v.computed_pixels == record.iscc:
                continue
            problem, status = "pixel code differs", CHANGED
        v.detail = "; ".join(d for d in (v.detail, problem) if d)
        if v.status in (OK, NO_ANNOTATION):
            v.status = status


def _load_file_lists(omero: Omero, records: list) -> None:
    """Reads the file list of each large Fileset's record (layout 2.0) from its file
    annotation, once per annotation; one that cannot be read leaves the record without files."""
    lists: dict[int, list] = {}
    for record in records:
        ann_id = record.files_annotation
        if ann_id is None or record.files:
            continue
        if ann_id not in lists:
            try:
                lists[ann_id] = parse_files_jsonl(omero.file_annotation_bytes(ann_id))
            except Exception as exc:  # noqa: BLE001 - the whole code is still compared
                if is_connection_error(exc):
                    raise
                lists[ann_id] = []
        record.files = lists[ann_id]


def _changed_files(unit, result, record) -> list[str]:
    """The files whose own code differs from the one stored (layout 1.0 and 2.0)."""
    stored = {f.path: f.iscc for f in record.files}
    if not stored:
        return []
    computed = {unit.relative(sf): fr.iscc for sf, fr in zip(unit.files, result.files)}
    changed = [path for path, code in computed.items() if path in stored and stored[path] != code]
    return changed + [path for path in stored if path not in computed]


def _judge(image, unit, result, record) -> ImageVerdict:
    name = image.getName().val if image.getName() is not None else ""
    v = ImageVerdict(image.getId().val, name, unit.fileset_id, OK, files=len(unit.files))
    if record is not None:
        v.stored_iscc, v.stored_datahash = record.iscc, record.datahash or ""
    if not result.ok:
        v.status, v.detail = MISSING_FILE, result.message or ""
        return v
    v.computed_iscc, v.computed_datahash = result.record.iscc, result.record.datahash or ""
    for source, computed in zip(unit.files, result.files):
        if source.hasher in SUPPORTED_HASHERS and source.hash:
            v.checksums_checked += 1
            if computed.checksums.get(source.hasher, "").lower() != source.hash.lower():
                v.checksum_mismatches.append(unit.relative(source))
    problems = []
    if v.checksum_mismatches:
        problems.append(f"import checksum differs for {', '.join(v.checksum_mismatches)}")
    if record is None:
        v.status = CHANGED if problems else NO_ANNOTATION
        v.detail = "; ".join(problems) or "no ISCC annotation to compare with"
        return v
    if record.iscc != v.computed_iscc:
        problems.append("ISCC differs")
        changed = [p for p in _changed_files(unit, result, record) if p not in v.checksum_mismatches]
        if changed:
            problems.append(f"changed or missing file(s): {', '.join(changed)}")
    if record.datahash and record.datahash != v.computed_datahash:
        problems.append("datahash differs")
    if problems:
        v.status, v.detail = CHANGED, "; ".join(problems)
    return v


def summary(verdicts: list[ImageVerdict]) -> str:
    counts = ", ".join(f"{sum(1 for v in verdicts if v.status == s)} {s}" for s in STATUSES)
    return f"Verified {len(verdicts)} image(s): {counts}"


def to_csv(verdicts: list[ImageVerdict]) -> bytes:
    buf = io.StringIO()
    writer = spreadsheet.Writer(buf)
    writer.writerow(CSV_COLUMNS)
    for v in verdicts:
        writer.writerow(
            [
                v.image_id,
                v.image_name,
                v.fileset_id or "",
                v.status,
                v.detail,
                v.stored_iscc,
                v.computed_iscc,
                v.stored_datahash,
                v.computed_datahash,
                v.files,
                v.checksums_checked,
                ";".join(v.checksum_mismatches),
                v.stored_pixels,
                v.computed_pixels,
            ]
        )
    return buf.getvalue().encode("utf-8")
