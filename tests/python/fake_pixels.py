"""The stand-in server's pixels: a RawPixelsStore that serves planes as OMERO does, and the
``Pixels`` query. It refuses what a real one refuses (``../shared/reference/omero-server.md``):

- ``getPlane`` of a plane wider or taller than the server's maximum plane size
  (``max_plane``; 3192 × 3192 by default) raises ``ApiUsageException``; ``getTile`` reads any
  region inside the plane, and refuses one outside it.
- A pyramid's levels are numbered from the smallest: level 0 is the lowest resolution and is
  where a new store starts here, so a reader that does not set the full level explicitly
  gets derived (subsampled) data and a wrong code.
- ``setPixelsId`` on an image the session cannot read raises ``SecurityViolation``; on pixels
  whose files are gone, ``ResourceError``.
- Planes are big-endian, rows in order; ``bit`` images one byte per pixel (Bio-Formats).

Every store call is counted on the server (``calls``), so tests can see strips being read.
"""

from __future__ import annotations

from dataclasses import dataclass

import omero
from omero.rtypes import rint, rlong, rstring

#: OMERO's default ``omero.pixeldata.max_plane_width`` / ``max_plane_height``.
MAX_PLANE = (3192, 3192)


@dataclass
class PixelsRec:
    id: int
    image: int
    sizes: tuple  # X, Y, Z, C, T
    pixel_type: str
    bytes_per_pixel: int
    #: The whole array, big-endian, T slowest, then C, then Z, then Y, then X.
    data: bytes
    levels: int = 1
    format: str | None = "OMETiff"
    #: Why the server cannot serve these pixels (its files missing from the repository):
    #: ``setPixelsId`` raises ``ResourceError`` with it.
    broken: str | None = None

    def plane(self, z: int, c: int, t: int) -> bytes:
        x, y, size_z, size_c, _ = self.sizes
        plane = x * y * self.bytes_per_pixel
        start = ((t * size_c + c) * size_z + z) * plane
        return self.data[start : start + plane]


def add_pixels(server, image_id: int, sizes: tuple, pixel_type: str, bytes_per_pixel: int, data: bytes, **kw) -> int:
    """Gives an image its pixels: ``data`` big-endian in T, C, Z, Y, X order."""
    x, y, z, c, t = sizes
    assert len(data) == x * y * z * c * t * bytes_per_pixel, "the array does not fill the sizes"
    pid = next(server.ids)
    server.pixels[image_id] = PixelsRec(pid, image_id, tuple(sizes), pixel_type, bytes_per_pixel, data, **kw)
    return pid


class RawPixelsStore:
    def __init__(self, server, conn) -> None:
        self.server, self.conn = server, conn
        self.rec: PixelsRec | None = None
        self.level = 0

    def _count(self, method: str) -> None:
        self.server.call(method)

    def setPixelsId(self, pixels_id, bypass_original_file, ctx=None):  # noqa: N802 - OMERO's API
        self._count("setPixelsId")
        rec = next((p for p in self.server.pixels.values() if p.id == pixels_id), None)
        image = self.server.images_.get(rec.image) if rec else None
        if image is None or not self.server.can_read(self.conn.user, image.owner, image.group):
            raise omero.SecurityViolation(None, None, f"pixels {pixels_id} are not readable")
        if rec.broken:
            raise omero.ResourceError(None, None, rec.broken)
        self.rec, self.level = rec, 0

    def getResolutionLevels(self, ctx=None) -> int:  # noqa: N802
        return self.rec.levels

    def setResolutionLevel(self, level: int, ctx=None) -> None:  # noqa: N802
        if not 0 <= level < self.rec.levels:
            raise omero.ApiUsageException(None, None, f"no resolution level {level}")
        self.level = level

    def _served(self, z: int, c: int, t: int) -> tuple[bytes, int, int]:
        """The plane at the current level: full resolution at the last level, every 2^k-th
        pixel of every 2^k-th row k levels below it."""
        x, y = self.rec.sizes[:2]
        data = self.rec.plane(z, c, t)
        step = 1 << (self.rec.levels - 1 - self.level)
        if step == 1:
            return data, x, y
        bpp = self.rec.bytes_per_pixel
        rows = [data[r * x * bpp : (r + 1) * x * bpp] for r in range(0, y, step)]
        sub = b"".join(b"".join(row[i * bpp : (i + 1) * bpp] for i in range(0, x, step)) for row in rows)
        return sub, len(range(0, x, step)), len(rows)

    def getPlane(self, z, c, t, ctx=None) -> bytes:  # noqa: N802
        self._count("getPlane")
        data, x, y = self._served(z, c, t)
        max_w, max_h = self.server.max_plane
        if x > max_w or y > max_h:
            raise omero.ApiUsageException(None, None, f"plane {x}x{y} exceeds the maximum plane size {max_w}x{max_h}")
        return data

    def getTile(self, z, c, t, x, y, w, h, ctx=None) -> bytes:  # noqa: N802
        self._count("getTile")
        data, size_x, size_y = self._served(z, c, t)
        if x < 0 or y < 0 or w < 1 or h < 1 or x + w > size_x or y + h > size_y:
            raise omero.ApiUsageException(None, None, f"tile {x},{y} {w}x{h} outside the plane {size_x}x{size_y}")
        bpp = self.rec.bytes_per_pixel
        row = size_x * bpp
        return b"".join(data[(y + r) * row + x * bpp : (y + r) * row + (x + w) * bpp] for r in range(h))

    def close(self) -> None:
        self._count("closeRawPixelsStore")
        self.rec = None


def h_pixels(server, uid, hql, v, m):
    rows = []
    for image_id in sorted(set(v["ids"])):
        image = server.images_.get(image_id)
        rec = server.pixels.get(image_id)
        if image is None or rec is None or not server.can_read(uid, image.owner, image.group):
            continue
        x, y, z, c, t = rec.sizes
        fmt = rstring(rec.format) if rec.format else None
        rows.append(
            [rlong(image_id), rlong(rec.id), rint(x), rint(y), rint(z), rint(c), rint(t)]
            + [rstring(rec.pixel_type), rstring(image.name), fmt, rlong(image.group)]
        )
    return rows, len(rows)
