"""Pixels in the stand-in: a ``Pixels`` row per image with its planes in memory, and the reader
behind ``RawPixelsStore``. It refuses what a server refuses (``../shared/reference/omero-server.md``):

- ``setPixelsId`` on pixels the session cannot read: ``SecurityViolation``; whose files are
  gone: ``ResourceError``; whose pyramid is still being built: ``MissingPyramidException``
  (ome ``PixelsService``/``RawPixelsBean``: the ``omero.MissingPyramidException`` of
  ``IceMapper``, with ``pixelsID`` and ``backOff``);
- resolution levels are numbered from the smallest: level 0 is the lowest resolution and is
  where a new store starts, so a reader that does not set the full level explicitly gets
  subsampled data;
- ``getPlane`` of a plane wider or taller than the configured maximum plane size
  (``omero.pixeldata.max_plane_width``/``_height``, read by ``IConfig.getConfigValue`` as
  omero-py's ``getMaxPlaneSize`` does) raises ``ApiUsageException`` (today's stand-in rule,
  kept: a real server's answer depends on the pixel buffer);
- ``getTile`` reads any region inside the plane; on a tile-limited buffer (``tile_limited``,
  as ``ZarrPixelBuffer``) a region wider or taller than ``getTileSize()`` is refused as its
  ``IllegalArgumentException``, which ``ServiceHandler.getAndLogException`` turns into
  ``ApiUsageException``.
- Planes are big-endian, rows in order; ``bit`` images one byte per pixel (Bio-Formats).

Every store call is counted on the world (``calls``).
"""

from __future__ import annotations

import omero


def add_pixels(server, image_id: int, sizes: tuple, pixel_type: str, bytes_per_pixel: int, data: bytes, **kw) -> int:
    """Gives an image its pixels: ``data`` big-endian in T, C, Z, Y, X order. Keywords:
    ``levels`` (pyramid levels), ``format`` (the reader's name, or None), ``broken`` (why the
    server cannot serve them), ``pyramid_pending``, ``tile_limited``, ``tile`` (w, h)."""
    x, y, z, c, t = sizes
    assert len(data) == x * y * z * c * t * bytes_per_pixel, "the array does not fill the sizes"
    image = server.images_[image_id]
    existing = server.pixels.get(image_id)
    if existing is not None:
        server.remove("Pixels", existing.id)
    pixels = server.new("Pixels", image.owner, image.group, image=image_id, sizeX=x, sizeY=y, sizeZ=z, sizeC=c, sizeT=t)
    pixels.pixelsType = server.enum("PixelsType", pixel_type)
    fmt = kw.pop("format", "OMETiff")
    image.format = server.enum("Format", fmt) if fmt else None
    pixels.data = data
    pixels.bytes_per_pixel = bytes_per_pixel
    pixels.levels = kw.pop("levels", 1)
    pixels.broken = kw.pop("broken", None)
    pixels.pyramid_pending = kw.pop("pyramid_pending", False)
    pixels.tile_limited = kw.pop("tile_limited", False)
    pixels.tile = kw.pop("tile", None)
    assert not kw, f"unknown pixels options: {sorted(kw)}"
    server.pixels[image_id] = pixels
    # A legacy image's placeholder pixels keep their file map: point it at the new pixels.
    if existing is not None:
        for m in server.table("PixelsOriginalFileMap").values():
            if m.v.get("child") == existing.id:
                m.v["child"] = pixels.id
        server.changed()
    return pixels.id


def plane_of(pixels, z: int, c: int, t: int) -> bytes:
    x, y, size_z, size_c, _ = pixels.sizeX, pixels.sizeY, pixels.sizeZ, pixels.sizeC, pixels.sizeT
    plane = x * y * pixels.bytes_per_pixel
    start = ((t * size_c + c) * size_z + z) * plane
    return pixels.data[start : start + plane]


class Reader:
    def __init__(self, world, pixels) -> None:
        self.world, self.pixels = world, pixels
        self.levels = pixels.__dict__.get("levels", 1)
        self.level = 0
        self.bytes_per_pixel = pixels.__dict__.get("bytes_per_pixel", 1)

    def set_level(self, level: int) -> None:
        from .services import Refused, server_error

        if not 0 <= level < self.levels:
            raise Refused(server_error(omero.ApiUsageException, f"no resolution level {level}"))
        self.level = level

    def _size(self) -> tuple[int, int]:
        step = 1 << (self.levels - 1 - self.level)
        return len(range(0, self.pixels.sizeX, step)), len(range(0, self.pixels.sizeY, step))

    def tile_size(self) -> tuple[int, int]:
        tile = self.pixels.__dict__.get("tile")
        if tile:
            return tuple(tile)
        if self.levels > 1 or self.pixels.__dict__.get("tile_limited"):
            return (
                int(self.world.config["omero.pixeldata.tile_width"]),
                int(self.world.config["omero.pixeldata.tile_height"]),
            )
        return self._size()

    def plane_size(self):
        return self._size()

    def _served(self, z: int, c: int, t: int) -> tuple[bytes, int, int]:
        """The plane at the current level: full resolution at the last level, every 2^k-th
        pixel of every 2^k-th row k levels below it."""
        x, y = self.pixels.sizeX, self.pixels.sizeY
        data = plane_of(self.pixels, z, c, t)
        step = 1 << (self.levels - 1 - self.level)
        if step == 1:
            return data, x, y
        bpp = self.bytes_per_pixel
        rows = [data[r * x * bpp : (r + 1) * x * bpp] for r in range(0, y, step)]
        sub = b"".join(b"".join(row[i * bpp : (i + 1) * bpp] for i in range(0, x, step)) for row in rows)
        return sub, len(range(0, x, step)), len(rows)

    def plane(self, z: int, c: int, t: int) -> bytes:
        from .services import Refused, server_error

        data, x, y = self._served(z, c, t)
        max_w, max_h = self.world.max_plane
        if x > max_w or y > max_h:
            raise Refused(
                server_error(omero.ApiUsageException, f"plane {x}x{y} exceeds the maximum plane size {max_w}x{max_h}")
            )
        return data

    def tile(self, z: int, c: int, t: int, x: int, y: int, w: int, h: int) -> bytes:
        from .services import Refused, server_error

        data, size_x, size_y = self._served(z, c, t)
        if x < 0 or y < 0 or w < 1 or h < 1 or x + w > size_x or y + h > size_y:
            raise Refused(
                server_error(omero.ApiUsageException, f"tile {x},{y} {w}x{h} outside the plane {size_x}x{size_y}")
            )
        tw, th = self.tile_size()
        if self.pixels.__dict__.get("tile_limited") and (w > tw or h > th):
            raise Refused(
                server_error(
                    omero.ApiUsageException,
                    f"java.lang.IllegalArgumentException: region {w}x{h} exceeds the tile size {tw}x{th}",
                )
            )
        bpp = self.bytes_per_pixel
        row = size_x * bpp
        return b"".join(data[(y + r) * row + x * bpp : (y + r) * row + (x + w) * bpp] for r in range(h))


def open_reader(world, session, pixels_id: int) -> Reader:
    from .services import Refused, server_error

    pixels = world.get("Pixels", pixels_id)
    if pixels is None or not world.readable(session, pixels):
        raise Refused(server_error(omero.SecurityViolation, f"pixels {pixels_id} are not readable"))
    image = world.images_.get(pixels.v.get("image"))
    if image is None or not world.readable(session, image):
        raise Refused(server_error(omero.SecurityViolation, f"pixels {pixels_id} are not readable"))
    if pixels.__dict__.get("broken"):
        raise Refused(server_error(omero.ResourceError, pixels.broken))
    if pixels.__dict__.get("pyramid_pending"):
        exc = omero.MissingPyramidException(None, None, f"Pixels:{pixels_id} has no pyramid yet")
        exc.pixelsID = pixels_id
        exc.backOff = 60000
        raise Refused(exc)
    return Reader(world, pixels)
