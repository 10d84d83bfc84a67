"""Fixtures of the Python tests: the real worker binary, real sample files laid out as an
OMERO ManagedRepository, and the stand-in OMERO server on the wire (tests/standin/: each test
builds its world, the helper talks to it through omero-py over Ice)."""

from __future__ import annotations

import io
import os
import shutil
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(TOP / "omero_scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(TOP / "tests"))

from fake_server import FakeServer  # noqa: E402

NS = "org.iscc.omero.sum"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "omero: the live suite (a real server with OMERO_ISCC_TEST_HOST, else the stand-in)"
    )


_LIVE: dict = {}


def pytest_runtest_logreport(report):
    if "test_live_omero.py" in report.nodeid and (report.when == "call" or report.outcome != "passed"):
        _LIVE[report.outcome] = _LIVE.get(report.outcome, 0) + 1


def pytest_terminal_summary(terminalreporter):
    """Says where the live suite ran and how it went, so a run's output shows it."""
    if _LIVE:
        where = os.environ.get("OMERO_ISCC_TEST_HOST") or "the stand-in server on the wire"
        counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(_LIVE.items()))
        terminalreporter.write_line(f"live suite (tests/python/test_live_omero.py) against {where}: {counts}")


@pytest.fixture(autouse=True)
def _close_standin_clients():
    """After each test, the clients it opened into stand-in worlds are closed (each is an Ice
    communicator with its threads) and the worlds' sessions forgotten."""
    yield
    from standin import world

    world.close_all()


@pytest.fixture(scope="session")
def worker() -> str:
    path = os.environ.get("OMERO_ISCC_WORKER") or str(
        TOP / "target" / "x86_64-unknown-linux-gnu" / "release" / "omero-iscc"
    )
    assert os.access(path, os.X_OK), f"worker binary missing: {path} (run tests/run.sh)"
    return path


@pytest.fixture(scope="session")
def samples() -> Path:
    path = Path(os.environ.get("OMERO_ISCC_SAMPLES", ""))
    assert (path / "ome-tiff").is_dir(), "sample files missing: run tests/run.sh"
    return path


@pytest.fixture(scope="session")
def cases() -> list[dict]:
    """iscc-bio's pixel codes of the test images (tests/reference/iscc_bio_pixels.py, run by
    tests/setup/env.sh), with the pixels as the stand-in's RawPixelsStore serves them."""
    import json

    path = Path(os.environ.get("OMERO_ISCC_PIXEL_CASES", "")) / "cases.json"
    assert path.is_file(), "iscc-bio's reference cases are missing: run tests/run.sh"
    return json.loads(path.read_text())


def reference(paths: list[Path], wide: bool = False) -> dict:
    """iscc-core's ISCC-SUM of the concatenated files (the reference implementation)."""
    import iscc_core

    data = b"".join(p.read_bytes() for p in paths)
    data_code = iscc_core.gen_data_code_v0(io.BytesIO(data), bits=256)["iscc"]
    instance = iscc_core.gen_instance_code_v0(io.BytesIO(data), bits=256)
    return {
        "iscc": iscc_core.gen_iscc_code_v0([data_code, instance["iscc"]], wide=wide)["iscc"],
        "datahash": instance["datahash"],
        "filesize": instance["filesize"],
        "data": data_code,
        "instance": instance["iscc"],
    }


@dataclass
class World:
    """A ManagedRepository on disk and the OMERO objects that point into it."""

    server: FakeServer
    omero: object  # BlitzOmero over the stand-in server, as the session user
    repo: Path
    disk: dict = field(default_factory=dict)  # image id -> list of disk paths (in order)
    single: int = 0
    multi_file: int = 0
    multi_series: list = field(default_factory=list)
    legacy: int = 0
    missing: int = 0
    other_group: int = 0
    locked: int = 0
    project: int = 11
    dataset: int = 21
    screen: int = 31
    plate: int = 41


def _place(src: Path, repo: Path, rel_dir: str, rel_name: str) -> Path:
    dest = repo / rel_dir / rel_name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return dest


@pytest.fixture
def world(tmp_path: Path, samples: Path) -> World:
    repo = tmp_path / "ManagedRepository"
    repo.mkdir()
    fake = FakeServer(root=str(repo))
    w = World(server=fake, omero=None, repo=repo)
    tiff = samples / "ome-tiff"

    d1 = "scientist_2/2026-11/29/10-00-00.000/"
    p = _place(tiff / "neuron-4Ch.tiff", repo, d1, "neuron-4Ch.tiff")
    [w.single] = fake.add_fileset([fake.original_file(str(p), d1)], d1, names=["neuron"])
    w.disk[w.single] = [p]

    d2 = "scientist_2/2026-11/29/11-00-00.000/"
    dicom = ["77654033/CT2/17106", "77654033/CT2/17136", "77654033/CT2/17166"]
    paths = [_place(samples / "dicomdirtests" / rel, repo, d2, rel) for rel in dicom]
    files = [
        fake.original_file(str(pp), d2 + os.path.dirname(rel) + "/", os.path.basename(rel), hasher="MD5-128")
        for pp, rel in zip(paths, dicom)
    ]
    [w.multi_file] = fake.add_fileset(files, d2, names=["ct series"])
    w.disk[w.multi_file] = paths

    d3 = "scientist_2/2026-11/29/12-00-00.000/"
    p = _place(tiff / "scratch-assay-labeled-10T-2Ch.tiff", repo, d3, "scratch.tiff")
    w.multi_series = fake.add_fileset(
        [fake.original_file(str(p), d3)], d3, n_images=3, names=["well A1", "well A2", "well B1"]
    )
    for i in w.multi_series:
        w.disk[i] = [p]

    legacy_dir = tmp_path / "legacy-files"
    legacy_dir.mkdir()
    lp = legacy_dir / "neocortex.tiff"
    shutil.copyfile(tiff / "neocortex-3Ch.tiff", lp)
    w.legacy = fake.add_legacy_image([fake.original_file(str(lp), "/legacy/")])
    w.disk[w.legacy] = [lp]

    d5 = "scientist_2/2026-11/29/13-00-00.000/"
    gone = repo / d5 / "gone.tiff"
    [w.missing] = fake.add_fileset([fake.original_file(str(gone), d5, "gone.tiff")], d5, names=["gone"])

    d6 = "other_5/2026-11/29/14-00-00.000/"
    p = _place(samples / "dicomdirtests" / "DICOMDIR", repo, d6, "DICOMDIR")
    [w.other_group] = fake.add_fileset([fake.original_file(str(p), d6)], d6, group_id=2, names=["other group"])
    w.disk[w.other_group] = [p]

    d7 = "boss_9/2026-11/29/15-00-00.000/"
    p = _place(samples / "dicomdirtests" / "77654033/CR1/6154", repo, d7, "6154")
    [w.locked] = fake.add_fileset([fake.original_file(str(p), d7)], d7, group_id=3, can_annotate=False)
    w.disk[w.locked] = [p]

    everything = [w.single, w.multi_file, *w.multi_series, w.legacy, w.missing, w.other_group, w.locked]
    fake.add_container("Dataset", w.dataset, everything)
    fake.add_container("Project", w.project, [w.dataset])
    fake.add_container("Plate", w.plate, w.multi_series)
    fake.add_container("Screen", w.screen, [w.plate])
    w.omero = fake.access()
    return w


@pytest.fixture
def as_nobody_worker(worker: str, tmp_path: Path) -> str:
    """The real worker, run as an unprivileged user when the tests run as root (root reads
    every file, so 'unreadable' needs a user that cannot)."""
    if os.geteuid() != 0:
        return worker
    wrapper = tmp_path / "worker-as-nobody"
    wrapper.write_text(f'#!/bin/sh\nexec setpriv --reuid=65534 --regid=65534 --clear-groups "{worker}" "$@"\n')
    wrapper.chmod(0o755)
    p = Path(worker)
    while p != p.parent:
        p.chmod(p.stat().st_mode | stat.S_IXOTH)
        p = p.parent
    os.chmod(worker, 0o755)
    return str(wrapper)


def open_for_others(path: Path) -> None:
    """Lets an unprivileged user walk down to ``path`` and read it."""
    p = path
    while p != p.parent:
        mode = p.stat().st_mode
        p.chmod(mode | stat.S_IXOTH | (stat.S_IROTH if p.is_file() else 0))
        p = p.parent
