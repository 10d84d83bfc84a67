"""Finding identical and near-identical images from their ISCC annotations.

The grouping itself is the worker's ``similar`` command (exact, indexed, scales to millions of
codes); this module gathers the codes the user can see, runs it, and turns its groups into a
report with image names, owners and groups.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import subprocess
import sys
from dataclasses import dataclass, field

from .config import Config
from .connection import session
from .gateway import Omero
from .layout import newest_record
from .statuses import ExitStatus
from .worker import WorkerError


@dataclass
class Coded:
    image_id: int
    name: str
    owner: str
    group: str
    iscc: str
    datahash: str | None


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
        if self.without_iscc:
            names = ", ".join(f"{name} ({i})" for i, name in self.without_iscc[:limit])
            more = f" and {len(self.without_iscc) - limit} more" if len(self.without_iscc) > limit else ""
            msg += f"; {len(self.without_iscc)} image(s) have no ISCC yet and were not compared: {names}{more}"
        return msg


def _val(x, default=""):
    return default if x is None else getattr(x, "val", x)


def _describe(image) -> tuple[str, str, str]:
    details = image.getDetails()
    owner = details.getOwner()
    group = details.getGroup()
    return (
        _val(image.getName()),
        _val(owner.getOmeName()) if owner is not None and owner.isLoaded() else "",
        _val(group.getName()) if group is not None and group.isLoaded() else "",
    )


def gather(omero: Omero, image_ids: list[int] | None, namespace: str) -> tuple[list[Coded], list[tuple[int, str]]]:
    """The coded images of the selection (or, for ``None``, every image the user can see
    that has one), and the selected images that have no ISCC."""
    coded: list[Coded] = []
    missing: list[tuple[int, str]] = []
    if image_ids is None:
        for link in omero.annotated_images(namespace):
            image = link.getParent()
            record = newest_record([link.getChild()])
            if record is not None:
                name, owner, group = _describe(image)
                coded.append(Coded(image.getId().val, name, owner, group, record.iscc, record.datahash))
        seen: set[int] = set()
        coded = [c for c in coded if not (c.image_id in seen or seen.add(c.image_id))]
        return coded, missing
    images = omero.images(image_ids)
    annotations = omero.iscc_annotations([im.getId().val for im in images], namespace)
    for image in images:
        record = newest_record(annotations.get(image.getId().val, []))
        name, owner, group = _describe(image)
        if record is None:
            missing.append((image.getId().val, name))
        else:
            coded.append(Coded(image.getId().val, name, owner, group, record.iscc, record.datahash))
    return coded, missing


def find_duplicates(
    omero: Omero, image_ids: list[int] | None, worker: str, namespace: str, threshold: int = 12
) -> DuplicateReport:
    coded, missing = gather(omero, image_ids, namespace)
    report = DuplicateReport(without_iscc=missing)
    if len(coded) < 2:
        return report
    lines = "".join(
        json.dumps({"id": str(i), "iscc": c.iscc, **({"datahash": c.datahash} if c.datahash else {})}) + "\n"
        for i, c in enumerate(coded)
    )
    proc = subprocess.run(
        [worker, "similar", "--json", "--threshold", str(threshold), "-"],
        input=lines.encode(),
        capture_output=True,
        timeout=3600,
        check=False,
    )
    if proc.returncode not in (ExitStatus.SUCCESS, ExitStatus.FAILURE):
        raise WorkerError(f"omero-iscc similar failed: {proc.stderr.decode(errors='replace').strip()}")
    for raw in proc.stdout.splitlines():
        group = json.loads(raw)
        report.groups.append(
            {
                "kind": group["kind"],
                "members": [(coded[int(m["id"])], m["distance"]) for m in group["members"]],
            }
        )
    return report


CSV_COLUMNS = ["group", "kind", "image_id", "image_name", "owner", "group_name", "iscc", "distance"]


def to_csv(report: DuplicateReport) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    for n, group in enumerate(report.groups, 1):
        for c, distance in group["members"]:
            w.writerow([n, group["kind"], c.image_id, c.name, c.owner, c.group, c.iscc, distance])
    for image_id, name in report.without_iscc:
        w.writerow(["", "no_iscc", image_id, name, "", "", "", ""])
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


def find(omero: Omero, query: str, namespace: str, threshold: int = 12) -> list[tuple[Coded, int]]:
    """Images whose ISCC equals or is near ``query`` (an ISCC or an image id), nearest first."""
    coded, _ = gather(omero, None, namespace)
    if query.upper().startswith("ISCC:"):
        code = query.upper()
        data_bits(code)  # raises ValueError for a malformed code
    else:
        image_id = int(query)
        own = [c for c in coded if c.image_id == image_id]
        if not own:
            raise LookupError(f"image {image_id} has no ISCC annotation (or is not visible)")
        code = own[0].iscc
    scale = 2 if code.startswith("ISCC:K4") else 1
    hits = []
    for c in coded:
        d = distance(code, c.iscc)
        limit = threshold * (scale if c.iscc.startswith("ISCC:K4") else 1)
        if d <= limit:
            hits.append((c, d))
    hits.sort(key=lambda h: (h[1], h[0].image_id))
    return hits


def find_command(cfg: Config, connect, query: str, threshold: int, out=None) -> int:
    out = out or sys.stdout
    with session(cfg, connect) as omero:
        try:
            hits = find(omero, query, cfg.namespace, threshold)
        except (ValueError, LookupError) as exc:
            print(f"omero-iscc: {exc}", file=sys.stderr)
            return ExitStatus.USAGE
    for c, d in hits:
        kind = "identical" if d == 0 else f"~{d:02d}"
        print(f"{kind:9} image {c.image_id}  {c.iscc}  {c.name}  ({c.owner}, {c.group})", file=out)
    print(f"{len(hits)} image(s) within {threshold} bits", file=sys.stderr)
    return ExitStatus.SUCCESS
