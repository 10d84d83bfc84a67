"""The jobs a user starts, one code path each, shared by the OMERO scripts (ISCC_Annotate,
ISCC_Verify, ISCC_Find_Duplicates) and the CLI plugin (``omero iscc annotate|verify|
duplicates``): from a selection (``Data_Type`` + ``IDs``) to a result with a message for
OMERO.web, one row per image for the command line, and the CSV report where there is one."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import NAMESPACE
from .annotate import annotate, triage
from .config import ScriptSettings
from .duplicates import find_duplicates
from .duplicates import to_csv as duplicates_csv
from .filesets import plan
from .gateway import Omero
from .selection import SelectionError, expand
from .statuses import ImageStatus, Verdict
from .verify import summary, verify
from .verify import to_csv as verify_csv
from .worker import find_worker

#: Object types duplicates can start from.
DUPLICATE_TYPES = ["Project", "Dataset", "Image", "Screen", "Plate"]
SCOPES = ["Selection", "Server"]


@dataclass
class JobResult:
    """What a job did: the message, one row per image (or group member), whether anything
    failed, and the CSV report where the job makes one."""

    message: str
    rows: list[dict] = field(default_factory=list)
    failed: bool = False
    report: bytes | None = None
    first_annotated: int | None = None
    missing: list[int] = field(default_factory=list)


def _missing_note(data_type: str, missing: list[int]) -> str:
    return f"; {data_type} not found: {', '.join(map(str, missing))}" if missing else ""


def annotate_job(
    omero: Omero,
    data_type: str,
    ids: list[int],
    settings: ScriptSettings,
    replace: bool = False,
    wide: bool = False,
    dry_run: bool = False,
    on_annotated=None,
) -> JobResult:
    """Annotates the selection; with ``dry_run`` only says what would be done per image."""
    image_ids, missing = expand(omero, data_type, ids)
    if dry_run:
        report, todo, _existing = triage(omero, image_ids, NAMESPACE, replace)
        units = {im.getId().val: u for u in plan(omero, todo) for im in u.images}
        rows = [{"image_id": o.image_id, "status": str(o.status), "message": o.message} for o in report.outcomes]
        for image_id, unit in sorted(units.items()):
            files = len(unit.files) if unit.fileset_id is not None else "?"
            rows.append(
                {
                    "image_id": image_id,
                    "status": "would_annotate",
                    "message": f"{unit.key}, {files} file(s)" + (", replacing its ISCC" if replace else ""),
                }
            )
        would = sum(1 for r in rows if r["status"] == "would_annotate")
        return JobResult(
            f"would annotate {would} image(s) of {len(image_ids)}" + _missing_note(data_type, missing),
            rows,
            missing=missing,
        )
    worker = find_worker(settings.worker)
    root = settings.repository or omero.repository_root()
    report = annotate(
        omero,
        image_ids,
        worker,
        root,
        NAMESPACE,
        replace=replace,
        wide=wide,
        chunk_size=settings.chunk_size,
        allowed_roots=settings.allowed_roots,
        on_annotated=on_annotated,
    )
    rows = [
        {"image_id": o.image_id, "status": str(o.status), "message": o.message, "iscc": o.iscc} for o in report.outcomes
    ]
    return JobResult(
        report.message() + _missing_note(data_type, missing),
        rows,
        failed=bool(report.failures) or bool(missing),
        first_annotated=report.first_annotated(),
        missing=missing,
    )


def verify_job(omero: Omero, data_type: str, ids: list[int], settings: ScriptSettings) -> JobResult:
    """Recomputes and compares the selection's codes and import checksums."""
    image_ids, missing = expand(omero, data_type, ids)
    worker = find_worker(settings.worker)
    root = settings.repository or omero.repository_root()
    verdicts = verify(
        omero, image_ids, worker, root, NAMESPACE, chunk_size=settings.chunk_size, allowed_roots=settings.allowed_roots
    )
    rows = [
        {"image_id": v.image_id, "status": str(v.status), "message": v.detail, "iscc": v.computed_iscc}
        for v in verdicts
    ]
    failed = any(v.status is not Verdict.OK for v in verdicts) or bool(missing)
    return JobResult(
        summary(verdicts) + _missing_note(data_type, missing),
        rows,
        failed=failed,
        report=verify_csv(verdicts),
        missing=missing,
    )


def duplicates_job(
    omero: Omero,
    data_type: str,
    ids: list[int],
    settings: ScriptSettings,
    scope: str = "Selection",
    threshold: int = 12,
) -> JobResult:
    """Identical and similar images of the selection, or of everything the user can see."""
    if scope not in SCOPES:
        raise SelectionError(f"Scope must be Selection or Server, not {scope!r}")
    if data_type not in DUPLICATE_TYPES:
        raise SelectionError(f"Data_Type must be one of {', '.join(DUPLICATE_TYPES)}")
    worker = find_worker(settings.worker)
    image_ids = None
    if scope == "Selection":
        image_ids, _missing = expand(omero, data_type, ids)
    report = find_duplicates(omero, image_ids, worker, NAMESPACE, threshold)
    rows = []
    for n, group in enumerate(report.groups, 1):
        for coded, distance in group["members"]:
            rows.append(
                {
                    "image_id": coded.image_id,
                    "status": group["kind"],
                    "group": n,
                    "name": coded.name,
                    "iscc": coded.iscc,
                    "distance": distance,
                    "message": f"group {n}, {distance} bit(s) from its first member, {coded.name}",
                }
            )
    return JobResult(report.message(), rows, report=duplicates_csv(report))


def image_status_word(status: str) -> str:
    """A row's status as a person reads it."""
    words = {ImageStatus.ALREADY.value: "already has an ISCC", "would_annotate": "would annotate"}
    return words.get(status, status)
