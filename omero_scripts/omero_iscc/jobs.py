"""The jobs a user starts, one code path each, shared by the OMERO scripts (ISCC_Annotate,
ISCC_Verify, ISCC_Find_Duplicates) and the CLI plugin (``omero iscc annotate|verify|
duplicates``): from a selection (``Data_Type`` + ``IDs``) to a result with a message for
OMERO.web, one row per image for the command line, and the CSV report where there is one."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import NAMESPACE, PIXELS_NAMESPACE
from .annotate import CODES, annotate_codes, triage
from .config import ScriptSettings
from .duplicates import find_duplicates
from .duplicates import to_csv as duplicates_csv
from .filesets import plan
from .fromindex import source_for
from .gateway import Omero
from .pixels import pixels_infos
from .selection import SelectionError, expand
from .statuses import ImageStatus, Verdict
from .verify import summary, verify
from .verify import to_csv as verify_csv
from .worker import find_worker

#: Object types duplicates can start from.
DUPLICATE_TYPES = ["Project", "Dataset", "Image", "Screen", "Plate"]
SCOPES = ["Selection", "Server"]
#: The script's ``Code`` choices and the codes each means.
CODE_CHOICES = {"Files": ("files",), "Pixels": ("pixels",), "Both": ("files", "pixels")}


def codes_of(choice: str) -> tuple[str, ...]:
    """``Files``, ``Pixels`` or ``Both`` (any case) as the codes to compute."""
    for name, codes in CODE_CHOICES.items():
        if choice.lower() == name.lower():
            return codes
    raise SelectionError(f"Code must be one of {', '.join(CODE_CHOICES)}, not {choice!r}")


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
    codes: tuple[str, ...] = ("files",),
    simprints: bool = False,
) -> JobResult:
    """Annotates the selection with the codes asked for (``files``, ``pixels``); with
    ``dry_run`` only says what would be done per image and code."""
    assert set(codes) <= set(CODES), codes
    image_ids, missing = expand(omero, data_type, ids)
    if dry_run:
        rows = _dry_run_rows(omero, image_ids, codes, replace)
        would = sum(1 for r in rows if r["status"] == "would_annotate")
        return JobResult(
            f"would annotate {would} image(s) of {len(image_ids)}" + _missing_note(data_type, missing),
            rows,
            missing=missing,
        )
    worker = find_worker(settings.worker)
    root = (settings.repository or omero.repository_root()) if "files" in codes else None
    report = annotate_codes(
        omero,
        image_ids,
        codes,
        worker=worker,
        root=root,
        namespace=NAMESPACE,
        replace=replace,
        wide=wide,
        chunk_size=settings.chunk_size,
        allowed_roots=settings.allowed_roots,
        on_annotated=on_annotated,
        simprints=simprints,
        limits=settings.limits(),
    )
    rows = [
        {"image_id": o.image_id, "status": str(o.status), "message": o.message, "iscc": o.iscc, "code": o.code}
        for o in report.outcomes
    ]
    return JobResult(
        report.message() + _missing_note(data_type, missing),
        rows,
        failed=bool(report.failures) or bool(missing),
        first_annotated=report.first_annotated(),
        missing=missing,
    )


def _dry_run_rows(omero: Omero, image_ids: list[int], codes: tuple[str, ...], replace: bool) -> list[dict]:
    rows: list[dict] = []
    replacing = ", replacing its code" if replace else ""
    if "files" in codes:
        report, todo, _existing = triage(omero, image_ids, NAMESPACE, replace)
        units = {im.getId().val: u for u in plan(omero, todo) for im in u.images}
        rows += [
            {"image_id": o.image_id, "status": str(o.status), "message": o.message, "code": "files"}
            for o in report.outcomes
        ]
        for image_id, unit in sorted(units.items()):
            files = len(unit.files) if unit.fileset_id is not None else "?"
            message = f"{unit.key}, {files} file(s){replacing}"
            rows.append({"image_id": image_id, "status": "would_annotate", "message": message, "code": "files"})
    if "pixels" in codes:
        report, todo, _existing = triage(omero, image_ids, PIXELS_NAMESPACE, replace, code="pixels")
        infos = pixels_infos(omero, [im.getId().val for im in todo])
        rows += [
            {"image_id": o.image_id, "status": str(o.status), "message": o.message, "code": "pixels"}
            for o in report.outcomes
        ]
        for image in todo:
            info = infos.get(image.getId().val)
            if info is None:
                row = {"image_id": image.getId().val, "status": "failed", "message": "the image has no pixels"}
            else:
                message = f"{info.planes} plane(s) of {info.dimensions} {info.pixel_type}{replacing}"
                row = {"image_id": info.image_id, "status": "would_annotate", "message": message}
            rows.append({**row, "code": "pixels"})
    return rows


def verify_job(omero: Omero, data_type: str, ids: list[int], settings: ScriptSettings) -> JobResult:
    """Recomputes and compares the selection's codes and import checksums."""
    image_ids, missing = expand(omero, data_type, ids)
    worker = find_worker(settings.worker)
    root = settings.repository or omero.repository_root()
    verdicts = verify(
        omero,
        image_ids,
        worker,
        root,
        NAMESPACE,
        chunk_size=settings.chunk_size,
        allowed_roots=settings.allowed_roots,
        limits=settings.limits(),
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
    # Server-wide, the scheduler's code index answers when it keeps one here (fromindex.py).
    source = source_for(omero, settings.state_dir, worker, NAMESPACE, PIXELS_NAMESPACE) if image_ids is None else None
    report = find_duplicates(omero, image_ids, worker, NAMESPACE, threshold, source=source)
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
