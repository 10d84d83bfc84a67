"""The pixel code of images (IMAGEWALK): their planes read through OMERO's RawPixelsStore at
full resolution, in walk order (Z, then C, then T, T innermost), each plane's bytes as the
server gives them (big-endian, rows in order), hashed by the worker's ``pixels`` command, a
batch of images per worker process.

A plane within the server's maximum plane size (``getMaxPlaneSize``) that fits the memory
budget is read with ``getPlane``; a larger one within it as full-width strips with ``getTile``,
which concatenated top to bottom are the same bytes. A plane past the maximum plane size is
never asked for whole (the server's pixel buffer for it is a pyramid or a tile-limited one): it
is read in regions no larger than the buffer's ``getTileSize()``, a band of them at a time, and
each band's rows are reassembled from its tiles. Reading runs a few pieces ahead of the hashing
(``worker.READ_AHEAD``), so memory is bounded by a few strips or bands whatever the image.

Images are read in the order of their Filesets (a plate's wells one after the other) through
one RawPixelsStore per group, moved from image to image with ``setPixelsId``: the server opens
each image's pixel buffer from its Fileset's reader state while it is still warm, and no store
is created and closed per image. An image whose pyramid is still being built
(``MissingPyramidException``) is "not yet" (``NOT_YET``), not failed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .config import WorkerLimits, worker_limits
from .connection import is_connection_error
from .gateway import Omero, PixelReader, PyramidPending
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
#: The ``error_kind`` of an image whose pyramid the server is still building.
NOT_YET = "not_yet"
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
    #: None for an image imported before OMERO 5.
    fileset_id: int | None = None

    @classmethod
    def from_row(cls, row: list) -> PixelsInfo:
        image_id, pixels_id, x, y, z, c, t, ptype, name, fmt, group, fileset = row
        return cls(image_id, pixels_id, x, y, z, c, t, ptype or "", name or "", fmt or "", group, fileset)

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


def reading_order(info: PixelsInfo) -> tuple:
    """The sort key that reads a group's Filesets one after the other, each Fileset's images by
    id (the order of their series at import), images without a Fileset last."""
    return (info.group_id, info.fileset_id is None, info.fileset_id or 0, info.image_id)


def plane_pieces(
    reader: PixelReader,
    info: PixelsInfo,
    z: int,
    c: int,
    t: int,
    max_plane: tuple[int, int],
    strip_bytes: int = STRIP_BYTES,
) -> Iterator[bytes]:
    """One plane's bytes: whole, as full-width strips of at most ``strip_bytes`` (at least
    one row), or, past ``max_plane``, as bands of tiles no larger than the tile size."""
    where = f"plane z={z} c={c} t={t}"
    if info.size_x > max_plane[0] or info.size_y > max_plane[1]:
        yield from _tiled(reader, info, z, c, t, max_plane, strip_bytes, where)
        return
    if info.plane_bytes <= strip_bytes:
        yield _checked(reader.plane(z, c, t), info.plane_bytes, where)
        return
    rows = max(1, strip_bytes // info.row_bytes)
    for y in range(0, info.size_y, rows):
        h = min(rows, info.size_y - y)
        data = reader.tile(z, c, t, 0, y, info.size_x, h)
        yield _checked(data, h * info.row_bytes, f"rows {y}-{y + h - 1} of {where}")


def _tiled(
    reader: PixelReader,
    info: PixelsInfo,
    z: int,
    c: int,
    t: int,
    max_plane: tuple[int, int],
    strip_bytes: int,
    where: str,
):
    """The plane in bands of rows, each read as tiles of at most ``getTileSize()`` (and never
    larger than the maximum plane: an OME-Zarr's tile size is its chunk, which can be larger,
    and its buffer refuses a region of more pixels than the maximum plane) from left to right,
    and its rows put back together: row r of the band is row r of every tile."""
    tile_w, tile_h = reader.tile_size()
    if tile_w < 1 or tile_h < 1:
        raise PixelsError(f"the server's tile size {tile_w}x{tile_h} cannot be read")
    tile_w = min(tile_w, info.size_x, max(1, max_plane[0]))
    # A band holds whole rows; its height is the tile's, lower if the budget asks for it.
    band_h = max(1, min(tile_h, max_plane[1], strip_bytes // info.row_bytes))
    bpp = info.bytes_per_pixel
    for y in range(0, info.size_y, band_h):
        h = min(band_h, info.size_y - y)
        band = bytearray(h * info.row_bytes)
        for x in range(0, info.size_x, tile_w):
            w = min(tile_w, info.size_x - x)
            what = f"the tile at x={x} y={y} of {where}"
            tile = memoryview(_checked(reader.tile(z, c, t, x, y, w, h), w * h * bpp, what))
            span = w * bpp
            for r in range(h):
                at = r * info.row_bytes + x * bpp
                band[at : at + span] = tile[r * span : (r + 1) * span]
        yield bytes(band)


class Readers:
    """The RawPixelsStore of the group in hand, moved from image to image (``setPixelsId``)
    rather than one per image; a store that failed otherwise than by a missing pyramid is
    closed and the next image gets a new one."""

    def __init__(self, omero: Omero) -> None:
        self.omero = omero
        self.current: PixelReader | None = None

    def reader(self, info: PixelsInfo) -> PixelReader:
        if self.current is not None and self.current.group_id == info.group_id:
            self.current.switch(info.pixels_id)
            return self.current
        self.close()
        self.current = self.omero.open_pixels(info.pixels_id, info.group_id)
        return self.current

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None


def image_pieces(
    readers: Readers, info: PixelsInfo, max_plane: tuple[int, int], strip_bytes: int, pending: dict[int, str]
) -> Iterator[bytes]:
    """Every plane of the image in walk order. An image waiting for its pyramid is recorded
    in ``pending`` (and its job aborted)."""
    try:
        reader = readers.reader(info)
        for z, c, t in walk(info):
            yield from plane_pieces(reader, info, z, c, t, max_plane, strip_bytes)
    except PyramidPending as exc:
        pending[info.image_id] = str(exc)
        raise
    except BaseException:
        readers.close()
        raise


def compute_pixels(
    omero: Omero,
    infos: list[PixelsInfo],
    worker: str,
    simprints: bool = False,
    detach: bool = False,
    strip_bytes: int = STRIP_BYTES,
    limits: WorkerLimits | None = None,
) -> dict[int, PixelResult]:
    """The pixel codes of the images, ``BATCH`` per worker run, read in :func:`reading_order`.
    A failure of one image is its result's error (``NOT_YET`` the kind of one whose pyramid
    is not built yet); a lost connection is raised."""
    out: dict[int, PixelResult] = {}
    infos = sorted(infos, key=reading_order)
    max_plane = omero.max_plane_size() if infos else (0, 0)
    for start in range(0, len(infos), BATCH):
        batch = infos[start : start + BATCH]
        readers = Readers(omero)
        pending: dict[int, str] = {}
        jobs = []
        for info in batch:
            try:
                plane_bytes = info.plane_bytes
            except PixelsError as exc:
                out[info.image_id] = PixelResult(str(info.image_id), error_kind="invalid_input", error=str(exc))
                continue
            pieces = image_pieces(readers, info, max_plane, strip_bytes, pending)
            jobs.append(PixelJob(str(info.image_id), info.planes, plane_bytes, pieces))
        try:
            results = run_pixels(
                worker, jobs, simprints=simprints, detach=detach, fatal=is_connection_error, **worker_limits(limits)
            )
        finally:
            readers.close()
        for job in jobs:
            result = results[job.id]
            if int(job.id) in pending:
                result.error_kind, result.error = NOT_YET, pending[int(job.id)]
            out[int(job.id)] = result
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
