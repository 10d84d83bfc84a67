"""The pixel code (IMAGEWALK) through the stand-in's RawPixelsStore on the wire: bit-exact against
iscc-bio 0.2.0 on OME-TIFF files written with tifffile (tests/reference/iscc_bio_pixels.py),
against the spec where iscc-bio departs from it, and robust where the server refuses."""

from __future__ import annotations

import json
from pathlib import Path

import Ice
import pytest
from conftest import reference
from fake_server import FakeServer
from standin import pixels as fake_pixels

from omero_iscc import PIXELS_NAMESPACE
from omero_iscc.annotate import annotate_codes, annotate_pixels
from omero_iscc.layout import newest_pixel_record
from omero_iscc.pixels import compute_pixels, pixels_infos


def add_image(server: FakeServer, case: dict, files: list[int] | None = None, **pixels) -> int:
    """An image in its own Fileset with the case's pixels."""
    d = f"scientist_2/2026-12/01/{len(server.filesets):05d}/"
    [image] = server.add_fileset(files or [], d, names=[case["label"]])
    data = Path(case["raw"]).read_bytes()
    bpp = case["bytes_per_pixel"]
    fake_pixels.add_pixels(server, image, tuple(case["sizes"]), case["pixel_type"], bpp, data, **pixels)
    return image


def add_files(server: FakeServer, cases: list[dict]) -> dict[int, dict]:
    """The cases' files imported as OMERO does: a Fileset per file (its real bytes in the
    repository), an image per series, each with its series' pixels."""
    images = {}
    for name in sorted({c["file"] for c in cases}):
        series = sorted((c for c in cases if c["file"] == name), key=lambda c: c["scene"])
        path = Path(series[0]["raw"]).parent / name
        d = f"scientist_2/2026-12/01/{name}/"
        files = [server.original_file(str(path), d)]
        ids = server.add_fileset(files, d, n_images=len(series), names=[c["label"] for c in series])
        for image, case in zip(ids, series):
            data = Path(case["raw"]).read_bytes()
            fake_pixels.add_pixels(
                server, image, tuple(case["sizes"]), case["pixel_type"], case["bytes_per_pixel"], data
            )
            images[image] = case
    return images


def pixel_anns(server: FakeServer, image: int) -> list:
    """The image's pixel-code MapAnnotations."""
    return [a for a in server.iscc_anns(image, PIXELS_NAMESPACE) if a.kind == "map"]


def by_label(cases: list[dict], label: str) -> dict:
    return next(c for c in cases if c["label"] == label)


def simprints_of(server: FakeServer, image: int) -> dict:
    [entry] = [
        json.loads(data) for kind, obj, name, data, ns, _ in server.attachments if kind == "Image" and obj == image
    ]
    return entry


def test_every_pixel_type_and_walk_equals_iscc_bio(tmp_path, worker, cases):
    server = FakeServer(root=str(tmp_path))
    wanted = [c for c in cases if not c.get("iscc_bio_departs")]
    images = add_files(server, wanted)
    report = annotate_pixels(server.access(), list(images), worker, simprints=True)
    assert [o.status.value for o in report.outcomes] == ["annotated"] * len(images), report.message()
    seen_types, seen_zct = set(), set()
    for image, case in images.items():
        [ann] = pixel_anns(server, image)
        values = dict(ann.pairs)
        expected = case["biocode"]
        assert values["iscc:pixels"] == expected["iscc_code"], case["label"]
        assert [values["iscc:data"], values["iscc:instance"]] == expected["units"], case["label"]
        x, y, z, c, t = case["sizes"]
        assert values["iscc:dimensions"] == f"{x}x{y}x{z}x{c}x{t}"
        assert values["iscc:pixel_type"] == case["pixel_type"]
        assert values["iscc:planes"] == str(z * c * t)
        assert values["iscc:walk"].startswith("IMAGEWALK")
        entry = simprints_of(server, image)
        assert entry["simprints"] == expected["simprints"], case["label"]
        assert int(values["iscc:simprints_annotation"]) in server.anns
        seen_types.add(case["pixel_type"])
        seen_zct.add((z, c, t))
    assert seen_types == {"uint8", "int8", "uint16", "int16", "uint32", "int32", "float", "double"}
    assert {(z, c, t) for z in range(2, 6) for c in range(2, 6) for t in range(2, 6)} <= seen_zct
    # Two series of one file (one Fileset) are two images with their own codes.
    two = [i for i, c in images.items() if c["scene"] == 1]
    assert len(two) >= 8
    for image in two:
        first = next(i for i, c in images.items() if c["file"] == images[image]["file"] and c["scene"] == 0)
        assert server.images_[first].fileset == server.images_[image].fileset
        codes = [dict(pixel_anns(server, i)[0].pairs)["iscc:pixels"] for i in (first, image)]
        assert codes[0] != codes[1]


def test_planes_over_the_maximum_plane_size_are_read_as_strips(tmp_path, worker, cases):
    server = FakeServer(root=str(tmp_path))
    case = by_label(cases, "large planes uint16")
    image = add_image(server, case)
    server.max_plane = (64, 64)  # the planes are 130 x 150
    omero = server.access()
    info = pixels_infos(omero, [image])[image]
    for strip_bytes in (16 << 20, 1000):
        before = dict(server.calls)
        result = compute_pixels(omero, [info], worker, strip_bytes=strip_bytes)[image]
        assert result.iscc == case["biocode"]["iscc_code"], result.error
        tiles = server.calls.get("getTile", 0) - before.get("getTile", 0)
        assert tiles == (4 if strip_bytes > 1000 else 4 * 50), tiles  # 3 rows of 260 bytes per strip
    assert server.calls_by_service["RawPixelsStore.close"] == server.calls["setPixelsId"]


def test_the_full_resolution_level_is_set_explicitly(tmp_path, worker, cases):
    server = FakeServer(root=str(tmp_path))
    case = by_label(cases, "uint16 stack")
    image = add_image(server, case, levels=3)
    annotate_pixels(server.access(), [image], worker)
    assert dict(pixel_anns(server, image)[0].pairs)["iscc:pixels"] == case["biocode"]["iscc_code"]


def test_rgb_follows_the_spec_where_iscc_bio_reads_one_sample(tmp_path, worker, cases):
    server = FakeServer(root=str(tmp_path))
    case = next(c for c in cases if c.get("iscc_bio_departs"))
    image = add_image(server, case)
    annotate_pixels(server.access(), [image], worker)
    code = dict(pixel_anns(server, image)[0].pairs)["iscc:pixels"]
    assert code == reference([Path(case["spec_stream"])], wide=True)["iscc"]
    assert code != case["biocode"]["iscc_code"], "iscc-bio 0.2.0 hashes only the red samples of an RGB file"


# The worked examples of the IMAGEWALK draft (section 7): pixels and their canonical bytes.
SPEC_VECTORS = [
    ("uint8 2x2", (2, 2, 1, 1, 1), "uint8", 1, bytes([1, 2, 3, 4]), bytes([1, 2, 3, 4])),
    ("uint16 2x2", (2, 2, 1, 1, 1), "uint16", 2, bytes.fromhex("0100020003000400"), bytes.fromhex("0100020003000400")),
    ("float32 1x2", (2, 1, 1, 1, 1), "float", 4, bytes.fromhex("3f80000040000000"), bytes.fromhex("3f80000040000000")),
    ("TCZ 2x2x2", (1, 1, 2, 2, 2), "uint8", 1, b"\xff" * 8, b"\xff" * 8),
    ("scene 0", (1, 1, 1, 1, 1), "uint8", 1, b"\x01", b"\x01"),
    ("scene 1", (1, 1, 1, 1, 1), "uint8", 1, b"\x02", b"\x02"),
]


def test_the_specs_worked_examples(tmp_path, worker):
    server = FakeServer(root=str(tmp_path))
    images = {}
    for label, sizes, ptype, bpp, served, canonical in SPEC_VECTORS:
        [image] = server.add_fileset([], f"d/{label}/", names=[label])
        fake_pixels.add_pixels(server, image, sizes, ptype, bpp, served)
        images[image] = canonical
    annotate_pixels(server.access(), list(images), worker)
    for image, canonical in images.items():
        path = tmp_path / f"{image}.bytes"
        path.write_bytes(canonical)
        code = dict(pixel_anns(server, image)[0].pairs)["iscc:pixels"]
        assert code == reference([path], wide=True)["iscc"]


def test_one_images_fault_never_stops_the_others(tmp_path, worker, cases):
    server = FakeServer(root=str(tmp_path))
    good = by_label(cases, "int16 stack")
    first = add_image(server, good)
    # A server that packs bits: 1/8 of the bytes the plane needs.
    [packed] = server.add_fileset([], "d/bits/", names=["bits"])
    fake_pixels.add_pixels(server, packed, (16, 2, 1, 1, 1), "bit", 1, bytes(32))
    server.pixels[packed].data = bytes(4)
    # An unknown pixel type, and an image whose pixels the store refuses.
    [odd] = server.add_fileset([], "d/odd/", names=["odd"])
    fake_pixels.add_pixels(server, odd, (2, 2, 1, 1, 1), "complex", 1, bytes(4))
    refused = add_image(server, good)
    server.pixels[refused].broken = "the original file is missing from the repository"
    last = add_image(server, good)
    report = annotate_pixels(server.access(), [first, packed, odd, refused, last], worker)
    status = {o.image_id: (o.status.value, o.message) for o in report.outcomes}
    assert status[first][0] == status[last][0] == "annotated"
    assert status[packed] == ("failed", "the server returned 4 bytes for plane z=0 c=0 t=0 of 32 bytes")
    assert status[odd] == ("failed", "pixel type 'complex' is not one OMERO defines")
    assert status[refused] == ("failed", "ResourceError: the original file is missing from the repository")
    for image in (first, last):
        assert dict(pixel_anns(server, image)[0].pairs)["iscc:pixels"] == good["biocode"]["iscc_code"]


def test_a_lost_connection_is_raised_not_reported_as_the_images_fault(tmp_path, worker, cases):
    server = FakeServer(root=str(tmp_path))
    images = [add_image(server, by_label(cases, "uint8 stack")) for _ in range(3)]
    server.drop_connection_after("getPlane", 20)
    with pytest.raises(Ice.ConnectionLostException):
        annotate_pixels(server.access(), images, worker)
    assert not any(pixel_anns(server, i) for i in images[1:])


def test_replacing_a_pixel_code_removes_the_old_one_and_its_simprints_after(tmp_path, worker, cases):
    server = FakeServer(root=str(tmp_path))
    image = add_image(server, by_label(cases, "float32 stack"))
    omero = server.access()
    annotate_pixels(omero, [image], worker, simprints=True)
    [old] = pixel_anns(server, image)
    old_simprints = int(dict(old.pairs)["iscc:simprints_annotation"])
    again = annotate_pixels(omero, [image], worker, simprints=True)
    assert [o.status.value for o in again.outcomes] == ["already"]
    annotate_pixels(omero, [image], worker, replace=True, simprints=True)
    [new] = pixel_anns(server, image)
    assert new.id != old.id and old.id not in server.anns and old_simprints not in server.anns
    assert int(dict(new.pairs)["iscc:simprints_annotation"]) in server.anns
    assert server.orphans() == []
    record = newest_pixel_record([server.model_map_annotation(new.id)])
    assert record is not None and record.planes == 12


def test_both_codes_in_one_job_leave_the_files_annotation_as_it_is(world, worker, cases):
    case = by_label(cases, "uint32 single plane")
    fake_pixels.add_pixels(
        world.server,
        world.single,
        tuple(case["sizes"]),
        case["pixel_type"],
        case["bytes_per_pixel"],
        Path(case["raw"]).read_bytes(),
    )
    report = annotate_codes(
        world.omero,
        [world.single],
        ("files", "pixels"),
        worker=worker,
        root=str(world.repo),
        namespace="org.iscc.omero.sum",
    )
    assert sorted((o.code, o.status.value) for o in report.outcomes) == [
        ("files", "annotated"),
        ("pixels", "annotated"),
    ]
    assert report.message() == "files: 1 annotated; pixels: 1 annotated"
    files_code = world.server.pairs(world.single)[0][1]
    assert files_code == reference(world.disk[world.single])["iscc"]
    pixels = dict(pixel_anns(world.server, world.single)[0].pairs)
    assert pixels["iscc:pixels"] == case["biocode"]["iscc_code"]
