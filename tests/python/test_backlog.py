"""The backlog on a real one-node Slurm cluster (started here, stopped by process id) over a
synthetic repository of 10,000 files in 2,000 Filesets, with the stand-in for OMERO: every
image annotated once with the code a direct `omero-iscc sum` gives, a cancelled array task and
a truncated result completed by --resume, a file changed after import reported as a fixity
failure and not annotated. When Slurm cannot be started these tests fail with the reason."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TOP
from fake_server import FakeServer

from omero_iscc import backlog as backlog_mod
from omero_iscc.__main__ import main
from omero_iscc.slurm import array_spec

sys.path.insert(0, str(TOP / "tests" / "setup"))
from slurm_local import LocalSlurm, SlurmUnavailable  # noqa: E402

FILESETS = 2000
FILES_PER_FILESET = 5


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    directory = tmp_path_factory.mktemp("slurm")
    try:
        with LocalSlurm(directory) as slurm:
            yield slurm
    except SlurmUnavailable as exc:
        pytest.fail(f"Slurm could not be started: {exc}")


def synthetic(tmp_path: Path, filesets: int, per: int = FILES_PER_FILESET, seed: int = 7):
    """A repository of ``filesets`` Filesets of ``per`` random files (100 B to 3 KB); every
    50th Fileset has two images (a multi-series file), and two images have no Fileset."""
    rng = random.Random(seed)
    repo = tmp_path / "ManagedRepository"
    server = FakeServer(root=str(repo))
    groups = []
    for k in range(filesets):
        d = f"user_2/2026-12/01/{k // 100:03d}/{k:05d}/"
        (repo / d).mkdir(parents=True)
        names = []
        for j in range(per):
            name = f"part{j}.ome.tif" if j == 0 else f"part{j}.bin"
            (repo / d / name).write_bytes(rng.randbytes(rng.randint(100, 3000)))
            names.append(name)
        files = [server.original_file(str(repo / d / n), d) for n in names]
        images = server.add_fileset(files, d, n_images=2 if k % 50 == 0 else 1)
        groups.append((images, [d + n for n in names]))
    legacy_dir = tmp_path / "legacy"
    legacy_dir.mkdir()
    for n in range(2):
        path = legacy_dir / f"old{n}.tif"
        path.write_bytes(rng.randbytes(500))
        server.add_legacy_image([server.original_file(str(path), "/legacy/")])
    return server, repo, groups


def direct_codes(worker: str, repo: Path, groups: list, tmp_path: Path) -> dict[int, str]:
    """Each image's code as one direct `omero-iscc sum --groups` run gives it."""
    listing = tmp_path / "all-groups.jsonl"
    listing.write_text(
        "".join(json.dumps({"id": str(n), "files": files}) + "\n" for n, (_, files) in enumerate(groups))
    )
    out = subprocess.run(
        [worker, "sum", "--json", "--root", str(repo), "--groups", str(listing)], capture_output=True, check=True
    )
    codes = {}
    for line in out.stdout.splitlines():
        record = json.loads(line)
        for image in groups[int(record["id"])][0]:
            codes[image] = record["iscc"]
    return codes


def config(tmp_path: Path, worker: str, repo: Path, **extra) -> Path:
    cfg = tmp_path / "config.json"
    values = {
        "worker": worker,
        "repository": str(repo),
        "state_dir": str(tmp_path / "state"),
        "backlog_dir": str(tmp_path / "backlog"),
        **extra,
    }
    cfg.write_text(json.dumps(values))
    return cfg


def wait_until(predicate, timeout: float = 120.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def queue(job: str) -> dict[str, str]:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T"], capture_output=True, text=True, check=True).stdout
    return dict(line.split() for line in out.splitlines() if line.startswith((f"{job}_", f"{job} ")))


def iscc_of(server: FakeServer, image: int) -> list[str]:
    return [dict(a.pairs)["iscc:sum"] for a in server.iscc_anns(image) if a.kind == "map"]


def test_slurm_array_resume_truncated_result_and_fixity(cluster, tmp_path, worker):
    server, repo, groups = synthetic(tmp_path, FILESETS)
    assert sum(len(files) for _, files in groups) >= 10_000
    direct = direct_codes(worker, repo, groups, tmp_path)
    # A file changed after import (same size): its Fileset must not be annotated.
    changed_images, changed_files = groups[123]
    path = repo / changed_files[2]
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    # The cluster's worker: the real one, held back on shard 3 while the marker exists.
    marker = tmp_path / "hold-shard-3"
    marker.touch()
    slow = tmp_path / "worker-on-the-nodes"
    slow.write_text(
        f'#!/bin/sh\ncase "$*" in *shard-00003.jsonl*) [ -e "{marker}" ] && sleep 300;; esac\nexec "{worker}" "$@"\n'
    )
    slow.chmod(0o755)
    total = sum(f.size for f in server.files.values() if f.size)
    cfg = config(tmp_path, worker, repo, cluster_worker=str(slow), shard_bytes=total // 20, slurm_throttle=4)
    connect = lambda c: (None, server.access(0))  # noqa: E731 - the administrator's session

    assert main(["--config", str(cfg), "backlog", "--slurm"], connect=connect) == 0
    work = backlog_mod.Workdir.open(str(tmp_path / "backlog"))
    [entry] = work.manifest["submissions"]
    job, ingest_job = entry["job"], entry["ingest_job"]
    assert 19 <= work.shard_count <= 22 and entry["tasks"] == list(range(work.shard_count))
    assert work.manifest["left_to_the_scheduler"] == 2
    shown = subprocess.run(["scontrol", "show", "job", ingest_job], capture_output=True, text=True, check=False).stdout
    assert f"Dependency=afterany:{job}" in shown
    subprocess.run(["scancel", ingest_job], check=True)  # it would ingest from another process
    wait_until(lambda: queue(job).get(f"{job}_3") == "RUNNING", what="task 3 running")
    subprocess.run(["scancel", f"{job}_3"], check=True)
    wait_until(lambda: not queue(job), timeout=300, what="the array to end")
    # A result cut off mid-line (a node that died while writing to shared storage).
    cut = work.result(5)
    raw = cut.read_bytes()
    cut.write_bytes(raw[: len(raw) // 2])

    st = backlog_mod.status(work, running={})
    assert 3 in st["failed"] and st["done"] == work.shard_count - 1
    assert main(["--config", str(cfg), "backlog", "ingest"], connect=connect) == 1  # the fixity failure
    work = backlog_mod.Workdir.open(str(tmp_path / "backlog"))
    assert 3 not in work.manifest["ingested"] and 5 not in work.manifest["ingested"]
    assert list((tmp_path / "backlog" / "rejected").iterdir()), "the truncated result is set aside"
    failures = [json.loads(x) for x in (tmp_path / "backlog" / "failures.jsonl").read_text().splitlines()]
    assert [(f["kind"], f["images"]) for f in failures] == [("fixity", changed_images)]
    assert "SHA1-160 differs" in failures[0]["message"] and changed_files[2].split("/")[-1] in failures[0]["message"]

    marker.unlink()
    assert main(["--config", str(cfg), "backlog", "--slurm", "--resume", "--no-ingest-job"], connect=connect) == 0
    work = backlog_mod.Workdir.open(str(tmp_path / "backlog"))
    resumed = work.manifest["submissions"][-1]
    assert resumed["tasks"] == [3, 5]
    wait_until(lambda: not queue(resumed["job"]), timeout=300, what="the resumed array to end")
    assert main(["--config", str(cfg), "backlog", "ingest"], connect=connect) == 0
    assert main(["--config", str(cfg), "backlog", "ingest"], connect=connect) == 0  # twice: nothing twice
    for images, _ in groups:
        for image in images:
            expected = [] if images == changed_images else [direct[image]]
            assert iscc_of(server, image) == expected, image
    st = backlog_mod.status(backlog_mod.Workdir.open(str(tmp_path / "backlog")), running={})
    assert st["done"] == st["ingested"] == st["shards"] and st["failed"] == []
    assert st["bytes_done"] == st["bytes"] and st["bytes_per_second"] > 0


def test_local_runs_plan_hash_and_ingest_in_one_command(tmp_path, worker, capsys):
    server, repo, groups = synthetic(tmp_path, 120, per=3)
    direct = direct_codes(worker, repo, groups, tmp_path)
    cfg = config(tmp_path, worker, repo, shard_bytes=40_000)
    connect = lambda c: (None, server.access(0))  # noqa: E731
    assert main(["--config", str(cfg), "backlog", "--local", "2"], connect=connect) == 0
    assert "image(s) annotated from" in capsys.readouterr().out
    for images, _ in groups:
        for image in images:
            assert iscc_of(server, image) == [direct[image]]
    assert main(["--config", str(cfg), "backlog", "status"], connect=connect) == 0
    text = capsys.readouterr().out
    work = backlog_mod.Workdir.open(str(tmp_path / "backlog"))
    assert f"shards: {work.shard_count}: {work.shard_count} done ({work.shard_count} ingested)" in text
    assert "throughput:" in text
    # A second plan in the same directory is refused; --resume finds nothing left to run.
    assert main(["--config", str(cfg), "backlog", "--local", "2"], connect=connect) == 2
    assert main(["--config", str(cfg), "backlog", "--local", "2", "--resume"], connect=connect) == 0
    assert len(backlog_mod.Workdir.open(str(tmp_path / "backlog")).manifest["submissions"]) == 1, "nothing re-run"


def test_array_specs_and_bad_invocations(tmp_path, worker, capsys):
    assert array_spec([0, 1, 2, 3, 7, 9, 10], 4) == "0-3,7,9-10%4"
    assert array_spec([5]) == "5"
    cfg = config(tmp_path, worker, tmp_path)
    assert main(["--config", str(cfg), "backlog", "status"]) == 2
    assert "holds no backlog plan" in capsys.readouterr().err
    assert main(["--config", str(cfg), "backlog"]) == 2
    assert "needs --slurm or --local N" in capsys.readouterr().err


def test_the_cli_plugin_runs_the_same_backlog(tmp_path, worker, monkeypatch, capsys):
    from omero.cli import CLI

    server, repo, groups = synthetic(tmp_path, 30, per=2)
    cfg = config(tmp_path, worker, repo, shard_bytes=20_000)
    cli = CLI()
    cli.loadplugins()
    monkeypatch.setattr(type(cli.controls["iscc"]), "omero_access", lambda self, args: server.access(0))
    cli.invoke(["iscc", "backlog", "--local", "2", "--config", str(cfg)], strict=False)
    assert cli.rv == 0, capsys.readouterr()
    assert all(len(iscc_of(server, i)) == 1 for images, _ in groups for i in images)
    cli.invoke(["iscc", "backlog", "status", "--config", str(cfg)], strict=False)
    assert "0 failed" in capsys.readouterr().out
