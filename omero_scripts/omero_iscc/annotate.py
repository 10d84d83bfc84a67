"""Annotating images with their ISCC: the work of the Annotate script and the scheduler.

An image that already carries an annotation in the namespace is skipped unless ``replace``;
with ``replace`` the old annotations are removed only after the new one has been saved, so
a failed computation or save leaves the old one in place. Annotations outside the namespace
are never touched. One image's failure never stops the others.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from .compute import BATCH, compute
from .connection import is_connection_error
from .filesets import plan
from .gateway import NotPermitted, Omero
from .layout import FILES_IN_TABLE, IsccRecord, files_jsonl, newest_record, to_pairs
from .statuses import ImageStatus

log = logging.getLogger(__name__)

ANNOTATED, ALREADY, FAILED, NOT_PERMITTED = (
    ImageStatus.ANNOTATED,
    ImageStatus.ALREADY,
    ImageStatus.FAILED,
    ImageStatus.NOT_PERMITTED,
)


@dataclass
class ImageOutcome:
    image_id: int
    status: ImageStatus
    message: str = ""
    iscc: str | None = None
    seconds: float = 0.0


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
        parts = [f"{self.count(ANNOTATED)} annotated"]
        if self.count(ALREADY):
            parts.append(f"{self.count(ALREADY)} already had an ISCC")
        if self.count(NOT_PERMITTED):
            parts.append(f"{self.count(NOT_PERMITTED)} skipped (not allowed to annotate)")
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
) -> AnnotateReport:
    """Annotates the images; ``detach``: run the worker in a session of its own (the
    scheduler's daemon; a script's worker must stay in its process group so that cancelling
    the script stops it)."""
    report, todo, existing = triage(omero, image_ids, namespace, replace)
    units = plan(omero, todo)
    for start in range(0, len(units), units_per_run):
        if should_stop():
            report.stopped = True
            break
        batch = units[start : start + units_per_run]
        began = time.monotonic()
        results = compute(
            omero, batch, worker, root, wide=wide, chunk_size=chunk_size, detach=detach, allowed_roots=allowed_roots
        )
        seconds = (time.monotonic() - began) / max(1, len(batch))
        done = []
        for unit in batch:
            result = results[unit.key]
            if result.ok:
                done.append((unit, result.record))
                continue
            for image in unit.images:
                outcome = ImageOutcome(image.getId().val, FAILED, result.message or "failed", seconds=seconds)
                report.outcomes.append(outcome)
        for outcome, record in _save(omero, done, namespace, existing if replace else {}, seconds):
            report.outcomes.append(outcome)
            if outcome.status is ANNOTATED and on_annotated is not None:
                on_annotated(outcome.image_id, record, seconds)
    return report


def triage(omero: Omero, image_ids: list[int], namespace: str, replace: bool = False) -> tuple:
    """What annotating would do with each image, before any hashing: the report so far (not
    found, not permitted, already annotated), the images to hash, and their annotations."""
    report = AnnotateReport()
    images = omero.images(image_ids)
    by_id = {im.getId().val: im for im in images}
    for missing in [i for i in image_ids if i not in by_id]:
        report.outcomes.append(ImageOutcome(missing, FAILED, "image not found or not visible"))
    existing = omero.iscc_annotations(list(by_id), namespace)
    me, privileges = omero.user_id(), omero.privileges()
    todo = []
    for image_id in [i for i in image_ids if i in by_id]:
        image = by_id[image_id]
        if not image.getDetails().getPermissions().canAnnotate():
            report.outcomes.append(ImageOutcome(image_id, NOT_PERMITTED, "you may not annotate this image"))
        elif image.getDetails().getOwner().getId().val != me and "Sudo" not in privileges:
            report.outcomes.append(
                ImageOutcome(
                    image_id, NOT_PERMITTED, "annotating another user's image as its owner needs the Sudo privilege"
                )
            )
        elif existing.get(image_id) and not replace:
            report.outcomes.append(ImageOutcome(image_id, ALREADY))
        else:
            todo.append(image)
    return report, todo, existing


def _files_payload(record: IsccRecord) -> bytes | None:
    """A large Fileset's file list, for its file annotation (layout 2.0)."""
    return files_jsonl(record) if len(record.files) > FILES_IN_TABLE else None


def _save(omero: Omero, done: list, namespace: str, existing: dict, seconds: float) -> list:
    """Saves one shared annotation per unit (its images and its Fileset linked to it), then
    retires what it replaces: an old annotation whose every image got the new one is deleted
    (with its file list); one that other images still carry is only unlinked from these.
    Returns (outcome, record) per image."""
    saved = omero.save_shared_annotations(
        [(unit.images, unit.fileset_id, record) for unit, record in done], namespace, to_pairs, _files_payload
    )
    out = []
    replaced: dict[int, list] = {}  # unit index -> old annotations of its images
    for n, (unit, record) in enumerate(done):
        for image in unit.images:
            image_id = image.getId().val
            result = saved.get(image_id)
            if isinstance(result, NotPermitted):
                out.append((ImageOutcome(image_id, NOT_PERMITTED, str(result), seconds=seconds), record))
            elif isinstance(result, BaseException) or result is None:
                if result is not None and is_connection_error(result):
                    raise result  # the session is gone, not this image: the caller reconnects and carries on
                message = f"saving the annotation failed: {result}"
                out.append((ImageOutcome(image_id, FAILED, message, seconds=seconds), record))
            else:
                out.append((ImageOutcome(image_id, ANNOTATED, iscc=record.iscc, seconds=seconds), record))
                replaced.setdefault(n, []).extend(
                    a for a in existing.get(image_id, []) if a.getNs() is not None and a.getNs().val == namespace
                )
    if replaced:
        left = _retire(omero, done, replaced)
        for outcome, _ in out:
            if outcome.image_id in left:
                outcome.message = f"new annotation saved, but the old one(s) {left[outcome.image_id]} remain"
                log.warning("image %s: %s", outcome.image_id, outcome.message)
    return out


def _retire(omero: Omero, done: list, replaced: dict[int, list]) -> dict[int, list[int]]:
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
                    record = newest_record([ann])
                    if record is not None and record.files_annotation is not None:
                        delete.append(record.files_annotation)
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
