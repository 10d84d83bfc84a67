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
from .gateway import Omero
from .layout import IsccRecord, to_pairs
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
) -> AnnotateReport:
    report = AnnotateReport()
    images = omero.images(image_ids)
    by_id = {im.getId().val: im for im in images}
    for missing in [i for i in image_ids if i not in by_id]:
        report.outcomes.append(ImageOutcome(missing, FAILED, "image not found or not visible"))
    existing = omero.iscc_annotations(list(by_id), namespace)
    todo = []
    for image_id in [i for i in image_ids if i in by_id]:
        image = by_id[image_id]
        if not image.getDetails().getPermissions().canAnnotate():
            report.outcomes.append(ImageOutcome(image_id, NOT_PERMITTED, "you may not annotate this image"))
        elif existing.get(image_id) and not replace:
            report.outcomes.append(ImageOutcome(image_id, ALREADY))
        else:
            todo.append(image)
    units = plan(todo)
    for start in range(0, len(units), units_per_run):
        if should_stop():
            report.stopped = True
            break
        batch = units[start : start + units_per_run]
        began = time.monotonic()
        results = compute(omero, batch, worker, root, wide=wide, chunk_size=chunk_size)
        seconds = (time.monotonic() - began) / max(1, len(batch))
        for unit in batch:
            result = results[unit.key]
            for image in unit.images:
                image_id = image.getId().val
                if not result.ok:
                    report.outcomes.append(ImageOutcome(image_id, FAILED, result.message or "failed", seconds=seconds))
                    continue
                report.outcomes.append(
                    _save(
                        omero, image, result.record, namespace, existing.get(image_id, []) if replace else [], seconds
                    )
                )
                if report.outcomes[-1].status == ANNOTATED and on_annotated is not None:
                    on_annotated(image_id, result.record, seconds)
    return report


def _save(omero: Omero, image, record: IsccRecord, namespace: str, old: list, seconds: float) -> ImageOutcome:
    image_id = image.getId().val
    try:
        omero.save_map_annotation(image, to_pairs(record), namespace)
    except Exception as exc:  # noqa: BLE001 - a refused save is this image's failure, not the batch's
        if is_connection_error(exc):
            raise  # the session is gone, not this image: the caller reconnects and carries on
        return ImageOutcome(image_id, FAILED, f"saving the annotation failed: {exc}", seconds=seconds)
    note = ""
    old_ids = [a.getId().val for a in old if a.getNs() is not None and a.getNs().val == namespace]
    if old_ids:
        try:
            omero.delete_annotations(old_ids)
        except Exception as exc:  # noqa: BLE001 - the new annotation exists; report the leftover
            note = f"new annotation saved, but the old one(s) {old_ids} could not be removed: {exc}"
            log.warning("image %s: %s", image_id, note)
    return ImageOutcome(image_id, ANNOTATED, note, iscc=record.iscc, seconds=seconds)
