"""Finding identical and near-identical images from their ISCC annotations.

The grouping itself is the worker's ``similar`` command (exact, indexed, scales to millions of
codes); this module gathers the codes the user can see, runs it, and turns its groups into a
report with image names, owners and groups. Four kinds of group: ``identical`` and ``similar``
files (the files' code), ``same_pixels`` (the same pixel code on images whose files differ: the
same image in two formats, or imported twice after a conversion) and ``similar_pixels``.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Callable, Protocol

from . import spreadsheet
from .gateway import Omero, _val
from .layout import PIXELS, newest_pixel_record, newest_record
from .pixels import pixels_infos
from .statuses import ExitStatus
from .worker import Streamed, WorkerError


@dataclass
class Coded:
    image_id: int
    name: str
    owner: str
    group: str
    iscc: str
    datahash: str | None
    #: Pixel groups: the reader's format and the files' code, side by side.
    format: str = ""
    files_iscc: str = ""
    #: Which code this is: ``files`` or ``pixels``.
    code: str = "files"


#: What each kind of group is, for messages.
KINDS = {
    "identical": "identical images",
    "similar": "similar images",
    "same_pixels": "same pixels in different files",
    "similar_pixels": "similar pixels",
}


@dataclass
class DuplicateReport:
    groups: list[dict] = field(default_factory=list)  # {"kind", "members": [(Coded, distance)]}
    without_iscc: list[tuple[int, str]] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(1 for g in self.groups if g["kind"] == kind)

    def message(self, limit: int = 10) -> str:
        dup_images = sum(len(g["members"]) for g in self.groups if g["kind"] == "identical")
        msg = (
            f"{self.count('identical')} group(s) of identical images ({dup_images} images), "
            f"{self.count('similar')} group(s) of similar images"
        )
        if self.count("same_pixels") or self.count("similar_pixels"):
            msg += (
                f", {self.count('same_pixels')} group(s) with the same pixels in different files, "
                f"{self.count('similar_pixels')} group(s) of similar pixels"
            )
        if self.without_iscc:
            names = ", ".join(f"{name} ({i})" for i, name in self.without_iscc[:limit])
            more = f" and {len(self.without_iscc) - limit} more" if len(self.without_iscc) > limit else ""
            msg += f"; {len(self.without_iscc)} image(s) have no ISCC yet and were not compared: {names}{more}"
        return msg


def _describe(image) -> tuple[str, str, str]:
    details = image.getDetails()
    owner = details.getOwner()
    group = details.getGroup()
    return (
        _val(image.getName()) or "",
        (_val(owner.getOmeName()) or "") if owner is not None and owner.isLoaded() else "",
        (_val(group.getName()) or "") if group is not None and group.isLoaded() else "",
    )


def coded_images(
    omero: Omero, image_ids: list[int], namespace: str
) -> tuple[list[tuple[int, dict]], list[tuple[int, str]]]:
    """The codes of the selected images (``[(image id, {key: value})]``), and the selected
    images that have no ISCC (id, name)."""
    codes: list[tuple[int, dict]] = []
    missing: list[tuple[int, str]] = []
    images = omero.images(image_ids)
    annotations = omero.iscc_annotations([im.getId().val for im in images], namespace)
    for image in images:
        record = newest_record(annotations.get(image.getId().val, []))
        if record is None:
            missing.append((image.getId().val, _val(image.getName()) or ""))
        else:
            codes.append((image.getId().val, {"iscc:sum": record.iscc, "iscc:datahash": record.datahash}))
    return codes, missing


def all_codes(omero: Omero, namespace: str) -> Iterator[tuple[int, dict]]:
    """Every annotation's code the session can see, read page by page (memory: one page)."""
    for page in omero.annotated_codes(namespace):
        yield from page


def pixel_codes(omero: Omero, image_ids: list[int] | None, namespace: str) -> Iterable[tuple[int, dict]]:
    """The pixel codes of the selected images, or of every image the session can see."""
    if image_ids is None:
        return (item for page in omero.annotated_pixel_codes(namespace) for item in page)
    annotations = omero.iscc_annotations(image_ids, namespace)
    out = []
    for image_id in image_ids:
        record = newest_pixel_record(annotations.get(image_id, []))
        if record is not None:
            out.append((image_id, {"iscc:pixels": record.iscc, "iscc:datahash": record.datahash}))
    return out


def _record_line(image_id: int, values: dict, key: str = "iscc:sum") -> bytes | None:
    code = values.get(key)
    if not code:
        return None
    datahash = values.get("iscc:datahash")
    return (
        json.dumps({"id": str(image_id), "iscc": code, **({"datahash": datahash} if datahash else {})}) + "\n"
    ).encode()


def _similar(worker: str, codes: Iterable[tuple[int, dict]], threshold: int, key: str = "iscc:sum") -> list[dict]:
    """Runs the worker's ``similar`` over the codes, streamed into it as they are read."""
    lines = (line for line in (_record_line(i, values, key) for i, values in codes) if line)
    run = Streamed([worker, "similar", "--json", "--threshold", str(threshold), "-"], lines)
    out = run.read()
    status = run.finish()
    if run.failure is not None:
        raise run.failure
    if status not in (ExitStatus.SUCCESS, ExitStatus.FAILURE):
        raise WorkerError(f"omero-iscc similar failed: {run.stderr.decode(errors='replace').strip()}")
    return [json.loads(raw) for raw in out.splitlines()]


def _groups(
    worker: str,
    codes: Iterable[tuple[int, dict]],
    threshold: int,
    key: str,
    image_of: Callable[[list[int]], dict[int, int]] | None = None,
) -> list[tuple[str, list]]:
    """The worker's groups as (kind, [(image id, code, distance)]), an image once per group.
    ``image_of``: the records' ids are not image ids (a code source's own ids, such as the
    index's link ids): it maps the ids the groups name to images (an id it leaves out is
    dropped)."""
    found = []
    groups = _similar(worker, codes, threshold, key)
    images = image_of(sorted({int(m["id"]) for g in groups for m in g["members"]})) if image_of else None
    for group in groups:
        members, seen = [], set()
        for m in group["members"]:
            image_id = int(m["id"]) if images is None else images.get(int(m["id"]))
            if image_id is not None and image_id not in seen:  # an image with two annotations is one member
                seen.add(image_id)
                members.append((image_id, m["iscc"], m["distance"]))
        if len(members) > 1:
            found.append((group["kind"], members))
    return found


class CodeSource(Protocol):
    """Every code a reader sees, from elsewhere than the server (fromindex.py)."""

    def codes(self, space: str) -> Iterable[tuple[int, dict]]: ...
    def images_of(self, ids: list[int]) -> dict[int, int]: ...


def find_duplicates(
    omero: Omero,
    image_ids: list[int] | None,
    worker: str,
    namespace: str,
    threshold: int = 12,
    pixels_namespace: str = PIXELS.namespace,
    source: CodeSource | None = None,
) -> DuplicateReport:
    """Groups of identical and similar images: of the selection, or (``None``) of every image
    the user can see, read page by page and streamed into the worker; then the groups of
    their pixel codes: the same pixels in different files, and similar pixels. ``source``:
    where every code comes from instead of the server read (the code index, fromindex.py)."""
    image_of = None
    if image_ids is None and source is not None:
        codes: Iterable[tuple[int, dict]] = source.codes("files")
        pixels: Iterable[tuple[int, dict]] = source.codes("pixels")
        image_of = source.images_of
        missing: list[tuple[int, str]] = []
    elif image_ids is None:
        codes, pixels, missing = all_codes(omero, namespace), pixel_codes(omero, None, pixels_namespace), []
    else:
        codes, missing = coded_images(omero, image_ids, namespace)
        pixels = pixel_codes(omero, image_ids, pixels_namespace)
    report = DuplicateReport(without_iscc=missing)
    found = _groups(worker, codes, threshold, "iscc:sum", image_of)
    pixel_groups = _groups(worker, pixels, threshold, "iscc:pixels", image_of)
    members = sorted({i for _, group in found + pixel_groups for i, _, _ in group})
    described = {im.getId().val: _describe(im) for im in omero.images(members)}
    for kind, group in found:
        rows = []
        for image_id, iscc, distance in group:
            name, owner, grp = described.get(image_id, ("", "", ""))
            rows.append((Coded(image_id, name, owner, grp, iscc, None), distance))
        report.groups.append({"kind": kind, "members": rows})
    report.groups += _pixel_groups(omero, pixel_groups, described, namespace)
    return report


def _pixel_groups(omero: Omero, found: list, described: dict, namespace: str) -> list[dict]:
    """Pixel groups with each member's format and files' code; an identical one only when the
    files differ (else it repeats a group of identical files)."""
    ids = sorted({i for _, group in found for i, _, _ in group})
    if not ids:
        return []
    formats = {i: info.format for i, info in pixels_infos(omero, ids).items()}
    annotations = omero.iscc_annotations(ids, namespace)
    files = {i: (r.iscc if r is not None else "") for i, r in ((i, newest_record(annotations.get(i, []))) for i in ids)}
    out = []
    for kind, group in found:
        if kind == "identical" and len({files[i] or f"none:{i}" for i, _, _ in group}) == 1:
            continue
        rows = []
        for image_id, iscc, distance in group:
            name, owner, grp = described.get(image_id, ("", "", ""))
            coded = Coded(image_id, name, owner, grp, iscc, None, formats.get(image_id, ""), files[image_id], "pixels")
            rows.append((coded, distance))
        out.append({"kind": "same_pixels" if kind == "identical" else "similar_pixels", "members": rows})
    return out


CSV_COLUMNS = [
    "group",
    "kind",
    "image_id",
    "image_name",
    "owner",
    "group_name",
    "iscc",
    "distance",
    "format",
    "files_iscc",
]


def to_csv(report: DuplicateReport) -> bytes:
    buf = io.StringIO()
    w = spreadsheet.Writer(buf)
    w.writerow(CSV_COLUMNS)
    for n, group in enumerate(report.groups, 1):
        for c, distance in group["members"]:
            w.writerow(
                [n, group["kind"], c.image_id, c.name, c.owner, c.group, c.iscc, distance, c.format, c.files_iscc]
            )
    for image_id, name in report.without_iscc:
        w.writerow(["", "no_iscc", image_id, name, "", "", "", "", "", ""])
    return buf.getvalue().encode("utf-8")


def data_bits(iscc: str) -> tuple[int, int]:
    """(Data-Code bits, their count) of an ISCC-SUM: 64 for narrow, 128 for wide codes."""
    body = iscc.removeprefix("ISCC:")
    raw = base64.b32decode(body + "=" * (-len(body) % 8))
    width = 16 if iscc.startswith("ISCC:K4") else 8
    return int.from_bytes(raw[2 : 2 + width], "big"), width * 8


def distance(a: str, b: str) -> int:
    """Hamming distance of two ISCC-SUMs' Data-Codes (on the narrower width if they differ)."""
    (x, nx), (y, ny) = data_bits(a), data_bits(b)
    n = min(nx, ny)
    return bin((x >> (nx - n)) ^ (y >> (ny - n))).count("1")


def wanted_codes(omero: Omero, query: str, namespace: str, pixels_namespace: str) -> dict[str, str]:
    """The codes a ``find`` looks for, by kind (``files``, ``pixels``): an ISCC stands for
    both; an image id for its own codes. ``ValueError`` for a malformed code, ``LookupError``
    for an image without a code the session can see."""
    if query.upper().startswith("ISCC:"):
        code = query.upper()
        data_bits(code)  # raises ValueError for a malformed code
        return {"files": code, "pixels": code}
    image_id = int(query)
    own, _ = coded_images(omero, [image_id], namespace)
    pixels = list(pixel_codes(omero, [image_id], pixels_namespace))
    wanted = {}
    if own:
        wanted["files"] = own[0][1]["iscc:sum"]
    if pixels:
        wanted["pixels"] = pixels[0][1]["iscc:pixels"]
    if not wanted:
        raise LookupError(f"image {image_id} has no ISCC annotation (or is not visible)")
    return wanted


def find(
    omero: Omero, query: str, namespace: str, threshold: int = 12, pixels_namespace: str = PIXELS.namespace
) -> list[tuple[Coded, int]]:
    """Images whose codes equal or are near ``query`` (an ISCC or an image id), nearest first.
    An ISCC is compared with the files' codes and the pixel codes; an image's own codes each
    with their kind. Every code the user can see is read page by page; only the hits are kept
    (``Coded.code`` says which kind matched)."""
    wanted = wanted_codes(omero, query, namespace, pixels_namespace)
    sources = {
        "files": ("iscc:sum", lambda: all_codes(omero, namespace)),
        "pixels": ("iscc:pixels", lambda: pixel_codes(omero, None, pixels_namespace)),
    }
    best: dict[tuple[int, str], tuple[str, int]] = {}
    for kind, code in wanted.items():
        key, codes = sources[kind]
        scale = 2 if code.startswith("ISCC:K4") else 1
        for image_id, values in codes():
            other = values.get(key)
            if not other:
                continue
            d = distance(code, other)
            limit = threshold * (scale if other.startswith("ISCC:K4") else 1)
            if d <= limit and d < best.get((image_id, kind), ("", 1 << 30))[1]:
                best[(image_id, kind)] = (other, d)
    described = {im.getId().val: _describe(im) for im in omero.images(sorted({i for i, _ in best}))}
    hits = []
    for (i, kind), (iscc, d) in best.items():
        hits.append((Coded(i, *described.get(i, ("", "", "")), iscc, None, code=kind), d))
    hits.sort(key=lambda h: (h[1], h[0].image_id, h[0].code))
    return hits
