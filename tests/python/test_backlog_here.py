"""The backlog without a cluster (``--local N``) and what does not need one: shards bounded by
files and bytes, two ingests and the scheduler at once (no image annotated twice), the
scheduler leaving a plan's images and a fixity failure alone, transient read failures
hashed again in new shards, a private work directory, updates of two processes both kept,
and the sbatch options that would break tracking refused."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from backlog_world import (
    NS,
    assert_annotated_once,
    assert_private,
    config,
    direct_codes,
    fileset_key,
    grow,
    iscc_of,
    synthetic,
    twice,
)
from conftest import TOP

from omero_iscc import backlog as backlog_mod
from omero_iscc import holds as holds_mod
from omero_iscc import slurm
from omero_iscc.__main__ import main
from omero_iscc.config import load
from omero_iscc.scheduler import Scheduler
from omero_iscc.slurm import array_spec


def admin(server):
    return lambda c: (None, server.access(0))  # the administrator's session


def test_local_runs_plan_hash_and_ingest_in_one_command(tmp_path, worker, capsys):
    server, repo, groups = synthetic(tmp_path, 120, per=3)
    direct = direct_codes(worker, repo, groups, tmp_path)
    cfg = config(tmp_path, worker, repo, shard_bytes=40_000)
    assert main(["--config", str(cfg), "backlog", "--local", "2"], connect=admin(server)) == 0
    assert "image(s) annotated from" in capsys.readouterr().out
    assert_annotated_once(server, groups, direct)
    assert main(["--config", str(cfg), "backlog", "status"], connect=admin(server)) == 0
    text = capsys.readouterr().out
    work = backlog_mod.Workdir.open(str(tmp_path / "backlog"))
    assert f"shards: {work.shard_count}: {work.shard_count} done ({work.shard_count} ingested)" in text
    assert "throughput:" in text and "the plan is finished" in text
    assert_private(tmp_path / "backlog")
    # A second plan in the same directory is refused; --resume finds nothing left to run.
    assert main(["--config", str(cfg), "backlog", "--local", "2"], connect=admin(server)) == 2
    assert main(["--config", str(cfg), "backlog", "--local", "2", "--resume"], connect=admin(server)) == 0
    assert len(backlog_mod.Workdir.open(str(tmp_path / "backlog")).manifest["arrays"]) == 1, "nothing re-run"


def test_shards_are_bounded_by_files_as_well_as_bytes(tmp_path, worker):
    server, repo, groups = synthetic(tmp_path, 40, per=3, legacy=0)
    # One Fileset of 7 files: more than a shard may hold, so a shard of its own.
    d = "user_2/2026-12/02/big/"
    (repo / d).mkdir(parents=True)
    for j in range(7):
        (repo / d / f"f{j}").write_bytes(os.urandom(200))
    big = server.add_fileset([server.original_file(str(repo / d / f"f{j}"), d) for j in range(7)], d)
    cfg = config(tmp_path, worker, repo, shard_files=5, shard_bytes=1 << 40)
    # Bounded by bytes only: a quarter of the bytes per shard at most, unless one Fileset is more.
    total = sum(p.stat().st_size for p in repo.rglob("*") if p.is_file())
    by_bytes = tmp_path / "by-bytes"
    plan = backlog_mod.make_plan(server.access(0), load(config_file=str(cfg)), str(by_bytes), total // 4, 10**9)
    assert 4 <= plan.shard_count <= 5
    assert all(s["bytes"] <= total // 4 for s in plan.manifest["shards"])
    assert sum(s["filesets"] for s in plan.manifest["shards"]) == 41
    assert main(["--config", str(cfg), "backlog", "close", "--workdir", str(by_bytes)], connect=admin(server)) == 0
    # Bounded by files: one Fileset of 3 files per shard, and the large one alone.
    assert main(["--config", str(cfg), "backlog", "--local", "2"], connect=admin(server)) == 0
    work = backlog_mod.Workdir.open(str(tmp_path / "backlog"))
    files = sorted(s["files"] for s in work.manifest["shards"])
    assert files == [3] * 40 + [7], files
    assert iscc_of(server, big[0]), "the large Fileset is annotated too"
    assert all(len(iscc_of(server, i)) == 1 for images, _ in groups for i in images)


def hashed_plan(tmp_path: Path, worker: str, server, repo: Path, **extra) -> tuple[Path, backlog_mod.Workdir]:
    """A plan whose shards are hashed (here, two at a time) and not ingested yet."""
    cfg = config(tmp_path, worker, repo, **extra)
    settings = load(config_file=str(cfg))
    work = backlog_mod.make_plan(
        server.access(0), settings, str(tmp_path / "backlog"), settings.shard_bytes, settings.shard_files
    )
    with work.locked("test"):
        shards = backlog_mod.prepare(work, settings, None, None, resume=False)
        backlog_mod.submit_local(work, settings, shards, 2)
    return cfg, work


def test_two_ingests_and_the_scheduler_at_once_annotate_each_image_once(tmp_path, worker, caplog):
    # Images without a Fileset amid the plan's ids: the plan hands them back to the scheduler.
    server, repo, groups = synthetic(tmp_path, 200, per=2, legacy=0)
    _, legacy = grow(server, repo, 200, 0, legacy=4)
    groups += grow(server, repo, 200, 200)[0]
    direct = direct_codes(worker, repo, groups, tmp_path)
    cfg, work = hashed_plan(tmp_path, worker, server, repo, shard_files=40, batch_size=1000)
    assert work.shard_count >= 20
    settings = load(config_file=str(cfg))

    # While the plan is active, the scheduler takes only what it left to it: the images without
    # a Fileset.
    with caplog.at_level(logging.INFO, logger="omero_iscc"):
        assert Scheduler(settings, admin(server)).run(once=True) == 0
    assert all(len(iscc_of(server, i)) == 1 for i in legacy)
    assert all(iscc_of(server, i) == [] for i in direct), "the scheduler took images the plan holds"
    assert "left to the backlog plan" not in caplog.text, "held images were hashed, then left out at the save"

    # Images imported since: the scheduler's, while two ingests run.
    later, later_legacy = grow(server, repo, 500, 60, legacy=3)
    direct.update(direct_codes(worker, repo, later, tmp_path))
    statuses: dict[str, int] = {}
    start = threading.Barrier(3)

    def ingest(name: str) -> None:
        start.wait()
        statuses[name] = main(["--config", str(cfg), "backlog", "ingest"], connect=admin(server))

    def scheduler() -> None:
        start.wait()
        statuses["scheduler"] = Scheduler(settings, admin(server)).run(once=True)

    threads = [threading.Thread(target=ingest, args=(n,)) for n in ("first", "second")]
    threads.append(threading.Thread(target=scheduler))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert statuses == {"first": 0, "second": 0, "scheduler": 0}
    assert twice(server, groups + later) == []
    assert_annotated_once(server, groups, direct)
    assert all(len(server.iscc_anns(i)) == 1 for i in legacy + later_legacy)
    assert_annotated_once(server, later, direct)  # by the scheduler, beside the ingests
    work.reload()
    assert sorted(work.manifest["ingested"]) == list(range(work.shard_count)), "every shard ingested once"
    assert work.manifest["finished"]
    assert holds_mod.read(settings.state_dir, work.manifest["plan"]).state == holds_mod.DONE


def test_an_image_annotated_between_triage_and_save_is_left_alone(tmp_path, worker, monkeypatch, capsys):
    server, repo, groups = synthetic(tmp_path, 12, per=2, legacy=0)
    images = [i for ids, _ in groups for i in ids]
    lock = holds_mod.annotate_lock
    entered = []

    @contextlib.contextmanager
    def another_writer_first(state_dir: str):
        # Another writer annotates every image after the ingest triaged its first batch and
        # before it saves it: only the re-check under the lock can see that.
        if not entered:
            for image in images:
                server.add_annotation(image, [("iscc:sum", "ISCC:ANOTHERWRITER")], NS)
        entered.append(state_dir)
        with lock(state_dir):
            yield

    monkeypatch.setattr(holds_mod, "annotate_lock", another_writer_first)
    cfg = config(tmp_path, worker, repo, shard_bytes=10**9)
    assert main(["--config", str(cfg), "backlog", "--local", "1"], connect=admin(server)) == 0
    assert entered, "the ingest saved under the annotate lock"
    assert f"0 image(s) annotated from 1 shard(s), {len(images)} already had an ISCC" in capsys.readouterr().out
    assert twice(server, groups) == []
    assert all(iscc_of(server, i) == ["ISCC:ANOTHERWRITER"] for i in images)


def test_a_batch_taken_before_the_plan_began_is_not_saved_over_it(tmp_path, worker):
    server, repo, groups = synthetic(tmp_path, 20, per=2, legacy=0)
    settings = load(config_file=str(config(tmp_path, worker, repo, batch_size=1000)))
    scheduler = Scheduler(settings, admin(server))
    scheduler._connect()
    batch, _seen = scheduler._next_batch()  # the scheduler's poll takes its batch...
    assert len(batch) == sum(len(images) for images, _ in groups)
    work = backlog_mod.make_plan(  # ...a backlog plan begins while it hashes...
        server.access(0), settings, str(tmp_path / "backlog"), settings.shard_bytes, settings.shard_files
    )
    report = scheduler._annotate_batch(batch)  # ...and its save leaves the plan's images alone
    scheduler.close()
    assert all(iscc_of(server, i) == [] for images, _ in groups for i in images)
    assert {o.message for o in report.outcomes} == {f"left to the backlog plan in {work.root.resolve()}"}


def test_the_scheduler_leaves_a_fixity_failure_alone(tmp_path, worker, capsys, caplog):
    server, repo, groups = synthetic(tmp_path, 30, per=3, legacy=0)
    direct = direct_codes(worker, repo, groups, tmp_path)
    changed_images, changed_files = groups[11]
    path = repo / changed_files[1]
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF  # same size, other bytes: only the import checksum tells
    path.write_bytes(bytes(data))
    cfg = config(tmp_path, worker, repo, shard_bytes=10_000)
    assert main(["--config", str(cfg), "backlog", "--local", "2"], connect=admin(server)) == 1
    assert_annotated_once(server, groups, direct, skip=[changed_images])
    capsys.readouterr()

    # The plan is finished: the scheduler may take every image again, but not this Fileset,
    # which it does not even read.
    with caplog.at_level(logging.INFO, logger="omero_iscc"):
        assert main(["--config", str(cfg), "run", "--once"], connect=admin(server)) == 0
    assert all(iscc_of(server, i) == [] for i in changed_images)
    assert "refused for fixity" not in caplog.text
    assert main(["--config", str(cfg), "status"], connect=admin(server)) == 0
    text = capsys.readouterr().out
    assert "refused by the backlog's fixity check (never annotated): 1" in text
    assert f"image {changed_images[0]}: {changed_files[1].split('/')[-1]}: SHA1-160 differs" in text
    assert main(["--config", str(cfg), "backlog", "status"], connect=admin(server)) == 0
    assert "refused for fixity (never annotated, by the scheduler neither): 1 Fileset(s)" in capsys.readouterr().out
    # Without the verdict the scheduler reads the Fileset itself. These Filesets lie outside
    # their owner's import directory, so a code is written only when every file's import
    # checksum matches the bytes read (provenance): the changed bytes are refused there too.
    for hold in (tmp_path / "state" / "backlog").iterdir():
        hold.unlink()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="omero_iscc"):
        assert main(["--config", str(cfg), "run", "--once"], connect=admin(server)) == 1
    assert all(iscc_of(server, i) == [] for i in changed_images)
    assert "could not be shown to be the files imported" in caplog.text, caplog.text[-2000:]


def test_transient_read_failures_are_hashed_again_in_new_shards(tmp_path, worker, capsys):
    server, repo, groups = synthetic(tmp_path, 40, per=2, legacy=0)
    direct = direct_codes(worker, repo, groups, tmp_path)
    cfg = config(tmp_path, worker, repo, shard_bytes=12_000)
    # A file a node cannot read for now (the share not mounted there), one that never comes
    # back, and a fixity failure (never read again: the bytes are what they are).
    away, gone, changed = groups[7], groups[23], groups[31]
    moved = repo / away[1][0]
    moved.rename(moved.with_suffix(".away"))
    (repo / gone[1][1]).unlink()
    path = repo / changed[1][0]
    path.write_bytes(bytes(b ^ 1 for b in path.read_bytes()))
    argv = ["--config", str(cfg), "backlog", "--local", "2"]
    assert main(argv, connect=admin(server)) == 1  # the fixity failure
    assert "2 Fileset(s) unreadable for now, read again by --resume" in capsys.readouterr().out
    work = backlog_mod.Workdir.open(str(tmp_path / "backlog"))
    planned = work.shard_count
    keys = [fileset_key(work, g[0][0]) for g in (away, gone)]
    assert sorted(work.manifest["retry"]) == sorted(keys)
    assert not work.manifest["finished"], "a plan with Filesets to read again still holds them"

    moved.with_suffix(".away").rename(moved)  # mounted again
    assert main([*argv, "--resume"], connect=admin(server)) == 0
    work.reload()
    [retry_shard] = range(planned, work.shard_count)
    assert work.manifest["shards"][retry_shard]["origin"] == "retry"
    assert sorted(work.units(retry_shard)) == sorted(keys), "exactly the two Filesets to read again, in a new shard"
    assert [iscc_of(server, i) for i in away[0]] == [[direct[i]] for i in away[0]]
    fixity_key = fileset_key(work, changed[0][0])
    assert fixity_key not in work.units(retry_shard), "a fixity failure is not read again"

    # The file that never comes back: read MAX_TRIES times, then handed to the scheduler.
    assert main([*argv, "--resume"], connect=admin(server)) == 1
    work.reload()
    assert work.manifest["retry"] == {} and work.manifest["finished"]
    hold = holds_mod.read(str(tmp_path / "state"), work.manifest["plan"])
    assert set(gone[0]) <= set(hold.released) and hold.state == holds_mod.DONE
    failures = [json.loads(x) for x in (tmp_path / "backlog" / "failures.jsonl").read_text().splitlines()]
    assert sorted(f["kind"] for f in failures) == ["fixity", "unreadable"]
    assert_annotated_once(server, groups, direct, skip=[gone[0], changed[0]])


def test_the_work_directory_is_private_and_refused_when_opened_up(tmp_path, worker, capsys):
    server, repo, _groups = synthetic(tmp_path, 10, per=2, legacy=0)
    cfg = config(tmp_path, worker, repo, shard_bytes=5_000)
    old = os.umask(0o022)  # a permissive umask: the backlog must not rely on it
    try:
        assert main(["--config", str(cfg), "backlog", "--local", "2"], connect=admin(server)) == 0
    finally:
        os.umask(old)
    assert_private(tmp_path / "backlog")
    assert_private(tmp_path / "state" / "backlog")
    (tmp_path / "backlog").chmod(0o755)
    capsys.readouterr()
    assert main(["--config", str(cfg), "backlog", "status"], connect=admin(server)) == 2
    assert "can be read by others than its owner" in capsys.readouterr().err


UPDATER = """
import sys
sys.path.insert(0, {scripts!r})
from omero_iscc.workdir import Workdir
work = Workdir({root!r})
for _ in range({n}):
    with work.locked("test"):
        work.manifest.setdefault("count", 0)
        work.manifest["count"] += 1
        work.manifest.setdefault("by", []).append({name!r})
        work.save()
"""


def test_two_processes_keep_each_others_updates(tmp_path):
    root = tmp_path / "w"
    root.mkdir(mode=0o700)
    (root / "backlog.json").write_text("{}")
    scripts = str(TOP / "omero_scripts")
    procs = [
        subprocess.Popen([sys.executable, "-c", UPDATER.format(scripts=scripts, root=str(root), n=60, name=name)])
        for name in ("a", "b")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    manifest = json.loads((root / "backlog.json").read_text())
    assert manifest["count"] == 120 and sorted(manifest["by"]) == ["a"] * 60 + ["b"] * 60
    assert not [p for p in root.iterdir() if p.name.startswith(".")], "no temporary file left"


@pytest.mark.parametrize(
    "option",
    [
        "--job-name=x",
        "-J",
        "-Jx",
        "--array=0-3",
        "-a",
        "--dependency=afterok:1",
        "-d",
        "--export=ALL",
        "--output=o",
        "-o",
        "--error=e",
        "--parsable",
        "--wait",
        "-W",
        "--open-mode=truncate",
        "--wrap",
        "--export-file=f",
    ],
)
def test_options_that_would_break_tracking_are_refused(option):
    with pytest.raises(slurm.SlurmError, match="slurm_options: .* is not allowed: "):
        slurm.check_options(["--account=lab", option])


def test_a_refused_option_stops_the_backlog_before_anything_is_planned(tmp_path, worker, capsys):
    server, repo, _groups = synthetic(tmp_path, 3, per=1, legacy=0)
    cfg = config(tmp_path, worker, repo, slurm_options=["--qos=long", "--dependency=singleton"])
    assert main(["--config", str(cfg), "backlog", "--slurm"], connect=admin(server)) == 2
    err = capsys.readouterr().err
    assert "'--dependency=singleton' is not allowed: the backlog chains its arrays and its ingest job itself" in err
    assert not (tmp_path / "backlog" / "backlog.json").exists()
    assert slurm.check_options(["--account=lab", "--qos", "long", "--mem=2G", "-p", "x"]) == [
        "--account=lab",
        "--qos",
        "long",
        "--mem=2G",
        "-p",
        "x",
    ]


def test_an_ingest_job_without_credentials_in_its_file_is_refused_before_sbatch(tmp_path, worker):
    server, repo, _groups = synthetic(tmp_path, 3, per=1, legacy=0)
    cfg = config(tmp_path, worker, repo, cluster_python=sys.executable)
    settings = load(config_file=str(cfg), env={"OMERO_ISCC_USERNAME": "root", "OMERO_ISCC_PASSWORD": "omero"})
    work = backlog_mod.make_plan(
        server.access(0), settings, str(tmp_path / "backlog"), settings.shard_bytes, settings.shard_files
    )
    # The environment's credentials do not reach the job (--export=NONE): run=None, as the
    # refusal must come before anything is asked of Slurm.
    with pytest.raises(backlog_mod.BacklogError, match=f"credentials of {cfg}, which has none"):
        backlog_mod.submit_ingest_job(work, settings, None, str(cfg), ["1"])
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "username": "root"}))
    with pytest.raises(backlog_mod.BacklogError, match="which has none"):
        backlog_mod.submit_ingest_job(work, settings, None, str(cfg), ["1"])
    assert work.manifest["ingest_jobs"] == []


def test_array_specs_and_bad_invocations(tmp_path, worker, capsys):
    assert array_spec([0, 1, 2, 3, 7, 9, 10], 4) == "0-3,7,9-10%4"
    assert array_spec([5]) == "5"
    cfg = config(tmp_path, worker, tmp_path)
    assert main(["--config", str(cfg), "backlog", "status"]) == 2
    assert "holds no backlog plan" in capsys.readouterr().err
    assert main(["--config", str(cfg), "backlog"]) == 2
    assert "needs --slurm or --local N" in capsys.readouterr().err


def test_a_second_plan_is_refused_while_one_holds_images(tmp_path, worker, capsys):
    server, repo, _groups = synthetic(tmp_path, 6, per=1, legacy=0)
    cfg, _work = hashed_plan(tmp_path, worker, server, repo)
    capsys.readouterr()
    other = ["--config", str(cfg), "backlog", "--local", "1", "--workdir", str(tmp_path / "other")]
    assert main(other, connect=admin(server)) == 2
    assert "is active: finish it (backlog ingest --wait) or close it" in capsys.readouterr().err
    assert main(["--config", str(cfg), "backlog", "close"], connect=admin(server)) == 0
    assert main(other, connect=admin(server)) == 0


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


def test_a_plan_holds_its_range_but_what_it_hands_back():
    hold = holds_mod.Hold(plan="p", workdir="/w", state=holds_mod.ACTIVE, upto=100, released=[5, 50, 51])
    holds = holds_mod.Holds([hold])
    assert [holds.held_by(i) is hold for i in (1, 5, 6, 50, 51, 52, 100, 101)] == [
        True,
        False,
        True,
        False,
        False,
        True,
        True,
        False,
    ]
    # Where a poll goes on asking after an id: just before the next image no plan holds.
    assert [holds.skip(a) for a in (0, 4, 5, 49, 50, 51, 100, 200)] == [4, 4, 49, 49, 50, 100, 100, 200]
    planning = holds_mod.Holds([holds_mod.Hold(plan="q", workdir="/v")])
    assert planning.skip(0) == holds_mod.EVERYTHING and planning.held_by(10**12)
    done = holds_mod.Hold(plan="r", workdir="/u", state=holds_mod.DONE, upto=100, fixity={"7": "a.tif: changed"})
    after = holds_mod.Holds([done])
    assert (
        after.held_by(7) is None and after.skip(0) == 0 and after.fixity == {7: "a.tif: changed (backlog plan in /u)"}
    )
