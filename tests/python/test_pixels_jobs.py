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
from test_pixels import add_image, by_label, pixel_anns

from omero_iscc import NAMESPACE
from omero_iscc import state as state_mod
from omero_iscc.__main__ import main
from omero_iscc.annotate import annotate_pixels
from omero_iscc.config import ScriptSettings, load
from omero_iscc.duplicates import find
from omero_iscc.jobs import annotate_job, duplicates_job, verify_job
from omero_iscc.scheduler import Scheduler


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
    images = []
    for n in range(2):
        rel = f"scientist_2/copy-{n}/"
        path = tmp_path / rel / "same.bin"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"the same file, imported twice")
        [image] = server.add_fileset([server.original_file(str(path), rel)], rel, names=[f"copy {n}"])
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


# -- images waiting for their pyramid (item 6) -----------------------------------------------------
def test_an_image_waiting_for_its_pyramid_is_not_yet_rather_than_failed(tmp_path, worker, cases):
    # RawPixelsStore.setPixelsId raises MissingPyramidException while the server builds the
    # pyramid: the image is not ready, nothing is wrong with it.
    server = FakeServer(root=str(tmp_path))
    image = add_image(server, by_label(cases, "uint8 stack"), pyramid_pending=True)
    report = annotate_pixels(server.access(), [image], worker)
    [outcome] = report.outcomes
    assert (outcome.status, outcome.code) == ("not_yet", "pixels"), outcome
    assert "pyramid" in outcome.message and not report.failures, outcome


def test_the_scheduler_retries_it_later_without_counting_an_attempt_and_status_shows_it(
    tmp_path, worker, cases, capsys
):
    server = FakeServer(root=str(tmp_path))
    case = by_label(cases, "uint8 stack")
    image = add_image(server, case, pyramid_pending=True)
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"worker": worker, "state_dir": str(tmp_path / "s"), "codes": ["pixels"]}))
    clock = [1_000_000.0]
    sched = Scheduler(
        load(env={}, config_file=str(cfg_file)),
        lambda c: (None, server.access(0)),
        sleep=lambda s: None,
        clock=lambda: clock[0],
    )
    for _ in range(5):  # longer than three attempts would last
        result = sched.poll_once()
        assert result.failed == 0 and result.annotated == 0, result
        clock[0] += 6 * 3600
    state = state_mod.load(str(tmp_path / "s" / "pixels"))
    assert not state.failures and image in state.waiting, (state.failures, state.waiting)
    assert main(["--config", str(cfg_file), "status"]) == 0
    out = capsys.readouterr().out
    assert f"image {image}" in out and "waiting for its pyramid" in out, out
    server.pixels[image].pyramid_pending = False
    result = sched.poll_once()
    sched.close()
    assert result.annotated == 1, result
    [ann] = pixel_anns(server, image)
    assert dict(ann.pairs)["iscc:pixels"] == case["biocode"]["iscc_code"]
    assert image not in state_mod.load(str(tmp_path / "s" / "pixels")).waiting


# -- images registered without files (item 14) -----------------------------------------------------
def test_the_scheduler_gives_an_image_without_files_its_pixel_code_and_never_loops_on_its_file_code(
    tmp_path, worker, cases, capsys
):
    repo = tmp_path / "repo"
    repo.mkdir()
    server = FakeServer(root=str(repo))
    case = by_label(cases, "uint16 stack")
    image = server.add_image(name="cells.zarr")  # omero zarr import: no Fileset, no file
    with_pixels(server, image, case, fmt=None)
    server.pixels[image].tile_limited = True
    cfg_file = tmp_path / "c.json"
    state_dir = tmp_path / "s"
    cfg_file.write_text(
        json.dumps(
            {"worker": worker, "state_dir": str(state_dir), "codes": ["files", "pixels"], "repository": str(repo)}
        )
    )
    clock = [1_000_000.0]
    sched = Scheduler(
        load(env={}, config_file=str(cfg_file)),
        lambda c: (None, server.access(0)),
        sleep=lambda s: None,
        clock=lambda: clock[0],
    )
    results = []
    for _ in range(5):  # longer than three attempts would last
        results.append(sched.poll_once())
        clock[0] += 6 * 3600
    sched.close()
    assert [(r.failed, r.annotated) for r in results] == [(0, 1)] + [(0, 0)] * 4, results
    assert [r.seen for r in results] == [1, 0, 0, 0, 0], results  # not found again for either code
    assert dict(pixel_anns(server, image)[0].pairs)["iscc:pixels"] == case["biocode"]["iscc_code"]
    files_state = state_mod.load(str(state_dir))
    assert not files_state.failures and image in files_state.no_files
    # Found once: the later polls do not hash (or even plan) it again.
    assert server.calls_by_service.get("RawPixelsStore.setPixelsId") == 1
    assert main(["--config", str(cfg_file), "status"]) == 0
    out = capsys.readouterr().out
    assert "without original files" in out and str(image) in out, out
