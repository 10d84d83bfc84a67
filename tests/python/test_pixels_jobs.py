"""The pixel code everywhere the files' code goes: ISCC_Annotate's Code, ISCC_Verify, the
scheduler's ``codes``, duplicates across formats, ``find`` and ``omero iscc annotate --code``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import reference
from fake_server import FakeServer
from standin import pixels as fake_pixels
from test_annotate import load_script
from test_pixels import by_label, pixel_anns

from omero_iscc import NAMESPACE
from omero_iscc.config import ScriptSettings
from omero_iscc.duplicates import find
from omero_iscc.jobs import annotate_job, duplicates_job, verify_job


def with_pixels(server: FakeServer, image: int, case: dict, fmt: str = "OMETiff") -> None:
    data = Path(case["raw"]).read_bytes()
    sizes, bpp = tuple(case["sizes"]), case["bytes_per_pixel"]
    fake_pixels.add_pixels(server, image, sizes, case["pixel_type"], bpp, data, format=fmt)


@pytest.fixture
def two_formats(tmp_path, cases):
    """The same pixels imported twice: as an OME-TIFF and as a plain (ImageJ) TIFF."""
    case = by_label(cases, "duplicate (OME-TIFF)")
    repo = tmp_path / "repo"
    server = FakeServer(root=str(repo))
    images, paths = [], []
    for name, fmt in (("duplicate.ome.tif", "OMETiff"), ("duplicate.tif", "Tiff")):
        d = f"scientist_2/2026-12/01/{name}/"
        path = repo / d / name
        path.parent.mkdir(parents=True)
        shutil.copyfile(Path(case["raw"]).parent / name, path)
        [image] = server.add_fileset([server.original_file(str(path), d)], d, names=[name])
        with_pixels(server, image, case, fmt)
        images.append(image)
        paths.append(path)
    return server, images, paths, case


def settings(worker: str, repo: str | None = None) -> ScriptSettings:
    return ScriptSettings(worker=worker, repository=repo)


def test_the_script_annotates_both_codes_and_duplicates_find_the_same_pixels(two_formats, worker):
    server, images, paths, case = two_formats
    script = load_script("ISCC_Annotate")
    params = {"Data_Type": "Image", "IDs": images, "Code": "Both", "Simprints": True}
    message, _ = script.annotate_selection(server.access(), params, settings(worker, server.root))
    assert message == "files: 2 annotated; pixels: 2 annotated"
    files = [dict(server.pairs(i))["iscc:sum"] for i in images]
    assert files == [reference([p])["iscc"] for p in paths] and files[0] != files[1]
    result = duplicates_job(server.access(), "Image", images, settings(worker))
    assert [r["status"] for r in result.rows] == ["same_pixels", "same_pixels"]
    assert result.message.endswith("1 group(s) with the same pixels in different files, 0 group(s) of similar pixels")
    report = result.report.decode()
    assert "OMETiff" in report and ",Tiff," in report and files[0] in report and files[1] in report
    assert all(r["iscc"] == case["biocode"]["iscc_code"] for r in result.rows)
    hits = find(server.access(), str(images[0]), NAMESPACE)
    assert [(c.image_id, c.code, d) for c, d in hits] == [
        (images[0], "files", 0),
        (images[0], "pixels", 0),
        (images[1], "pixels", 0),
    ]


def test_same_pixels_in_the_same_files_is_not_reported_twice(tmp_path, worker, cases):
    server = FakeServer(root=str(tmp_path))
    case = by_label(cases, "uint8 single plane")
    path = tmp_path / "same.bin"
    path.write_bytes(b"the same file, imported twice")
    images = []
    for n in range(2):
        [image] = server.add_fileset([server.original_file(str(path), "")], "", names=[f"copy {n}"])
        with_pixels(server, image, case)
        images.append(image)
    annotate_job(server.access(), "Image", images, settings(worker, str(tmp_path)), codes=("files", "pixels"))
    result = duplicates_job(server.access(), "Image", images, settings(worker))
    assert sorted({r["status"] for r in result.rows}) == ["identical"], result.rows


def test_verify_recomputes_the_pixel_code_where_one_is_stored(two_formats, worker):
    server, images, _, _ = two_formats
    annotate_job(server.access(), "Image", images[:1], settings(worker, server.root), codes=("files", "pixels"))
    annotate_job(server.access(), "Image", images[1:], settings(worker, server.root), codes=("files",))
    result = verify_job(server.access(), "Image", images, settings(worker, server.root))
    assert [r["status"] for r in result.rows] == ["OK", "OK"], result.rows
    assert "computed_pixels" in result.report.decode().splitlines()[0]
    # The server now decodes other pixels for the first image (a reader upgrade, say).
    rec = server.pixels[images[0]]
    rec.data = bytes([rec.data[0] ^ 1]) + rec.data[1:]
    rows = verify_job(server.access(), "Image", images, settings(worker, server.root)).rows
    assert (rows[0]["status"], rows[0]["message"]) == ("CHANGED", "pixel code differs")
    assert rows[1]["status"] == "OK", "no pixel code stored: only the files are compared"
    rec.broken = "pixels gone"
    rows = verify_job(server.access(), "Image", images, settings(worker, server.root)).rows
    assert (
        rows[0]["status"] == "MISSING_FILE"
        and "pixels could not be read: ResourceError: pixels gone" in rows[0]["message"]
    )


def test_the_scheduler_backfills_the_code_an_image_lacks(two_formats, worker, tmp_path):
    from omero_iscc.__main__ import main

    server, images, _, case = two_formats
    annotate_job(server.access(), "Image", images[:1], settings(worker, server.root), codes=("files",))
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"worker": worker, "state_dir": str(tmp_path / "s"), "codes": ["files", "pixels"]}))
    assert main(["--config", str(cfg), "run", "--once"], connect=lambda c: (None, server.access(0))) == 0
    for image in images:
        assert len(server.iscc_anns(image)) == 1
        [ann] = pixel_anns(server, image)
        assert dict(ann.pairs)["iscc:pixels"] == case["biocode"]["iscc_code"]
    # By default the scheduler gives the files' code only.
    [third] = server.add_fileset([], "d/", names=["third"])
    with_pixels(server, third, case)
    cfg.write_text(json.dumps({"worker": worker, "state_dir": str(tmp_path / "s")}))
    main(["--config", str(cfg), "run", "--once"], connect=lambda c: (None, server.access(0)))
    assert pixel_anns(server, third) == []


def test_the_cli_plugin_annotates_pixels_and_dry_runs_them(two_formats, worker, tmp_path, monkeypatch, capsys):
    from test_cli_plugin import cli_logged_in

    server, images, _, _ = two_formats
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"worker": worker, "state_dir": str(tmp_path / "state")}))
    cli = cli_logged_in(server, "scientist", tmp_path, monkeypatch)
    cli.invoke(
        ["iscc", "annotate", f"Image:{images[0]}", "--code", "pixels", "--dry-run", "--config", str(cfg)], strict=False
    )
    out = capsys.readouterr().out
    assert "would annotate" in out and "2 plane(s) of 30x20x1x2x1 uint16" in out
    assert pixel_anns(server, images[0]) == []
    cli.invoke(
        ["iscc", "annotate", f"Image:{images[0]}", "--code", "both", "--json", "--config", str(cfg)], strict=False
    )
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert sorted((r["code"], r["status"]) for r in rows) == [("files", "annotated"), ("pixels", "annotated")]
    assert cli.rv == 0
