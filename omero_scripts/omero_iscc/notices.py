"""Duplicates at import: right after the scheduler gives an image its code(s), the index is
asked for the images that hold the same files, the same pixels in other files, or nearly the
same data, and the answer is written on the new image as a key-value annotation in its own
namespace (docs/index.md, "The duplicates notice") and sent as a webhook event.

It never names what the image's owner may not read. The index's answer is filtered by the
owner's view (their groups and each group's permissions, read in a session of the owner), and
the matched links are then resolved to images in that session: the server itself leaves out
anything the owner may not read, also when the index's row is out of date (an image moved to
another group since it was indexed). The notice is saved as the other annotations are, in a
session of the owner in the image's group; an image carries one notice: a changed one is saved
anew, then the old one deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Callable

from . import DUPLICATES_NAMESPACE, __version__
from .codeindex import CODE_KEYS, MAX_PENDING, IndexFailure, KeptIndex, Reader
from .connection import is_connection_error
from .gateway import CodeLink, NotPermitted, Omero
from .layout import utc_timestamp
from .worker import WorkerError

log = logging.getLogger(__name__)

#: Version of the notice's key layout.
NOTICE_VERSION = "1.0"
#: Images named in one notice; the others are counted in ``iscc:more``.
MAX_NAMED = 25
#: The kinds of duplicate, strongest first: an image is named once, under the strongest.
KINDS = ("identical", "same_pixels", "similar", "similar_pixels")
#: The index's match kinds, per space, as notice kinds.
_KIND = {
    ("files", "identical"): "identical",
    ("files", "same_data"): "similar",
    ("files", "similar"): "similar",
    ("pixels", "identical"): "same_pixels",
    ("pixels", "same_data"): "similar_pixels",
    ("pixels", "similar"): "similar_pixels",
}


@dataclass(frozen=True)
class Duplicate:
    kind: str
    image_id: int
    #: Data-Code bits apart, over ``bits`` (64, or 128 when both codes are wide).
    distance: int
    bits: int

    def sort_key(self) -> tuple:
        return (KINDS.index(self.kind), self.distance, self.image_id)


@dataclass
class Notice:
    image_id: int
    duplicates: list[Duplicate] = field(default_factory=list)
    threshold: int = 12
    checked: str = ""


def notice_pairs(notice: Notice) -> list[list[str]]:
    """The key-value pairs of the notice, in the documented order."""
    pairs = [["iscc:duplicates", str(len(notice.duplicates))]]
    for d in notice.duplicates[:MAX_NAMED]:
        where = f"Image:{d.image_id}"
        if d.kind in ("similar", "similar_pixels"):
            where += f" (distance {d.distance} of {d.bits} bits)"
        pairs.append([f"iscc:{d.kind}", where])
    if len(notice.duplicates) > MAX_NAMED:
        pairs.append(["iscc:more", str(len(notice.duplicates) - MAX_NAMED)])
    pairs += [
        ["iscc:threshold", str(notice.threshold)],
        ["iscc:checked", notice.checked or utc_timestamp()],
        ["iscc:processor", f"omero-iscc {__version__}"],
        ["iscc:version", NOTICE_VERSION],
    ]
    return pairs


def event(notice: Notice, server: str | None, namespace: str) -> dict:
    """The webhook event of a notice written: what the notice says, no more."""
    return {
        "event": "duplicates",
        "image_id": notice.image_id,
        "namespace": namespace,
        "duplicates": [vars(d) for d in notice.duplicates[:MAX_NAMED]],
        "more": max(0, len(notice.duplicates) - MAX_NAMED),
        "threshold": notice.threshold,
        "timestamp": notice.checked,
        "server": server,
    }


def _newest(links: Iterable[CodeLink]) -> dict[int, CodeLink]:
    """Per image its newest code link (the newest annotation's)."""
    out: dict[int, CodeLink] = {}
    for link in links:
        old = out.get(link.image)
        if old is None or (link.annotation, link.link) > (old.annotation, old.link):
            out[link.image] = link
    return out


def check(
    omero: Omero, kept: KeptIndex, image_ids: list[int], threshold: int
) -> tuple[dict[int, Notice], dict[int, object]]:
    """The notice of each image (possibly without duplicates), from its current codes; and the
    images whose check could not run, with why. ``kept`` has the images' codes already."""
    images = {im.getId().val: im for im in omero.images(image_ids)}
    own = {space: _newest(omero.code_links_of(ns, image_ids=list(images))) for space, ns in kept.namespaces.items()}
    sessions: dict[tuple[int, int], tuple] = {}
    failed: dict[int, object] = {}
    queries: list[dict] = []
    asked: list[tuple[int, str, CodeLink, tuple[int, int]]] = []
    for image_id, image in sorted(images.items()):
        details = image.getDetails()
        key = (details.getOwner().getId().val, details.getGroup().getId().val)
        if key not in sessions:
            try:
                session = omero.owner_session(image)
                sessions[key] = (session, Reader.of(session.session_view()))
            except NotPermitted as exc:
                sessions[key] = (None, exc)
        session, reader = sessions[key]
        if session is None:
            failed[image_id] = reader
            continue
        for space, links in own.items():
            link = links.get(image_id)
            code = link.values.get(CODE_KEYS[space]) if link is not None else None
            if not code:
                continue
            query = {"id": link.link, "iscc": code, "code": space}
            visible = reader.visible()
            if visible is not None:
                query["visible"] = visible
            queries.append(query)
            asked.append((image_id, space, link, key))
    answers = kept.index.query(queries, threshold)
    # The matched links, resolved to images in the owner's session (the server's own filter).
    wanted: dict[tuple[int, int], set[int]] = {}
    for (_image, _space, _link, key), answer in zip(asked, answers):
        wanted.setdefault(key, set()).update(m["id"] for m in answer.get("matches", []))
    resolved: dict[tuple[int, int], tuple[dict, set]] = {}
    for key, ids in wanted.items():
        session = sessions[key][0]
        links = session.link_images(sorted(ids)) if ids else {}
        readable = set(session.existing_ids("Image", sorted({i for i, _ in links.values()}))) if links else set()
        resolved[key] = (links, readable)
    notices = {i: Notice(i, threshold=threshold, checked=utc_timestamp()) for i in images if i not in failed}
    best: dict[int, dict[int, Duplicate]] = {}
    for (image_id, space, link, key), answer in zip(asked, answers):
        if "error" in answer:
            log.warning("image %d: the index refused its %s code: %s", image_id, space, answer["error"])
            continue
        links, readable = resolved[key]
        for m in answer["matches"]:
            other = links.get(m["id"])
            if other is None:
                continue  # gone, or not readable by the owner
            other_image, other_annotation = other
            if other_image == image_id or other_annotation == link.annotation or other_image not in readable:
                continue
            found = Duplicate(_KIND[(space, m["match"])], other_image, int(m["distance"]), int(m["bits"]))
            mine = best.setdefault(image_id, {})
            if other_image not in mine or found.sort_key() < mine[other_image].sort_key():
                mine[other_image] = found
    for image_id, found in best.items():
        notices[image_id].duplicates = sorted(found.values(), key=Duplicate.sort_key)
    return notices, failed


def _comparable(pairs: Iterable) -> list[tuple[str, str]]:
    return [(k, v) for k, v in pairs if k not in ("iscc:checked", "iscc:processor")]


def write(omero: Omero, notices: dict[int, Notice], namespace: str) -> tuple[list[Notice], dict[int, object]]:
    """Writes each changed notice (an image without duplicates gets none, and loses one it
    had); returns the notices written and the images whose notice could not be saved."""
    if not notices:
        return [], {}
    images = {im.getId().val: im for im in omero.images(list(notices))}
    existing = omero.iscc_annotations(list(images), namespace)
    to_save: list[Notice] = []
    retire: dict[int, list[int]] = {}
    for image_id, notice in notices.items():
        old = sorted(existing.get(image_id, []), key=lambda a: a.getId().val)
        old_ids = [a.getId().val for a in old]
        if old and len(old) == 1:
            had = _comparable((nv.name, nv.value) for nv in (old[-1].getMapValue() or []))
            if had == _comparable(notice_pairs(notice)) and notice.duplicates:
                continue
        if notice.duplicates:
            to_save.append(notice)
        if old_ids:
            retire[image_id] = old_ids
    failed: dict[int, object] = {}
    written: list[Notice] = []
    if to_save:
        saved = omero.save_shared_annotations(
            [([images[n.image_id]], None, n) for n in to_save], namespace, notice_pairs, lambda *_: None
        )
        for n in to_save:
            result = saved.get(n.image_id)
            if result is None or isinstance(result, BaseException):
                if result is not None and is_connection_error(result):
                    raise result
                failed[n.image_id] = result
                retire.pop(n.image_id, None)  # the old notice stays until a new one exists
            else:
                written.append(n)
    old = sorted({a for ids in retire.values() for a in ids})
    if old:
        left = omero.delete_annotations(old)
        if left:
            log.warning("duplicates notices %s could not be deleted after their replacement", left)
    return written, failed


@dataclass
class ImportChecks:
    """The scheduler's index and duplicates notices, run at the end of each poll."""

    kept: KeptIndex
    threshold: int = 12
    namespace: str = DUPLICATES_NAMESPACE
    notify: Callable[[dict], None] = lambda _notice: None
    server: str | None = None

    def after_poll(self, omero: Omero, annotated: Iterable[int], full: bool = True) -> None:
        """Brings the index up to date, then checks the images annotated in this poll (and
        those still waiting from earlier ones). A lost connection propagates (the images wait
        for the next poll); an index that cannot be used is logged and retried next poll.
        ``full``: see ``KeptIndex.step``."""
        st = self.kept.state
        waiting = sorted(set(st.pending) | set(annotated))
        st.pending = waiting[-MAX_PENDING:]
        if len(waiting) > MAX_PENDING:
            log.warning("duplicates: %d image(s) left unchecked (too many waiting)", len(waiting) - MAX_PENDING)
        try:
            self.kept.step(omero, full)
            if st.pending:
                notices, failed = check(omero, self.kept, st.pending, self.threshold)
                written, unsaved = write(omero, notices, self.namespace)
                for notice in written:
                    log.info("image %d: duplicates notice: %d image(s)", notice.image_id, len(notice.duplicates))
                    self.notify(event(notice, self.server, self.namespace))
                for image_id, why in {**failed, **unsaved}.items():
                    log.warning("image %d: no duplicates notice: %s", image_id, why)
                st.pending = []
        except (IndexFailure, WorkerError, OSError) as exc:
            log.error("code index: %s (retried next poll)", exc)
        finally:
            self.kept.save()

    def defer(self, images: Iterable[int]) -> None:
        """Keeps the images for the next poll's checks (a stop, a lost server)."""
        st = self.kept.state
        st.pending = sorted(set(st.pending) | set(images))[-MAX_PENDING:]
        self.kept.save()


def import_checks(cfg, worker: str, notify: Callable[[dict], None]) -> ImportChecks:
    """The scheduler's checks for its configuration (``cfg``: ``config.Config``)."""
    kept = KeptIndex(
        worker,
        cfg.state_dir,
        {"files": cfg.namespace, "pixels": cfg.pixels_namespace},
        reconcile_polls=cfg.index_reconcile_polls,
        # Readers trust the index for three polls (at least ten minutes) after an update.
        fresh_for=max(600.0, 3 * cfg.poll_interval),
    )
    return ImportChecks(kept, cfg.duplicates_threshold, cfg.duplicates_namespace, notify, cfg.host)
