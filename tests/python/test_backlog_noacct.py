"""The backlog on a real one-node Slurm cluster without accounting (no ``sacct``: the queue,
``scontrol`` while slurmctld keeps a record, and then the tasks' own exit markers, since
``MinJobAge=2`` lets it forget ended jobs within seconds), ``MaxArraySize=8``: a cancelled
task, a failed one and three results that are not whole (two cut at a line, one mid-line)
are hashed again by one sparse resume, and nothing else is; a file changed since import is
refused, by the scheduler too. When Slurm cannot be started these tests fail with the reason."""

from __future__ import annotations

import subprocess
import sys

import pytest
from backlog_world import (
    assert_annotated_once,
    config,
    direct_codes,
    fail,
    hold,
    holding_worker,
    iscc_of,
    my_queue,
    release,
    synthetic,
    wait_until,
)
from conftest import TOP

from omero_iscc import backlog as backlog_mod
from omero_iscc.__main__ import main

sys.path.insert(0, str(TOP / "tests" / "setup"))
from slurm_local import LocalSlurm, SlurmUnavailable  # noqa: E402


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    directory = tmp_path_factory.mktemp("slurm-noacct")
    try:
        with LocalSlurm(directory, accounting=False, max_array_size=8, min_job_age=2, cpus=8) as slurm_:
            yield slurm_
    except SlurmUnavailable as exc:
        pytest.fail(f"Slurm could not be started: {exc}")


def admin(server):
    return lambda c: (None, server.access(0))  # the administrator's session


def forgotten(job: str) -> bool:
    """Whether slurmctld has dropped the job's record (MinJobAge)."""
    return subprocess.run(["scontrol", "show", "job", job], capture_output=True, check=False).returncode != 0


def test_a_sparse_resume_runs_exactly_what_has_no_whole_result(cluster, tmp_path, worker, capsys):
    server, repo, groups = synthetic(tmp_path, 60, per=2)
    direct = direct_codes(worker, repo, groups, tmp_path)
    changed_images, changed_files = groups[33]
    path = repo / changed_files[0]
    path.write_bytes(bytes(b ^ 0x5A for b in path.read_bytes()))  # same size, other bytes
    wrapper, holds = holding_worker(tmp_path, worker)
    cancelled, failed, cut_at_line, cut_mid_line = 3, 9, (5, 21), 14
    hold(holds, cancelled)
    fail(holds, failed)
    cfg = config(tmp_path, worker, repo, cluster_worker=wrapper, shard_files=4, slurm_throttle=8)
    argv = ["--config", str(cfg), "backlog"]
    assert main([*argv, "--slurm"], connect=admin(server)) == 0
    work = backlog_mod.Workdir.open(str(tmp_path / "backlog"))
    assert work.shard_count == 30
    assert [len(a["shards"]) for a in work.manifest["arrays"]] == [8, 8, 8, 6]
    runs = backlog_mod.shard_runs(work)
    task = f"{runs[cancelled][0]['job']}_{runs[cancelled][1]}"
    log = tmp_path / "backlog" / "logs" / f"{task}.out"
    wait_until(lambda: log.exists() and "omero-iscc task" in log.read_text(), what="the held task's script running")
    subprocess.run(["scancel", task], check=True)
    wait_until(lambda: not my_queue(), timeout=120, what="the arrays to end")
    for n in cut_at_line:  # a node that died between two records: only the count tells
        lines = work.result(n).read_bytes().splitlines(keepends=True)
        work.result(n).write_bytes(b"".join(lines[:-1]))
    raw = work.result(cut_mid_line).read_bytes()
    work.result(cut_mid_line).write_bytes(raw[:-10])  # inside the last record

    # Slurm forgets the ended tasks; their markers still say how they ended.
    jobs = {a["job"] for a in work.manifest["arrays"]}
    wait_until(lambda: all(forgotten(j) for j in jobs), timeout=90, what="slurmctld to drop the records")
    assert main([*argv, "status"], connect=admin(server)) == 0
    text = capsys.readouterr().out
    assert f"TERMINATED: shard(s) {cancelled} " in text and f"FAILED (exit 3): shard(s) {failed} " in text
    assert main([*argv, "ingest"], connect=admin(server)) == 1  # the fixity failure
    assert "1 fixity failure(s)" in capsys.readouterr().out
    work.reload()
    missing = sorted([cancelled, failed, *cut_at_line, cut_mid_line])
    assert sorted(set(range(30)) - set(work.manifest["ingested"])) == missing
    assert len(list((tmp_path / "backlog" / "rejected").iterdir())) == 3, "the results not whole, set aside"

    # A partial result of a task killed without warning is removed before the resume.
    leftover = tmp_path / "backlog" / "results" / f".shard-{cancelled:05d}.jsonl.node7.4242"
    leftover.write_text('{"id": "fileset:1"')
    release(holds, cancelled, failed)
    before = len(work.manifest["arrays"])
    assert main([*argv, "--slurm", "--resume", "--no-probe"], connect=admin(server)) == 0
    work.reload()
    [resumed] = work.manifest["arrays"][before:]
    assert resumed["shards"] == missing
    assert work.array_list(resumed["seq"]).read_text() == "".join(f"{n}\n" for n in missing)
    assert not leftover.exists()
    wait_until(lambda: not my_queue(), timeout=120, what="the resumed array to end")
    assert main([*argv, "ingest"], connect=admin(server)) == 0
    assert_annotated_once(server, groups, direct, skip=[changed_images])
    work.reload()
    assert work.manifest["finished"]

    # The plan is finished; the scheduler takes every image again, but not the changed Fileset.
    assert main(["--config", str(cfg), "run", "--once"], connect=admin(server)) == 0
    assert all(iscc_of(server, i) == [] for i in changed_images)
    assert main([*argv, "status"], connect=admin(server)) == 0
    text = capsys.readouterr().out
    assert "refused for fixity (never annotated, by the scheduler neither): 1 Fileset(s)" in text
    assert "SHA1-160 differs from the checksum OMERO recorded at import" in text
