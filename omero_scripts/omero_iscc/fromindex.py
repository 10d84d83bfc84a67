"""``find`` and ``duplicates`` answered from the scheduler's code index, when it keeps one
(``codeindex.open_kept``); the server read of ``duplicates.py`` is the fallback.

Both answers are the same, by construction: the index holds one row per image link of a code
annotation, as the server read yields one record per link, in the same (link id) order; a
reader sees the rows of their view (``codeindex.Reader``); the same comparison rule decides a
match (the Data-Codes' distance over 128 bits with the threshold doubled when both codes are
wide, else over 64 bits). Only the images an answer names are then read from the server, in
the reader's session, which leaves out anything the reader may not read.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

from .codeindex import CodeIndex, IndexFailure, Reader, open_kept
from .config import Config
from .connection import session
from .duplicates import Coded, _describe, wanted_codes
from .duplicates import find as find_on_server
from .gateway import Omero
from .layout import PIXELS
from .statuses import ExitStatus
from .worker import WorkerError, find_worker

log = logging.getLogger(__name__)

_KEYS = {"files": "iscc:sum", "pixels": "iscc:pixels"}


class IndexSource:
    """The codes a reader sees, from the index, for ``duplicates.find_duplicates``: one record
    per image link, named by the link's id; :meth:`images_of` resolves the ids a report names."""

    def __init__(self, omero: Omero, index: CodeIndex) -> None:
        self.omero = omero
        self.index = index
        self.reader = Reader.of(omero.session_view())

    def codes(self, space: str) -> Iterator[tuple[int, dict]]:
        for row in self.index.rows():
            if row.get("code", "files") == space and self.reader.may_see(row["group"], row["owner"]):
                yield row["id"], {_KEYS[space]: row["iscc"]}

    def images_of(self, link_ids: list[int]) -> dict[int, int]:
        """Link id -> image id, for the links the reader may read."""
        return {link: image for link, (image, _ann) in self.omero.link_images(link_ids).items()}


def index_source(omero: Omero, state_dir: str | None, worker: str, namespaces: dict[str, str]) -> IndexSource | None:
    index = open_kept(state_dir, worker, namespaces)
    return IndexSource(omero, index) if index is not None else None


def find(
    omero: Omero,
    index: CodeIndex,
    query: str,
    namespace: str,
    threshold: int = 12,
    pixels_namespace: str = PIXELS.namespace,
) -> list[tuple[Coded, int]]:
    """``duplicates.find`` from the index: the same hits, in the same order."""
    wanted = wanted_codes(omero, query, namespace, pixels_namespace)
    visible = Reader.of(omero.session_view()).visible()
    queries = []
    for space, code in wanted.items():
        q: dict = {"iscc": code, "code": space}
        if visible is not None:
            q["visible"] = visible
        queries.append(q)
    answers = index.query(queries, threshold)
    matches = [(space, m) for space, a in zip(wanted, answers) for m in a.get("matches", [])]
    images = omero.link_images(sorted({m["id"] for _, m in matches}))
    best: dict[tuple[int, str], tuple[str, int]] = {}
    for space, m in matches:
        found = images.get(m["id"])
        if found is None:
            continue  # gone, or not readable by this session
        key = (found[0], space)
        if m["distance"] < best.get(key, ("", 1 << 30))[1]:
            best[key] = (m["iscc"], m["distance"])
    described = {im.getId().val: _describe(im) for im in omero.images(sorted({i for i, _ in best}))}
    hits = []
    for (i, space), (iscc, d) in best.items():
        if i in described:
            hits.append((Coded(i, *described[i], iscc, None, code=space), d))
    hits.sort(key=lambda h: (h[1], h[0].image_id, h[0].code))
    return hits


def find_command(cfg: Config, connect, query: str, threshold: int, out=None) -> int:
    """``find``: from the index when the scheduler keeps one here, else from the server."""
    out = out or sys.stdout
    namespaces = {"files": cfg.namespace, "pixels": cfg.pixels_namespace}
    with session(cfg, connect) as omero:
        try:
            hits, where = _find(omero, cfg, namespaces, query, threshold)
        except (ValueError, LookupError) as exc:
            print(f"omero-iscc: {exc}", file=sys.stderr)
            return ExitStatus.USAGE
    for c, d in hits:
        kind = "identical" if d == 0 else f"~{d:02d}"
        print(f"{kind:9} {c.code:6} image {c.image_id}  {c.iscc}  {c.name}  ({c.owner}, {c.group})", file=out)
    print(f"{len(hits)} image(s) within {threshold} bits ({where})", file=sys.stderr)
    return ExitStatus.SUCCESS


def _find(omero: Omero, cfg: Config, namespaces: dict, query: str, threshold: int) -> tuple[list, str]:
    worker = _worker(cfg.worker)
    index = open_kept(cfg.state_dir, worker, namespaces) if worker and cfg.index else None
    if index is not None:
        try:
            return find(omero, index, query, cfg.namespace, threshold, cfg.pixels_namespace), "from the code index"
        except (IndexFailure, WorkerError, OSError) as exc:
            log.warning("code index: %s; reading the server instead", exc)
    hits = find_on_server(omero, query, cfg.namespace, threshold, cfg.pixels_namespace)
    return hits, "from the server's annotations"


def _worker(configured: str | None) -> str | None:
    try:
        return find_worker(configured)
    except WorkerError:
        return None


def source_for(omero: Omero, state_dir: str | None, worker: str, namespace: str, pixels_namespace: str):
    """``find_duplicates``' ``source`` for a server-wide report: the index's, or ``None``."""
    return index_source(omero, state_dir, worker, {"files": namespace, "pixels": pixels_namespace})
