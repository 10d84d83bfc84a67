"""The OMERO layer held to what a real server does (docs/testing.md), on the stand-in server on
the wire that refuses, counts and restricts as one does: query rows and shapes, list
parameters, save calls, group permissions and ownership, Sudo, a missing repository mount,
in-place imports, reports on read-only objects, server-wide reads, scripts under the
Processor. Each test names the defect it guards against."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import omero
import pytest
from conftest import NS, TOP, reference
from fake_server import FakeServer
from test_annotate import load_script

from omero_iscc import gateway as g
from omero_iscc import state as state_mod
from omero_iscc.annotate import annotate
from omero_iscc.config import Config, ScriptSettings
from omero_iscc.duplicates import find_duplicates
from omero_iscc.filesets import plan
from omero_iscc.scheduler import Scheduler
from omero_iscc.selection import expand
from omero_iscc.statuses import ImageStatus
from omero_iscc.worker import run_groups


def _files(server: FakeServer, repo: Path, rel: str, n: int, size: int = 64) -> list[int]:
    ids = []
    for k in range(n):
        p = repo / rel / f"f{k:05d}.tif"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(size))
        ids.append(server.original_file(str(p), rel))
    return ids


def _scheduler(tmp_path, server, worker, user=0, **cfg) -> Scheduler:
    config = Config(state_dir=str(tmp_path / "state"), worker=worker, **cfg)
    return Scheduler(config, lambda c: (None, server.access(user)), sleep=lambda s: None)


# -- 2. plates and big filesets at bounded cost -------------------------------------------------
def test_a_plate_of_1536_images_sharing_6144_files_loads_in_rows_of_images_plus_files(tmp_path):
    # Before: one query joined usedFiles to every image: 1,536 x 6,144 = 9.4 million rows.
    server = FakeServer(root=str(tmp_path / "repo"))
    files = [server.original_file(str(tmp_path / "repo" / "plate" / f"f{k}.tif"), "plate/") for k in range(6144)]
    images = server.add_fileset(files, "plate/", n_images=1536)
    server.add_container("Plate", 41, images)
    server.add_container("Screen", 31, [41])
    omero_access = server.access()
    ids, missing = expand(omero_access, "Screen", [31])
    units = plan(omero_access, omero_access.images(ids))
    assert len(ids) == 1536 and not missing and len(units) == 1 and len(units[0].files) == 6144
    assert [f.repo_path for f in units[0].files[:2]] == ["plate/f0.tif", "plate/f1.tif"]  # import order
    assert server.rows <= 3 * (1536 + 6144), server.rows
    assert max(rows for _, rows in server.queries) <= g.ID_PAGE + 6144


def test_a_paged_collection_fetch_costs_every_row_and_a_long_list_fails_in_the_driver(tmp_path):
    # Hibernate pages a query that fetches a collection in memory, after every joined row came
    # back; and a list parameter binds one JDBC parameter per element, `(:ids)` included.
    server = FakeServer(root=None)
    images = [server.add_image() for _ in range(30)]
    for image in images:
        server.add_annotation(image, [[f"k{n}", "v"] for n in range(10)], NS)
    query = server.access().conn.getQueryService()
    old_annotated_images = (  # the server-wide read of the older code, with its page
        "select l from ImageAnnotationLink l join fetch l.child a left outer join fetch a.mapValue"
        " join fetch l.parent i join fetch i.details.owner join fetch i.details.group"
        " where a.ns = :ns order by a.id desc"
    )
    page = query.findAllByQuery(old_annotated_images, g.BlitzOmero._params(10, ns=NS), {"omero.group": "-1"})
    assert len(page) == 10 and server.queries[-1][1] == 30 * 10, "the page cost all 300 rows"
    for hql in (
        g.Q_EXISTING.format(kind="Image"),
        "select i.id from Image i where not exists ("
        " select l from ImageAnnotationLink l where l.parent = i and l.child.ns = :ns)"
        " and i.id not in (:ids) order by i.id",
    ):
        values = {"ids": list(range(40000))} if "not exists" not in hql else {"ns": NS, "ids": list(range(40000))}
        with pytest.raises(omero.InternalException, match="out-of-range integer as a 2-byte value: 4000"):
            query.projection(hql, g.BlitzOmero._params(**values), {"omero.group": "-1"})
    ids = list(range(10**6, 10**6 + 32767))
    assert (
        query.projection(g.Q_EXISTING.format(kind="Image"), g.BlitzOmero._params(ids=ids), {"omero.group": "-1"}) == []
    )


def test_3000_single_file_images_are_saved_in_a_few_calls_and_6000_load_in_bounded_rows(tmp_path, worker):
    # Before: one save (and one round trip) per image: a call per image. (On the wire every
    # object travels as a server sends it; 3,000 show the bound as well as 10,000 did.)
    repo = tmp_path / "repo"
    server = FakeServer(root=str(repo))
    images = []
    for k in range(6000):
        rel = f"u/{k // 1000}/{k}/"
        if k < 3000:
            p = repo / rel / "a.tif"
            p.parent.mkdir(parents=True)
            p.write_bytes(k.to_bytes(4, "big") * 8)
        images += server.add_fileset([server.original_file(str(repo / rel / "a.tif"), rel)], rel)
    server.add_container("Dataset", 21, images)
    omero_access = server.access()
    ids, _ = expand(omero_access, "Dataset", [21])
    plan(omero_access, omero_access.images(ids))
    assert server.rows <= 3 * (6000 + 6000), server.rows
    server.queries.clear()
    server.calls.clear()
    report = annotate(omero_access, images[:3000], worker, str(repo), NS)
    assert report.count(ImageStatus.ANNOTATED) == 3000, report.message()
    # Two saves per batch of images (of one owner and group): the annotations, then their links.
    assert server.calls["saveAndReturnArray"] <= 2 * (3000 // 200) + 5, server.calls
    assert sum(server.calls.values()) < 120, server.calls


# -- 3. each fileset hashed once, whatever the batch size --------------------------------------
def test_the_scheduler_reads_a_1536_image_plate_once_with_batch_size_100(tmp_path, worker, monkeypatch):
    # Before: the scheduler took 100 image ids per poll and hashed the plate's files 16 times.
    repo = tmp_path / "repo"
    server = FakeServer(root=str(repo))
    plate = server.add_fileset(_files(server, repo, "plate/", 4, size=5000), "plate/", n_images=1536)
    runs = []
    import omero_iscc.compute as compute_mod

    def counting(*args, **kw):
        runs.append(args[2])
        return run_groups(*args, **kw)

    monkeypatch.setattr(compute_mod, "run_groups", counting)
    sched = _scheduler(tmp_path, server, worker, batch_size=100)
    result = sched.poll_once()
    assert result.annotated == 1536 and result.failed == 0
    assert len(runs) == 1 and len(runs[0]) == 1
    codes = {dict(server.pairs(i))["iscc:sum"] for i in plate}
    assert codes == {reference(sorted((repo / "plate").iterdir()))["iscc"]}
    assert sched.poll_once().seen == 0


# -- 4. no stall, no busy loop ------------------------------------------------------------------
def test_images_the_scheduler_may_not_annotate_are_kept_as_failures_and_never_block(tmp_path, worker):
    # Before: not-permitted images were only logged, came back first in every poll, and a
    # batch full of them made no progress forever, without sleeping.
    repo = tmp_path / "repo"
    server = FakeServer(root=str(repo))
    server.add_user(5, "helper", {1, 3}, admin=True, privileges={"WriteOwned"})  # a restricted admin, no Sudo
    theirs = [server.add_fileset(_files(server, repo, f"s/{k}/", 1), f"s/{k}/")[0] for k in range(5)]
    own = [server.add_fileset(_files(server, repo, f"h/{k}/", 1), f"h/{k}/", owner=5)[0] for k in range(3)]
    sleeps = []
    sched = _scheduler(tmp_path, server, worker, user=5, batch_size=5)
    sched.sleep = sleeps.append
    first = sched.poll_once()
    assert (first.annotated, first.failed) == (0, 5)
    failures = state_mod.load(sched.cfg.state_dir).failures
    assert set(failures) == set(theirs) and "needs the Sudo privilege" in failures[theirs[0]].error
    second = sched.poll_once()
    assert second.annotated == 3 and all(server.iscc_anns(i) for i in own)
    # A full batch that annotates nothing (all five not permitted, fresh state) sleeps before
    # the next poll instead of spinning: before, only a batch that was not full slept.
    sched2 = _scheduler(tmp_path / "fresh", server, worker, user=5, batch_size=5)
    sched2.sleep = lambda s: (sleeps.append(s), sched2.stop_event.set())
    sched2.run(once=False)
    assert sleeps == [sched2.cfg.poll_interval]


def test_a_long_list_of_images_left_alone_is_never_sent_to_the_server(tmp_path, worker):
    # Before: `not in (:exclude)` bound one parameter per image left alone.
    repo = tmp_path / "repo"
    server = FakeServer(root=str(repo), param_cap=1000)  # a small cap, the same rule, a small test
    empty = [server.add_fileset([], f"script/{k}/")[0] for k in range(1500)]  # script-made, no files
    good = server.add_fileset(_files(server, repo, "g/", 1), "g/")[0]
    sched = _scheduler(tmp_path, server, worker, batch_size=2000)
    for image_id in empty:
        for _ in range(state_mod.MAX_ATTEMPTS):
            sched.states["files"].record_failure(image_id, "no files", 0.0, 60.0)
    result = sched.poll_once()
    # The stand-in refuses any list parameter over its cap: the poll got through without one.
    assert result.annotated == 1 and server.iscc_anns(good)


# -- 5. the repository is not always there -------------------------------------------------------
def test_a_scheduler_without_the_repository_mount_reads_everything_through_omero(tmp_path, worker):
    repo = tmp_path / "repo"
    server = FakeServer(root=str(tmp_path / "elsewhere" / "ManagedRepository"))  # not mounted here
    files = _files(server, repo, "a/", 2, size=3000)
    for f in files:  # the server still has the bytes: it serves them through the RawFileStore
        server.files[f].path = "a/"
    [image] = server.add_fileset(files, "a/")
    result = _scheduler(tmp_path, server, worker).poll_once()
    assert result.annotated == 1
    values = dict(server.pairs(image))
    assert values["iscc:input"] == "raw-file-store"
    assert values["iscc:sum"] == reference(sorted((repo / "a").iterdir()))["iscc"]


def test_in_place_imports_follow_allowed_roots_and_are_never_outside_root_failures(tmp_path, worker):
    repo, share = tmp_path / "repo", tmp_path / "instrument-share"
    (repo / "inplace").mkdir(parents=True)
    share.mkdir()
    (share / "scan.tif").write_bytes(os.urandom(4000))
    os.symlink(share / "scan.tif", repo / "inplace" / "scan.tif")
    server = FakeServer(root=str(repo))
    [image] = server.add_fileset([server.original_file(str(share / "scan.tif"), "inplace/", "scan.tif")], "inplace/")
    want = reference([share / "scan.tif"])["iscc"]
    report = annotate(server.access(), [image], worker, str(repo), NS)  # not allowed: through OMERO
    assert report.count(ImageStatus.ANNOTATED) == 1, report.message()
    assert dict(server.pairs(image))["iscc:input"] == "raw-file-store"
    report = annotate(server.access(), [image], worker, str(repo), NS, replace=True, allowed_roots=(str(share),))
    assert report.count(ImageStatus.ANNOTATED) == 1, report.message()
    values = dict(server.pairs(image))
    assert values["iscc:input"] == "managed-repository" and values["iscc:sum"] == want


# -- 6. annotations belong to the image's owner ---------------------------------------------------
def test_an_administrator_annotates_as_the_owner_who_then_sees_and_replaces_it(tmp_path, worker):
    # Before: the administrator owned the annotation; in a private group the owner never saw it.
    repo = tmp_path / "repo"
    server = FakeServer(root=str(repo))
    server.add_group(7, "private lab", "rw----")
    server.add_user(11, "alice", {7})
    server.add_user(12, "bob", {7})
    [image] = server.add_fileset(_files(server, repo, "p/", 1), "p/", group_id=7, owner=11)
    report = annotate(server.access(0), [image], worker, str(repo), NS)
    assert report.count(ImageStatus.ANNOTATED) == 1, report.message()
    assert server.owner_of_iscc(image) == (11, 11)
    assert server.calls.get("createSessionWithTimeout") == 1
    alice = server.access(11)
    assert alice.iscc_annotations([image], NS)[image], "the owner sees it"
    assert not server.access(12).images([image]), "another member of the private group sees nothing"
    report = annotate(alice, [image], worker, str(repo), NS, replace=True)
    assert report.count(ImageStatus.ANNOTATED) == 1 and not report.outcomes[0].message
    assert len(server.iscc_anns(image)) == 1


def test_a_restricted_admin_without_sudo_is_told_the_privilege(tmp_path, worker):
    repo = tmp_path / "repo"
    server = FakeServer(root=str(repo))
    server.add_user(5, "facility", {1}, admin=True, privileges={"WriteOwned", "DeleteOwned"})
    server.add_user(6, "facility2", {1}, admin=True, privileges={"WriteOwned", "DeleteOwned", "Sudo"})
    [image] = server.add_fileset(_files(server, repo, "r/", 1), "r/")
    report = annotate(server.access(5), [image], worker, str(repo), NS)
    [outcome] = report.outcomes
    assert outcome.status is ImageStatus.NOT_PERMITTED and "Sudo privilege" in outcome.message
    assert not server.iscc_anns(image)
    report = annotate(server.access(6), [image], worker, str(repo), NS)
    assert report.count(ImageStatus.ANNOTATED) == 1 and server.owner_of_iscc(image) == (2, 2)


# -- 7. reports never crash a script ----------------------------------------------------------------
@pytest.mark.parametrize("target", ["read_only", "gone"])
def test_a_report_that_cannot_be_attached_ends_in_a_message_and_a_file_output(world, worker, target):
    # Before: attaching to a read-only or vanished object raised out of the script (and the
    # uploaded file annotation stayed behind, linked to nothing).
    verify = load_script("ISCC_Verify")
    ids = [world.locked] if target == "read_only" else [world.single]
    if target == "gone":  # deleted by someone else while the script ran, before its report
        world.server.before_call("saveAndReturnObject", 1, lambda: world.server.remove("Image", world.single))
    params = {"Data_Type": "Image", "IDs": ids}
    message, outputs = verify.verify_selection(world.omero, params, ScriptSettings(worker=worker))
    assert "the report could not be attached to Image" in message and "it is the script's File output" in message
    assert set(outputs) == {"File"}
    [(name, data, mimetype, _owner)] = world.server.uploads.values()
    assert name == "iscc_verify_report.csv" and data.startswith(b"image_id,") and mimetype == "text/csv"
    assert world.server.orphans() == []


# -- 8. server-wide reads are paged -------------------------------------------------------------------
def test_100000_annotated_images_are_read_page_by_page(tmp_path, worker):
    # Before: the whole server's links, annotations and values in one answer.
    import base64
    import io
    import random

    import iscc_core

    data = iscc_core.gen_data_code_v0(io.BytesIO(b"x"), bits=64)["iscc"]
    instance = iscc_core.gen_instance_code_v0(io.BytesIO(b"x"), bits=64)["iscc"]
    body = iscc_core.gen_iscc_code_v0([data, instance])["iscc"][5:]
    header = base64.b32decode(body + "=" * (-len(body) % 8))[:2]
    rng = random.Random(100000)

    def code(body: bytes) -> str:
        return "ISCC:" + base64.b32encode(header + body).decode().rstrip("=")

    server = FakeServer(root=None)
    twin = rng.randbytes(16)
    for k in range(100000):
        image = server.add_image()
        server.add_annotation(image, [["iscc:sum", code(twin if k % 50000 == 0 else rng.randbytes(16))]], NS)
    server.queries.clear()
    report = find_duplicates(server.access(), None, worker, NS)
    assert report.count("identical") == 1
    code_pages = [rows for hql, rows in server.queries if hql == g.Q_CODES_PAGE]
    # A page that ends inside an annotation's rows leaves them to the next page: a row more per page.
    assert max(code_pages) <= g.READ_PAGE and 100000 <= sum(code_pages) <= 100000 + len(code_pages)
    assert max(rows for _, rows in server.queries) <= g.READ_PAGE


# -- 9. scripts behave under the Processor -------------------------------------------------------------
def test_a_scripts_worker_stays_in_its_process_group_and_the_daemons_does_not(tmp_path, worker):
    from omero_iscc import worker as worker_mod

    seen = []
    real = subprocess.Popen

    def spy(args, **kw):
        proc = real(args, **kw)
        seen.append((os.getpgid(proc.pid), kw.get("start_new_session")))
        return proc

    (tmp_path / "f").write_bytes(b"x" * 100)
    from unittest import mock

    with mock.patch.object(worker_mod.subprocess, "Popen", spy):
        list(run_groups(worker, str(tmp_path), [("g", ["f"])]))
        list(run_groups(worker, str(tmp_path), [("g", ["f"])], detach=True))
    assert seen[0] == (os.getpgid(0), False), "a script's worker dies with the script's process group"
    assert seen[1][1] is True and seen[1][0] != os.getpgid(0)


def test_the_new_images_script_keeps_its_time_budget_and_gives_up_a_dead_session(tmp_path, worker):
    script = load_script("ISCC_Annotate_New_Images")
    repo = tmp_path / "repo"
    server = FakeServer(root=str(repo))
    for k in range(3):
        server.add_fileset(_files(server, repo, f"n/{k}/", 1), f"n/{k}/")
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"worker": worker, "state_dir": str(tmp_path / "s"), "script_time_budget": 1e-9}))
    message = script.poll(server.access(0), 10, config_file=str(cfg))
    assert message.startswith("0 annotated"), message
    cfg.write_text(json.dumps({"worker": worker, "state_dir": str(tmp_path / "s")}))
    server.drop_connection_after("projection", 1)
    began = time.monotonic()
    message = script.poll(server.access(0), 10, config_file=str(cfg))
    assert time.monotonic() - began < 5 and "the session to OMERO was lost" in message, message
    assert "0 failed" in message, "a lost session fails no image"


def test_everything_the_server_runs_imports_on_python_3_9():
    # The check tests/run.sh makes too, with vermin from the main test environment (the suite
    # itself also runs on 3.9 with omero-py 5.21.3).
    python = os.environ.get("OMERO_ISCC_PYTHON") or sys.executable
    vermin = str(Path(python).parent / "vermin")
    args = [vermin, "--no-tips", "--violations", "-t=3.9-", "--eval-annotations", str(TOP / "omero_scripts")]
    out = subprocess.run(args, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
