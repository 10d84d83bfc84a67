"""The pixel code of images (IMAGEWALK): their planes read through OMERO's RawPixelsStore at
full resolution, in walk order (Z, then C, then T, T innermost), each plane's bytes as the
server gives them (big-endian, rows in order), hashed by the worker's ``pixels`` command, a
batch of images per worker process.

A plane that fits the memory budget is read with ``getPlane``; a larger one, or one the
server refuses as larger than its maximum plane size, as full-width strips with ``getTile``,
which concatenated top to bottom are the same bytes. Reading runs a few pieces ahead of the
hashing (``worker.READ_AHEAD``), so memory is bounded by a few strips whatever the image.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .config import WorkerLimits, worker_limits
from .connection import is_connection_error
from .gateway import Omero, PlaneTooLarge
from .layout import PixelRecord, utc_timestamp
from .worker import PixelJob, PixelResult, run_pixels

#: Bytes per pixel of OMERO's pixel types. ``bit`` images are served one byte per pixel
#: (0 or 1), as Bio-Formats decodes them; the code is over those bytes, and a server that
#: returned packed bits would fail the length check below rather than give a code.
BYTES_PER_PIXEL = {
    "bit": 1,
    "int8": 1,
    "uint8": 1,
    "int16": 2,
    "uint16": 2,
    "int32": 4,
    "uint32": 4,
    "float": 4,
    "double": 8,
}
#: A plane larger than this is read as strips (bytes).
STRIP_BYTES = 16 << 20
#: OMERO's default maximum plane width and height (``omero.pixeldata.max_plane_width`` and
#: ``_height``): a plane wider or taller is read as strips without asking for it whole. A
#: server set lower refuses the plane, and strips are read then.
MAX_PLANE_SIDE = 3192
#: Images per worker process.
BATCH = 50


class PixelsError(Exception):
    """An image whose pixels cannot be walked (unknown type, a short plane)."""


@dataclass
class PixelsInfo:
    """One image's pixels, as ``Omero.pixels_of`` describes them."""

    image_id: int
    pixels_id: int
    size_x: int
    size_y: int
    size_z: int
    size_c: int
    size_t: int
    pixel_type: str
    name: str = ""
    format: str = ""
    group_id: int = -1

    @classmethod
    def from_row(cls, row: list) -> PixelsInfo:
        image_id, pixels_id, x, y, z, c, t, ptype, name, fmt, group = row
        return cls(image_id, pixels_id, x, y, z, c, t, ptype or "", name or "", fmt or "", group)

    @property
    def bytes_per_pixel(self) -> int:
        try:
            return BYTES_PER_PIXEL[self.pixel_type]
        except KeyError:
            raise PixelsError(f"pixel type {self.pixel_type!r} is not one OMERO defines") from None

    @property
    def row_bytes(self) -> int:
        return self.size_x * self.bytes_per_pixel

    @property
    def plane_bytes(self) -> int:
        return self.row_bytes * self.size_y

    @property
    def planes(self) -> int:
        return self.size_z * self.size_c * self.size_t

    @property
    def dimensions(self) -> str:
        return f"{self.size_x}x{self.size_y}x{self.size_z}x{self.size_c}x{self.size_t}"


def pixels_infos(omero: Omero, image_ids: list[int]) -> dict[int, PixelsInfo]:
    """The pixels of the images that have them, by image id (one paged query)."""
    return {row[0]: PixelsInfo.from_row(row) for row in omero.pixels_of(image_ids)}


def walk(info: PixelsInfo) -> Iterator[tuple[int, int, int]]:
    """(z, c, t) of every plane in IMAGEWALK order: Z outermost, T innermost."""
    for z in range(info.size_z):
        for c in range(info.size_c):
            for t in range(info.size_t):
                yield z, c, t


def _checked(data: bytes, want: int, what: str) -> bytes:
    if len(data) != want:
        raise PixelsError(f"the server returned {len(data)} bytes for {what} of {want} bytes")
    return data


def plane_pieces(reader, info: PixelsInfo, z: int, c: int, t: int, strip_bytes: int = STRIP_BYTES) -> Iterator[bytes]:
    """One plane's bytes: whole, or as full-width strips of at most ``strip_bytes`` (at least
    one row) when it is larger or the server refuses it whole."""
    where = f"plane z={z} c={c} t={t}"
    if info.plane_bytes <= strip_bytes and max(info.size_x, info.size_y) <= MAX_PLANE_SIDE:
        try:
            yield _checked(reader.plane(z, c, t), info.plane_bytes, where)
            return
        except PlaneTooLarge:
            pass  # the server's maximum plane size is below ours: read strips
    rows = max(1, strip_bytes // info.row_bytes)
    for y in range(0, info.size_y, rows):
        h = min(rows, info.size_y - y)
        data = reader.tile(z, c, t, 0, y, info.size_x, h)
        yield _checked(data, h * info.row_bytes, f"rows {y}-{y + h - 1} of {where}")


def image_pieces(omero: Omero, info: PixelsInfo, strip_bytes: int = STRIP_BYTES) -> Iterator[bytes]:
    """Every plane of the image in walk order, through one RawPixelsStore."""
    reader = omero.open_pixels(info.pixels_id, info.group_id)
    try:
        for z, c, t in walk(info):
            yield from plane_pieces(reader, info, z, c, t, strip_bytes)
    finally:
        reader.close()


def compute_pixels(
    omero: Omero,
    infos: list[PixelsInfo],
    worker: str,
    simprints: bool = False,
    detach: bool = False,
    strip_bytes: int = STRIP_BYTES,
    limits: WorkerLimits | None = None,
) -> dict[int, PixelResult]:
    """The pixel codes of the images, ``BATCH`` per worker run. A failure of one image is its
    result's error; a lost connection is raised."""
    out: dict[int, PixelResult] = {}
    for start in range(0, len(infos), BATCH):
        batch = infos[start : start + BATCH]
        jobs = []
        for info in batch:
            try:
                plane_bytes = info.plane_bytes
            except PixelsError as exc:
                out[info.image_id] = PixelResult(str(info.image_id), error_kind="invalid_input", error=str(exc))
                continue
            jobs.append(PixelJob(str(info.image_id), info.planes, plane_bytes, image_pieces(omero, info, strip_bytes)))
        results = run_pixels(
            worker, jobs, simprints=simprints, detach=detach, fatal=is_connection_error, **worker_limits(limits)
        )
        for job in jobs:
            out[int(job.id)] = results[job.id]
    return out


def pixel_record(info: PixelsInfo, result: PixelResult) -> PixelRecord:
    """The annotation record of a computed pixel code."""
    units = result.units or [None, None]
    return PixelRecord(
        iscc=result.iscc or "",
        data=units[0],
        instance=units[1],
        datahash=result.datahash,
        dimensions=info.dimensions,
        pixel_type=info.pixel_type,
        planes=result.planes,
        timestamp=utc_timestamp(),
        simprints=result.simprints,
    )
