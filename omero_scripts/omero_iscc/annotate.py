"""Annotating images with their ISCC: the work of the Annotate script and the scheduler.

An image that already carries an annotation in the namespace is skipped unless ``replace``;
with ``replace`` the old annotations are removed only after the new one has been saved, so
a failed computation or save leaves the old one in place. Annotations outside the namespace
are never touched. One image's failure never stops the others.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Callable

from .compute import BATCH, compute
from .config import WorkerLimits, worker_limits
from .connection import is_connection_error
from .filesets import Unit, plan
from .gateway import NotPermitted, Omero
from .layout import FILES, PIXELS, IsccRecord, Layout, PixelRecord
from .pixels import BATCH as PIXEL_BATCH
from .pixels import NOT_YET as PIXELS_NOT_YET
from .pixels import compute_pixels, pixel_record, pixels_infos, reading_order
from .statuses import ImageStatus, Problem

log = logging.getLogger(__name__)

ANNOTATED, ALREADY, FAILED, NOT_PERMITTED = (
    ImageStatus.ANNOTATED,
    ImageStatus.ALREADY,
    ImageStatus.FAILED,
    ImageStatus.NOT_PERMITTED,
)


#: The codes an image can carry: of its original files, and of its pixels.
CODES = ("files", "pixels")


@dataclass
class ImageOutcome:
    image_id: int
    status: ImageStatus
    message: str = ""
    iscc: str | None = None
    seconds: float = 0.0
    #: Which code: ``files`` or ``pixels``.
    code: str = "files"


@dataclass
class AnnotateReport:
    outcomes: list[ImageOutcome] = field(default_factory=list)
    stopped: bool = False

    def count(self, status: ImageStatus) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def failures(self) -> list[ImageOutcome]:
        return [o for o in self.outcomes if o.status == FAILED]

    def first_annotated(self) -> int | None:
        return next((o.image_id for o in self.outcomes if o.status == ANNOTATED), None)

    def message(self, limit: int = 5) -> str:
        codes = sorted({o.code for o in self.outcomes})
        if len(codes) > 1:
            parts = []
            for code in codes:
                part = AnnotateReport([o for o in self.outcomes if o.code == code]).message(limit)
                parts.append(f"{code}: {part}")
            return "; ".join(parts)
        parts = [f"{self.count(ANNOTATED)} annotated"]
        if self.count(ALREADY):
            parts.append(f"{self.count(ALREADY)} already had an ISCC")
        if self.count(NOT_PERMITTED):
            parts.append(f"{self.count(NOT_PERMITTED)} skipped (not allowed to annotate)")
        if self.count(ImageStatus.NO_FILES):
            parts.append(f"{self.count(ImageStatus.NO_FILES)} without original files (no file code can exist)")
        if self.count(ImageStatus.NOT_YET):
            parts.append(f"{self.count(ImageStatus.NOT_YET)} not yet (waiting for the server's pyramid)")
        failed = self.failures
        if failed:
            shown = "; ".join(f"image {o.image_id}: {o.message}" for o in failed[:limit])
            more = f"; and {len(failed) - limit} more" if len(failed) > limit else ""
            parts.append(f"{len(failed)} failed ({shown}{more})")
        return ", ".join(parts)


def annotate(
    omero: Omero,
    image_ids: list[int],
    worker: str,
    root: str | None,
    namespace: str,
    replace: bool = False,
    wide: bool = False,
    chunk_size: int = 1 << 20,
    units_per_run: int = BATCH,
    on_annotated: Callable[[int, IsccRecord, float], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    detach: bool = False,
    allowed_roots: tuple[str, ...] = (),
    guard: Guard | None = None,
    limits: WorkerLimits | None = None,
) -> AnnotateReport:
    """Annotates the images with the code of their original files; ``detach``: run the worker
    in a session of its own (the scheduler's daemon; a script's worker must stay in its process
    group so that cancelling the script stops it); ``guard``: see :data:`Guard`; ``limits``:
    the worker's time budget and size ceiling."""
    layout = FILES.in_namespace(namespace)
    report, todo, existing = triage(omero, whole_filesets(omero, image_ids), namespace, replace)
    if not replace:
        existing = _rejoin(omero, report, todo, existing)
    units = plan(omero, todo)

    def hash_batch(batch: list) -> tuple[list, list]:
        # The import checksums OMERO recorded are computed in the same read: a code is
        # written only for the bytes that were imported.
        results = compute(
            omero,
            batch,
            worker,
            root,
            wide=wide,
            chunk_size=chunk_size,
            detach=detach,
            allowed_roots=allowed_roots,
            require_checksums=True,
            **worker_limits(limits),
        )
        done, failed = [], []
        for unit in batch:
            result = results[unit.key]
            if result.ok:
                done.append((unit, result.record))
            elif result.problem is Problem.NO_FILES:
                # Nothing to hash, and nothing will change that: a status, not a failure.
                why = f"no original files: {result.message}" if result.message else "no original files"
                report.outcomes += [ImageOutcome(im.getId().val, ImageStatus.NO_FILES, why) for im in unit.images]
            else:
                failed += [(image.getId().val, result.message or "failed") for image in unit.images]
        return done, failed

    _in_batches(omero, report, units, units_per_run, hash_batch, layout, existing, on_annotated, should_stop, guard)
    return report


def whole_filesets(omero: Omero, image_ids: list[int]) -> list[int]:
    """The selection, then the other images of its Filesets: a Fileset's files have one code,
    saved as one annotation shared by all its images and linked to the Fileset, so choosing
    some of its images annotates (or replaces the annotation of) all of them, and the Fileset
    never carries a second annotation."""
    chosen = set(image_ids)
    return list(image_ids) + [i for i in omero.fileset_images(list(image_ids)) if i not in chosen]


def _rejoin(omero: Omero, report: AnnotateReport, todo: list, existing: dict) -> dict:
    """Without ``replace``: where some images of a Fileset are to be annotated and others
    already carry an annotation (left by a version that annotated images one by one), the
    annotated ones join the rest, and their old annotation is replaced by the Fileset's one.
    Returns the old annotations to retire."""
    filesets = {im.getFileset().getId().val for im in todo if im.getFileset() is not None}
    already = [o.image_id for o in report.outcomes if o.status == ALREADY]
    if not filesets or not already:
        return {}
    joining = [
        im for im in omero.images(already) if im.getFileset() is not None and im.getFileset().getId().val in filesets
    ]
    ids = {im.getId().val for im in joining}
    report.outcomes = [o for o in report.outcomes if o.image_id not in ids]
    todo += joining
    return {i: existing.get(i, []) for i in ids}


#: Wraps each save: given the (unit, record) pairs about to be saved, a context manager that
#: yields the pairs still to save and the outcomes of the images it left out; the save happens
#: inside it (the scheduler holds its lock there and re-checks the annotations, see holds.py).
Guard = Callable[[list], AbstractContextManager]


def _in_batches(
    omero: Omero,
    report: AnnotateReport,
    items: list,
    size: int,
    hash_batch: Callable[[list], tuple[list, list]],
    layout: Layout,
    existing: dict,
    on_annotated: Callable | None,
    should_stop: Callable[[], bool],
    guard: Guard | None = None,
) -> None:
    """The loop of both codes: per batch of ``size`` items, ``hash_batch`` gives the (unit,
    record) pairs to save and the (image id, why) that failed; then the save. Stops between
    batches when asked."""
    for start in range(0, len(items), size):
        if should_stop():
            report.stopped = True
            break
        batch = items[start : start + size]
        began = time.monotonic()
        done, failed = hash_batch(batch)
        seconds = (time.monotonic() - began) / max(1, len(batch))
        report.outcomes += [ImageOutcome(i, FAILED, why, seconds=seconds, code=layout.code) for i, why in failed]
        if guard is None:
            saved = save(omero, done, layout, existing, seconds)
        else:
            with guard(done) as (kept, left_out):
                report.outcomes += left_out
                saved = save(omero, kept, layout, existing, seconds)
        for outcome, record in saved:
            report.outcomes.append(outcome)
            if outcome.status is ANNOTATED and on_annotated is not None:
                on_annotated(outcome.image_id, record, seconds)


def annotate_pixels(
    omero: Omero,
    image_ids: list[int],
    worker: str,
    namespace: str = PIXELS.namespace,
    replace: bool = False,
    simprints: bool = False,
    on_annotated: Callable[[int, PixelRecord, float], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    detach: bool = False,
    limits: WorkerLimits | None = None,
) -> AnnotateReport:
    """Annotates the images with their pixel code (one annotation per image; the files'
    annotation is not touched). Same rules as :func:`annotate`: skipped when present unless
    ``replace``, an old one removed only after its replacement is saved."""
    layout = PIXELS.in_namespace(namespace)
    report, todo, existing = triage(omero, image_ids, namespace, replace, code="pixels")
    infos = pixels_infos(omero, [im.getId().val for im in todo])
    for image in todo:
        if image.getId().val not in infos:
            report.outcomes.append(ImageOutcome(image.getId().val, FAILED, "the image has no pixels", code="pixels"))
    # A Fileset's images one after the other (a plate's wells), in every batch.
    todo = sorted((im for im in todo if im.getId().val in infos), key=lambda im: reading_order(infos[im.getId().val]))

    def hash_batch(batch: list) -> tuple[list, list]:
        results = compute_pixels(
            omero, [infos[im.getId().val] for im in batch], worker, simprints, detach, limits=limits
        )
        done, failed = [], []
        for image in batch:
            image_id = image.getId().val
            result = results[image_id]
            if result.ok:
                done.append((Unit(key=f"image:{image_id}", images=[image]), pixel_record(infos[image_id], result)))
            elif result.error_kind == PIXELS_NOT_YET:
                report.outcomes.append(ImageOutcome(image_id, ImageStatus.NOT_YET, result.error or "", code="pixels"))
            else:
                failed.append((image_id, result.error or "failed"))
        return done, failed

    existing = existing if replace else {}
    _in_batches(omero, report, todo, PIXEL_BATCH, hash_batch, layout, existing, on_annotated, should_stop)
    return report


def annotate_codes(omero: Omero, image_ids: list[int], codes: tuple[str, ...], **options) -> AnnotateReport:
    """:func:`annotate` and/or :func:`annotate_pixels`, one report with an outcome per image
    and code. ``options``: those of :func:`annotate` (``worker``, ``root``...) and
    ``simprints`` and ``pixels_namespace`` for the pixel code."""
    unknown = [c for c in codes if c not in CODES]
    if unknown or not codes:
        raise ValueError(f"codes must be some of {', '.join(CODES)}, not {codes!r}")
    report = AnnotateReport()
    simprints = options.pop("simprints", False)
    pixels_namespace = options.pop("pixels_namespace", PIXELS.namespace)
    if "files" in codes:
        files = annotate(omero, image_ids, **options)
        report.outcomes += files.outcomes
        report.stopped |= files.stopped
    if "pixels" in codes and not report.stopped:
        pixels = annotate_pixels(
            omero,
            image_ids,
            options["worker"],
            namespace=pixels_namespace,
            replace=options.get("replace", False),
            simprints=simprints,
            on_annotated=options.get("on_annotated"),
            should_stop=options.get("should_stop", lambda: False),
            detach=options.get("detach", False),
            limits=options.get("limits"),
        )
        report.outcomes += pixels.outcomes
        report.stopped |= pixels.stopped
    return report


def triage(omero: Omero, image_ids: list[int], namespace: str, replace: bool = False, code: str = "files") -> tuple:
    """What annotating would do with each image, before any hashing: the report so far (not
    found, not permitted, already annotated), the images to hash, and their annotations in
    ``namespace``. ``code`` labels the outcomes."""
    report = AnnotateReport()
    images = omero.images(image_ids)
    by_id = {im.getId().val: im for im in images}
    for missing in [i for i in image_ids if i not in by_id]:
        report.outcomes.append(ImageOutcome(missing, FAILED, "image not found or not visible"))
    existing = omero.iscc_annotations(list(by_id), namespace)
    me = omero.user_id()
    todo = []
    for image_id in [i for i in image_ids if i in by_id]:
        image = by_id[image_id]
        details = image.getDetails()
        theirs = details.getOwner().getId().val != me
        # Another user's image is annotated as its owner where this session can make the
        # annotation theirs (a full administrator, Sudo, a leader of the group): the owner may
        # annotate their own image, even where this session's canAnnotate() is false (an
        # administrator in a private group). Otherwise by what this session may do with the
        # image (canAnnotate(): a member of a read-annotate or read-write group, a restricted
        # administrator with WriteOwned), in its own name.
        as_owner = theirs and omero.may_act_as_owner(details.getGroup().getId().val)
        if not as_owner and not details.getPermissions().canAnnotate():
            why = "you may not annotate this image"
            if theirs:
                why += " (another user's: annotating it as its owner needs the Sudo privilege)"
            report.outcomes.append(ImageOutcome(image_id, NOT_PERMITTED, why))
        elif existing.get(image_id) and not replace:
            report.outcomes.append(ImageOutcome(image_id, ALREADY))
        else:
            todo.append(image)
    for outcome in report.outcomes:
        outcome.code = code
    return report, todo, existing


def recheck(omero: Omero, done: list, namespace: str, code: str = "files") -> tuple[list, list[ImageOutcome]]:
    """The (unit, record) pairs left to save once the images that got an annotation in
    ``namespace`` since they were triaged (by another process) are taken out, and an
    ``ALREADY`` outcome for each of those. Called just before saving, under a lock the other
    writers take too."""
    ids = [image.getId().val for unit, _ in done for image in unit.images]
    existing = omero.iscc_annotations(ids, namespace) if ids else {}
    kept, already = [], []
    for unit, record in done:
        free = [image for image in unit.images if not existing.get(image.getId().val)]
        already += [
            ImageOutcome(image.getId().val, ALREADY, "annotated meanwhile", code=code)
            for image in unit.images
            if existing.get(image.getId().val)
        ]
        if len(free) == len(unit.images):
            kept.append((unit, record))
        elif free:
            kept.append((dataclasses.replace(unit, images=free), record))
    return kept, already


def save(omero: Omero, done: list, layout: Layout, existing: dict, seconds: float) -> list:
    """Saves one shared annotation per unit (its images and its Fileset linked to it), then
    retires what it replaces: an old annotation whose every image got the new one is deleted
    (with its file annotation); one that other images still carry is only unlinked from these.
    ``done``: (unit, record) pairs, a unit having ``images`` and ``fileset_id``. Returns
    (outcome, record) per image."""
    namespace = layout.namespace
    saved = omero.save_shared_annotations(
        [(unit.images, unit.fileset_id, record) for unit, record in done],
        namespace,
        layout.pairs_of,
        layout.attachment_of,
    )
    out = []
    replaced: dict[int, list] = {}  # unit index -> old annotations of its images
    for n, (unit, record) in enumerate(done):
        for image in unit.images:
            image_id = image.getId().val
            result = saved.get(image_id)
            if isinstance(result, NotPermitted):
                outcome = ImageOutcome(image_id, NOT_PERMITTED, str(result), seconds=seconds, code=layout.code)
                out.append((outcome, record))
            elif isinstance(result, BaseException) or result is None:
                if result is not None and is_connection_error(result):
                    raise result  # the session is gone, not this image: the caller reconnects and carries on
                message = f"saving the annotation failed: {result}"
                out.append((ImageOutcome(image_id, FAILED, message, seconds=seconds, code=layout.code), record))
            else:
                outcome = ImageOutcome(image_id, ANNOTATED, iscc=record.iscc, seconds=seconds, code=layout.code)
                out.append((outcome, record))
                replaced.setdefault(n, []).extend(
                    a for a in existing.get(image_id, []) if a.getNs() is not None and a.getNs().val == namespace
                )
    if replaced:
        left = _retire(omero, done, replaced, layout)
        for outcome, _ in out:
            if outcome.image_id in left:
                outcome.message = f"new annotation saved, but the old one(s) {left[outcome.image_id]} remain"
                log.warning("image %s: %s", outcome.image_id, outcome.message)
    return out


def _retire(omero: Omero, done: list, replaced: dict[int, list], layout: Layout) -> dict[int, list[int]]:
    """Deletes or unlinks the old annotations of units that got a new one; returns per image
    the old annotation ids it still carries."""
    old = {a.getId().val: a for anns in replaced.values() for a in anns}
    links = omero.annotation_images(sorted(old))
    images_of: dict[int, set[int]] = {}
    for _link, image_id, ann_id in links:
        images_of.setdefault(ann_id, set()).add(image_id)
    delete: list[int] = []
    unlink: list[int] = []
    for n, anns in replaced.items():
        unit_images = {im.getId().val for im in done[n][0].images}
        for ann in anns:
            ann_id = ann.getId().val
            if images_of.get(ann_id, set()) <= unit_images:
                if ann_id not in delete:
                    delete.append(ann_id)
                    delete.extend(layout.attached_ids(ann))
            else:
                unlink += [link for link, image_id, a in links if a == ann_id and image_id in unit_images]
    try:
        left_anns = set(omero.delete_annotations(delete)) if delete else set()
        left_links = set(omero.unlink(unlink)) if unlink else set()
    except Exception as exc:  # noqa: BLE001 - the new annotations exist; report the leftovers
        if is_connection_error(exc):
            raise
        left_anns, left_links = set(delete), set(unlink)
    left: dict[int, list[int]] = {}
    for link, image_id, ann_id in links:
        if ann_id in left_anns or link in left_links:
            left.setdefault(image_id, []).append(ann_id)
    return left
