"""The backlog on a real one-node Slurm cluster that keeps accounting (slurmdbd over a MariaDB
of its own: ``sacct`` and the user's limits are Slurm's own), with ``MaxArraySize=10`` and the
root user's ``MaxSubmitJobs=25``, started here and stopped by process id: 60 shards in arrays
of at most 10 tasks and never more than 25 queued, a task that times out and is split on
resume, a requeued task whose log keeps both runs, a resume that leaves live tasks alone, an
interrupted submission found again, the probe stopping a submission that could not work, an
ingest job on the nodes (no environment, no password) and one that sbatch refuses after the
arrays, and Slurm driven over SSH from a host that is not a node. When Slurm, MariaDB or sshd
cannot be started these tests fail with the reason."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from backlog_world import (
    assert_annotated_once,
    assert_private,
    config,
    direct_codes,
    hold,
    holding_worker,
    my_queue,
    queue,
    release,
    synthetic,
    wait_until,
)
from conftest import TOP

from omero_iscc import backlog as backlog_mod
from omero_iscc import slurm
from omero_iscc.__main__ import main

sys.path.insert(0, str(TOP / "tests" / "setup"))
from slurm_local import LocalSlurm, SlurmUnavailable, free_port  # noqa: E402
from sshd_local import LocalSshd, SshdUnavailable  # noqa: E402


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    directory = tmp_path_factory.mktemp("slurm")
    try:
        with LocalSlurm(directory, accounting=True, max_array_size=10, max_submit_jobs=25, cpus=8) as slurm_:
            yield slurm_
    except SlurmUnavailable as exc:
        pytest.fail(f"Slurm could not be started: {exc}")


def admin(server):
    return lambda c: (None, server.access(0))  # the administrator's session


def accepted(work: backlog_mod.Workdir) -> list[dict]:
    return [a for a in work.manifest["arrays"] if a["state"] == "accepted"]


def scontrol_job(job: str) -> str:
    return subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, check=False).stdout


def ended(job: str) -> bool:
    """Whether accounting has the job as ended."""
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-j", job, "-o", "State"], capture_output=True, text=True, check=False
    )
    return bool(out.stdout.split()) and out.stdout.split()[0] not in slurm.LIVE


def test_sixty_shards_within_the_limits_timeout_requeue_and_resume(cluster, tmp_path, worker, capsys):
    server, repo, groups = synthetic(tmp_path, 120, per=2)
    direct = direct_codes(worker, repo, groups, tmp_path)
    wrapper, holds = holding_worker(tmp_path, worker)
    # 4 files a shard, 2 per Fileset: 60 shards; a minute per task at most.
    cfg = config(tmp_path, worker, repo, cluster_worker=wrapper, shard_files=4, slurm_throttle=8, slurm_time="1")
    timed_out, requeued = 7, 13
    hold(holds, timed_out, requeued)
    argv = ["--config", str(cfg), "backlog"]
    assert main([*argv, "--slurm"], connect=admin(server)) == 0
    out = capsys.readouterr().out
    work = backlog_mod.Workdir.open(str(tmp_path / "backlog"))
    assert work.shard_count == 60 and work.manifest["probe"]["job"]
    first = accepted(work)
    # Room for 25 tasks (the user's MaxSubmitJobs), in arrays of at most MaxArraySize.
    assert [len(a["shards"]) for a in first] == [10, 10, 5] and "35 shard(s) wait for room in the queue" in out
    assert [a["throttle"] for a in first] == [2, 2, 2], "slurm_throttle 8 shared by the live arrays"
    shown = scontrol_job(first[0]["job"])
    assert "ArrayTaskThrottle=2" in shown and f"JobName={first[0]['name']}" in shown
    runs = backlog_mod.shard_runs(work)
    job13 = f"{runs[requeued][0]['job']}_{runs[requeued][1]}"
    log13 = tmp_path / "backlog" / "logs" / f"{job13}.out"
    wait_until(lambda: log13.exists() and "omero-iscc task" in log13.read_text(), what="shard 13's task running")

    # A resume while tasks are live submits exactly the shards without a task: not the live ones.
    assert main([*argv, "--slurm", "--resume", "--no-probe"], connect=admin(server)) == 0
    work.reload()
    resumed = [n for a in accepted(work)[3:] for n in a["shards"]]
    assert resumed and timed_out not in resumed and requeued not in resumed
    assert resumed == list(range(25, 25 + len(resumed))), resumed
    assert len(my_queue()) <= 25

    # The held task is requeued: it runs again, its log keeps both runs.
    subprocess.run(["scontrol", "requeue", job13], check=True)
    wait_until(lambda: log13.read_text().count("omero-iscc task") >= 2, timeout=180, what="the requeued task's rerun")
    release(holds, requeued)

    # Following the arrays: shards ingested as they finish, the rest submitted as room frees,
    # until no task is live; the held shard times out.
    assert main([*argv, "ingest", "--wait"], connect=admin(server)) == 1
    assert "1 shard(s) without a result yet" in capsys.readouterr().out
    work.reload()
    assert all(len(a["shards"]) <= 10 for a in work.manifest["arrays"])
    assert not [a for a in work.manifest["arrays"] if a["state"] != "accepted"], "no array refused for a limit"
    assert sorted(work.manifest["ingested"]) == [n for n in range(60) if n != timed_out]
    assert main([*argv, "status"], connect=admin(server)) == 0
    text = capsys.readouterr().out
    assert f"TIMEOUT: shard(s) {timed_out} (backlog --resume runs them again)" in text
    assert "59 INGESTED, 1 TIMEOUT" in text

    # Resume: the shard that timed out is split in two, and only those two run.
    release(holds, timed_out)
    before = len(accepted(work))
    assert main([*argv, "--slurm", "--resume", "--no-probe", "--wait"], connect=admin(server)) == 0
    work.reload()
    assert work.manifest["shards"][timed_out]["replaced_by"] == [60, 61]
    assert [a["shards"] for a in accepted(work)[before:]] == [[60, 61]]
    assert_annotated_once(server, groups, direct)
    assert work.manifest["finished"]
    text = log13.read_text()
    assert text.count("omero-iscc task") == 2 and "DUE TO JOB REQUEUE" in text, "the log keeps both runs"
    assert work.leftovers() == [], "no partial result of a killed task is left"
    assert_private(tmp_path / "backlog")
    assert main([*argv, "status"], connect=admin(server)) == 0
    assert "states: 61 INGESTED, 1 SPLIT" in capsys.readouterr().out


def test_an_interrupted_submission_is_found_again_by_name(cluster, tmp_path, worker, monkeypatch):
    server, repo, groups = synthetic(tmp_path, 30, per=1, legacy=0)
    direct = direct_codes(worker, repo, groups, tmp_path)
    wrapper, holds = holding_worker(tmp_path, worker)
    hold(holds, *range(15))
    cfg = config(tmp_path, worker, repo, cluster_worker=wrapper, shard_files=2)
    real, calls = slurm.sbatch, []

    def then_interrupted(*args, **kwargs):
        job = real(*args, **kwargs)
        calls.append(job)
        if len(calls) == 3:  # the probe, the first array, the second array: then the command dies
            raise KeyboardInterrupt
        return job

    monkeypatch.setattr(slurm, "sbatch", then_interrupted)
    argv = ["--config", str(cfg), "backlog"]
    with pytest.raises(KeyboardInterrupt):
        main([*argv, "--slurm"], connect=admin(server))
    monkeypatch.setattr(slurm, "sbatch", real)
    work = backlog_mod.Workdir.open(str(tmp_path / "backlog"))
    assert [a["state"] for a in work.manifest["arrays"]] == ["accepted", "submitting"]
    assert main([*argv, "--slurm", "--resume", "--no-probe"], connect=admin(server)) == 0
    work.reload()
    assert [(a["state"], a["job"]) for a in work.manifest["arrays"]] == [("accepted", calls[1]), ("accepted", calls[2])]
    release(holds, *range(15))
    assert main([*argv, "ingest", "--wait"], connect=admin(server)) == 0
    assert_annotated_once(server, groups, direct)


def test_a_failed_probe_stops_the_submission_with_the_reason(cluster, tmp_path, worker, capsys):
    server, repo, groups = synthetic(tmp_path, 8, per=2, legacy=0)
    direct = direct_codes(worker, repo, groups, tmp_path)
    argv = ["backlog", "--slurm"]
    cfg = config(tmp_path, worker, repo, cluster_worker="/opt/nowhere/omero-iscc", shard_files=4)
    assert main(["--config", str(cfg), *argv], connect=admin(server)) == 2
    err = capsys.readouterr().err
    assert "the worker does not run on" in err and "/opt/nowhere/omero-iscc" in err
    work = backlog_mod.Workdir.open(str(tmp_path / "backlog"))
    assert work.manifest["arrays"] == [], "nothing submitted"

    elsewhere = tmp_path / "not-the-repository"
    elsewhere.mkdir()
    cfg = config(tmp_path, worker, repo, name="c2.json", cluster_root=str(elsewhere), shard_files=4)
    assert main(["--config", str(cfg), *argv, "--resume"], connect=admin(server)) == 2
    err = capsys.readouterr().err
    assert "the repository cannot be read on" in err and str(elsewhere) in err and "No such file" in err

    other = tmp_path / "not-shared"
    other.mkdir(mode=0o700)
    cfg = config(tmp_path, worker, repo, name="c3.json", cluster_backlog_dir=str(other), shard_files=4)
    assert main(["--config", str(cfg), *argv, "--resume"], connect=admin(server)) == 2
    err = capsys.readouterr().err
    assert "the nodes do not see this work directory at" in err and str(other) in err
    work.reload()
    assert work.manifest["arrays"] == []

    cfg = config(tmp_path, worker, repo, name="c4.json", shard_files=4)
    assert main(["--config", str(cfg), *argv, "--resume", "--wait"], connect=admin(server)) == 0
    assert_annotated_once(server, groups, direct)


def test_an_ingest_job_on_the_nodes_gets_no_environment_and_no_password(cluster, tmp_path, worker, monkeypatch):
    server, repo, groups = synthetic(tmp_path, 12, per=2, legacy=0)
    direct = direct_codes(worker, repo, groups, tmp_path)
    record = tmp_path / "ingest-job"
    python = tmp_path / "python-on-the-nodes"  # what a site's module or venv would give
    python.write_text(
        f'#!/bin/sh\nenv > "{record}.env"\necho "$@" > "{record}.argv"\n'
        f'PYTHONPATH="{TOP / "omero_scripts"}" exec "{sys.executable}" "$@"\n'
    )
    python.chmod(0o755)
    port = free_port()  # no OMERO there: the job must say so
    cfg = config(
        tmp_path,
        worker,
        repo,
        host="127.0.0.1",
        port=port,
        username="root",
        password="not-in-the-job",
        cluster_python=str(python),
        slurm_ingest_time="7:00",
        shard_files=8,
    )
    monkeypatch.setenv("OMERO_ISCC_ONLY_HERE", "submitting host")
    argv = ["--config", str(cfg), "backlog"]
    assert main([*argv, "--slurm", "--ingest-job"], connect=admin(server)) == 0
    work = backlog_mod.Workdir.open(str(tmp_path / "backlog"))
    [ingest_job] = work.manifest["ingest_jobs"]
    arrays = [a["job"] for a in accepted(work)]
    assert ingest_job["after"] == arrays
    shown = scontrol_job(ingest_job["job"])
    assert "TimeLimit=00:07:00" in shown and all(job in shown.split("Dependency=")[1].split()[0] for job in arrays)
    log = tmp_path / "backlog" / "logs" / f"ingest_{ingest_job['job']}.out"
    wait_until(lambda: ended(ingest_job["job"]), timeout=120, what="the ingest job to end")
    text = log.read_text()
    assert f"backlog ingest: {tmp_path / 'backlog'}, {work.shard_count} shard(s)" in text
    assert f"no connection to OMERO at 127.0.0.1:{port}" in text
    env, args = (record.with_suffix(".env").read_text(), record.with_suffix(".argv").read_text())
    assert "not-in-the-job" not in env + args + text
    assert "OMERO_ISCC_ONLY_HERE" not in env, "the job got the submitting host's environment"
    assert f"-m omero_iscc --config {cfg} backlog ingest --workdir {tmp_path / 'backlog'}" in args
    # The ingest here does what the job could not.
    assert main([*argv, "ingest"], connect=admin(server)) == 0
    assert_annotated_once(server, groups, direct)


def test_an_ingest_job_refused_after_the_arrays_loses_nothing(cluster, tmp_path, worker, capsys):
    server, repo, groups = synthetic(tmp_path, 16, per=2, legacy=0)
    direct = direct_codes(worker, repo, groups, tmp_path)
    wrapper, holds = holding_worker(tmp_path, worker)
    hold(holds, *range(8))
    cfg = config(
        tmp_path,
        worker,
        repo,
        cluster_worker=wrapper,
        username="root",
        password="omero",
        cluster_python=sys.executable,
        slurm_ingest_options=["--partition=nosuch"],
        shard_files=4,
    )
    argv = ["--config", str(cfg), "backlog"]
    assert main([*argv, "--slurm", "--ingest-job"], connect=admin(server)) == 1
    err = capsys.readouterr().err
    assert "the arrays are submitted and recorded, but not the ingest job" in err and "nosuch" in err
    work = backlog_mod.Workdir.open(str(tmp_path / "backlog"))
    arrays = accepted(work)
    assert sorted(n for a in arrays for n in a["shards"]) == list(range(work.shard_count))
    assert work.manifest["ingest_jobs"] == []
    assert all(queue(a["job"]) for a in arrays), "the arrays run"
    assert main([*argv, "--slurm", "--resume", "--no-probe"], connect=admin(server)) == 0
    assert "0 of 0 shard(s) submitted" in capsys.readouterr().out
    work.reload()
    assert len(work.manifest["arrays"]) == len(arrays), "nothing hashed twice"
    release(holds, *range(8))
    assert main([*argv, "ingest", "--wait"], connect=admin(server)) == 0
    assert_annotated_once(server, groups, direct)


def test_slurm_over_ssh_on_a_login_node(cluster, tmp_path, worker, monkeypatch, capsys):
    try:
        sshd = LocalSshd(tmp_path / "sshd", env={"SLURM_CONF": str(cluster.conf)})
        sshd.start()
    except SshdUnavailable as exc:
        pytest.fail(f"sshd could not be started: {exc}")
    try:
        server, repo, groups = synthetic(tmp_path, 20, per=2)
        direct = direct_codes(worker, repo, groups, tmp_path)
        # The login node and the nodes see the work directory at another path.
        (tmp_path / "cluster-view").symlink_to(tmp_path)
        seen_there = tmp_path / "cluster-view" / "backlog"
        options = {"slurm_ssh": sshd.destination, "slurm_ssh_options": sshd.options, "shard_files": 6}
        cfg = config(tmp_path, worker, repo, cluster_backlog_dir=str(seen_there), **options)
        # This host has ssh, and no Slurm: no command, no configuration.
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "ssh").symlink_to(shutil.which("ssh"))
        monkeypatch.setenv("PATH", str(bin_dir))
        monkeypatch.delenv("SLURM_CONF")
        argv = ["--config", str(cfg), "backlog"]
        assert main([*argv, "--slurm", "--wait"], connect=admin(server)) == 0, capsys.readouterr()
        assert_annotated_once(server, groups, direct)
        work = backlog_mod.Workdir.open(str(tmp_path / "backlog"))
        assert str(seen_there) in work.task_script.read_text()
        assert main([*argv, "status"], connect=admin(server)) == 0
        assert "the plan is finished" in capsys.readouterr().out
        # A login node that does not answer is said plainly.
        bad_options = list(sshd.options)
        bad_options[bad_options.index("-p") + 1] = str(free_port())
        bad = config(tmp_path, worker, repo, name="bad.json", slurm_ssh=sshd.destination, slurm_ssh_options=bad_options)
        assert main(["--config", str(bad), "backlog", "status"], connect=admin(server)) == 2
        assert f"ssh {sshd.destination} failed: " in capsys.readouterr().err
    finally:
        sshd.stop()
