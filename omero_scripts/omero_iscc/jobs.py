"""The jobs a user starts, one code path each, shared by the OMERO scripts (ISCC_Annotate,
ISCC_Verify, ISCC_Find_Duplicates) and the CLI plugin (``omero iscc annotate|verify|
duplicates``): from a selection (``Data_Type`` + ``IDs``) to a result with a message for
OMERO.web, one row per image for the command line, and the CSV report where there is one."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from . import NAMESPACE, PIXELS_NAMESPACE
from .annotate import CODES, annotate_codes, triage
from .config import ScriptSettings
from .duplicates import DuplicateReport, find_duplicates
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
    #: Images not done when the job was told to stop (a script's time limit).
    left: list[int] = field(default_factory=list)


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
    should_stop=lambda: False,
) -> JobResult:
    """Annotates the selection with the codes asked for (``files``, ``pixels``); with
    ``dry_run`` only says what would be done per image and code. ``should_stop``: asked before
    each batch; once true no new batch starts, and the result lists the images left."""
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
        should_stop=should_stop,
    )
    rows = [
        {"image_id": o.image_id, "status": str(o.status), "message": o.message, "iscc": o.iscc, "code": o.code}
        for o in report.outcomes
    ]
    done: dict[int, set] = {}
    for o in report.outcomes:
        done.setdefault(o.image_id, set()).add(o.code)
    left = [i for i in image_ids if not set(codes) <= done.get(i, set())] if report.stopped else []
    return JobResult(
        report.message() + _missing_note(data_type, missing),
        rows,
        failed=bool(report.failures) or bool(missing),
        first_annotated=report.first_annotated(),
        missing=missing,
        left=left,
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


def verify_job(
    omero: Omero, data_type: str, ids: list[int], settings: ScriptSettings, should_stop=lambda: False
) -> JobResult:
    """Recomputes and compares the selection's codes and import checksums; ``should_stop``: as
    for :func:`annotate_job` (the images left have no row)."""
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
        should_stop=should_stop,
    )
    rows = [
        {"image_id": v.image_id, "status": str(v.status), "message": v.detail, "iscc": v.computed_iscc}
        for v in verdicts
    ]
    verified = {v.image_id for v in verdicts}
    failed = any(v.status is not Verdict.OK for v in verdicts) or bool(missing)
    return JobResult(
        summary(verdicts) + _missing_note(data_type, missing),
        rows,
        failed=failed,
        report=verify_csv(verdicts),
        missing=missing,
        left=[i for i in image_ids if i not in verified],
    )


def duplicates_job(
    omero: Omero,
    data_type: str,
    ids: list[int],
    settings: ScriptSettings,
    scope: str = "Selection",
    threshold: int = 12,
    listed_for: tuple[int, int] | None = None,
) -> JobResult:
    """Identical and similar images of the selection, or of everything the user can see.
    ``listed_for``: (group id, owner id) of the object the report goes to: it lists only the
    images everyone who may read that object may see, and says how many it leaves out."""
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
    left_out = 0
    if listed_for is not None:
        report, left_out = _listable(omero, report, *listed_for)
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
    note = (
        f"; {left_out} image(s) that not every reader of the report may see are not listed in it "
        "(`omero iscc duplicates` shows you all you can see)"
        if left_out
        else ""
    )
    return JobResult(report.message() + note, rows, report=duplicates_csv(report))


def _listable(omero: Omero, report: DuplicateReport, group_id: int, owner_id: int) -> tuple[DuplicateReport, int]:
    """The report without the images that a reader of an object of ``owner_id`` in
    ``group_id`` may not see; a group left with one member is dropped (it would point at a
    copy its reader cannot see). Returns the report and how many images were left out."""
    ids = {c.image_id for g in report.groups for c, _ in g["members"]} | {i for i, _ in report.without_iscc}
    keep = omero.seen_by_readers(group_id, owner_id, sorted(ids)) if ids else set()
    groups = []
    for group in report.groups:
        members = [(c, d) for c, d in group["members"] if c.image_id in keep]
        if len(members) > 1:
            groups.append({**group, "members": members})
    without = [(i, name) for i, name in report.without_iscc if i in keep]
    return dataclasses.replace(report, groups=groups, without_iscc=without), len(ids - keep)


def image_status_word(status: str) -> str:
    """A row's status as a person reads it."""
    words = {ImageStatus.ALREADY.value: "already has an ISCC", "would_annotate": "would annotate"}
    return words.get(status, status)
