"""The scheduler's code index kept up to date from the server: codes written elsewhere picked up
by link id, deleted and replaced annotations reconciled away, a missing or damaged index
rebuilt from the server's annotations."""

from __future__ import annotations

import json
import logging
import os

import pytest
from test_scheduler import backlog

from omero_iscc import codeindex
from omero_iscc.codeindex import CodeIndex, KeptIndex
from omero_iscc.config import Config, ScriptSettings
from omero_iscc.jobs import annotate_job
from omero_iscc.scheduler import Scheduler

NS = "org.iscc.omero.sum"


def scheduler(tmp_path, fake, worker, **cfg) -> Scheduler:
    config = Config(state_dir=str(tmp_path / "state"), worker=worker, poll_interval=60.0, **cfg)
    return Scheduler(config, lambda _cfg: (None, fake.access(0)), sleep=lambda s: None)


def poll(tmp_path, fake, worker, **cfg):
    sched = scheduler(tmp_path, fake, worker, **cfg)
    try:
        return sched.poll_once()
    finally:
        sched.close()


def rows(tmp_path, worker) -> dict[int, dict]:
    return {r["id"]: r for r in CodeIndex(worker, str(tmp_path / "state" / "index")).rows()}


def links(fake, namespace: str = NS) -> dict[int, tuple[int, str]]:
    """Every image link of a code annotation on the server: link id -> (image id, code)."""
    out = {}
    for link in fake.table("ImageAnnotationLink").values():
        ann = fake.anns.get(link.v["child"])
        if ann is not None and ann.v.get("ns") == namespace:
            code = dict(ann.pairs).get("iscc:sum")
            if code:
                out[link.id] = (link.v["parent"], code)
    return out


def index_view(tmp_path, worker) -> dict[int, tuple[int, str]]:
    """The index's rows as (image id, code) per link, the image read back from the link."""
    return {i: (None, r["iscc"]) for i, r in rows(tmp_path, worker).items()}


def same_as_server(tmp_path, worker, fake) -> None:
    server = links(fake)
    kept = rows(tmp_path, worker)
    assert sorted(kept) == sorted(server)
    for link, (image, code) in server.items():
        img = fake.images_[image]
        assert (kept[link]["iscc"], kept[link]["group"], kept[link]["owner"]) == (code, img.group, img.owner)


def test_every_code_it_writes_and_a_fileset_per_image(tmp_path, worker):
    fake, ids, _ = backlog(tmp_path, 6)
    assert poll(tmp_path, fake, worker).annotated == 6
    same_as_server(tmp_path, worker, fake)
    state = json.loads((tmp_path / "state" / "index-state.json").read_text())
    assert state["complete"] and state["mark"] == max(links(fake))


def test_codes_written_elsewhere_are_picked_up_by_link_id_alone(tmp_path, worker):
    fake, ids, _ = backlog(tmp_path, 8)
    poll(tmp_path, fake, worker, batch_size=4)  # the scheduler annotates four
    # A user's script annotates two more, and a Fileset of three images appears, annotated too.
    settings = ScriptSettings(worker=worker, repository=fake.root)
    annotate_job(fake.access(2), "Image", ids[6:8], settings)
    before = len(fake.queries)
    result = poll(tmp_path, fake, worker, batch_size=2)  # the scheduler annotates two of its own
    assert result.annotated == 2
    same_as_server(tmp_path, worker, fake)
    # The pick-up read only the links above the mark: no server-wide read of the codes.
    read = [(text, n) for text, n in fake.queries[before:] if "join a.mapValue mv" in text]
    assert read and all("l.id > :after" in text or "in (:ids)" in text for text, _ in read)
    assert sum(n for text, n in read if "l.id > :after" in text) <= 2 * 4  # 4 new links, 2 rows each


def test_a_deleted_or_replaced_annotation_leaves_the_index(tmp_path, worker):
    fake, ids, _ = backlog(tmp_path, 5)
    poll(tmp_path, fake, worker)
    gone = fake.iscc_anns(ids[0])[0].id
    assert fake.access(2).delete_annotations([gone]) == []  # the owner deletes it
    settings = ScriptSettings(worker=worker, repository=fake.root)
    old = fake.iscc_anns(ids[1])[0].id
    annotate_job(fake.access(2), "Image", [ids[1]], settings, replace=True)
    assert old not in fake.anns
    poll(tmp_path, fake, worker, index_reconcile_polls=0)  # never reconciled: both stay
    assert len(rows(tmp_path, worker)) == len(links(fake)) + 2
    poll(tmp_path, fake, worker, index_reconcile_polls=1)
    same_as_server(tmp_path, worker, fake)


def test_a_moved_image_is_updated_and_a_late_link_added(tmp_path, worker):
    fake, ids, _ = backlog(tmp_path, 4)
    poll(tmp_path, fake, worker)
    fake.hide(ids[2])  # moved into another group, to another owner
    state_file = tmp_path / "state" / "index-state.json"
    state = json.loads(state_file.read_text())
    # A link saved under a lower id than the mark after the mark was read (a slow transaction):
    late = min(links(fake))
    CodeIndex(worker, str(tmp_path / "state" / "index")).remove([late])
    state["generation"] += 1  # as the remove changed it: reconciliation comes on its count alone
    state_file.write_text(json.dumps(state))
    poll(tmp_path, fake, worker, index_reconcile_polls=1)
    same_as_server(tmp_path, worker, fake)


def test_another_writer_is_reconciled_at_once(tmp_path, worker, caplog):
    fake, ids, _ = backlog(tmp_path, 3)
    poll(tmp_path, fake, worker, index_reconcile_polls=0)
    CodeIndex(worker, str(tmp_path / "state" / "index")).remove([min(links(fake))])
    caplog.set_level(logging.INFO)
    poll(tmp_path, fake, worker, index_reconcile_polls=0)
    assert "reconciling" in caplog.text
    same_as_server(tmp_path, worker, fake)


@pytest.mark.parametrize("damage", ["missing", "segment", "manifest"])
def test_a_missing_or_damaged_index_is_rebuilt_with_progress(tmp_path, worker, caplog, monkeypatch, damage):
    fake, ids, _ = backlog(tmp_path, 7)
    poll(tmp_path, fake, worker)
    index_dir = tmp_path / "state" / "index"
    if damage == "missing":
        for f in index_dir.iterdir():
            f.unlink()
        index_dir.rmdir()
    elif damage == "segment":
        [segment] = [f for f in index_dir.iterdir() if f.suffix == ".isx"]
        data = bytearray(segment.read_bytes())
        data[len(data) // 2] ^= 0xFF
        segment.write_bytes(bytes(data))
    else:
        (index_dir / "MANIFEST").write_text("{not json")
    monkeypatch.setattr(codeindex, "PROGRESS_EVERY", 4)
    monkeypatch.setattr(codeindex, "PAGE", 4)  # two rows per link: two links a page
    caplog.set_level(logging.INFO)
    poll(tmp_path, fake, worker)
    assert "code index: rebuilding" in caplog.text
    assert "code index: rebuilding: 4 code links read" in caplog.text  # progress, page by page
    assert "rebuilt from the server's annotations: 7 files code(s)" in caplog.text
    same_as_server(tmp_path, worker, fake)


def test_a_malformed_code_a_user_wrote_is_refused_once(tmp_path, worker, caplog):
    fake, ids, _ = backlog(tmp_path, 3)
    bad = fake.add_image()
    fake.add_annotation(bad, [["iscc:sum", "ISCC:NOT-A-CODE"]], NS)
    caplog.set_level(logging.INFO)
    poll(tmp_path, fake, worker, index_reconcile_polls=1)
    kept = rows(tmp_path, worker)
    assert len(kept) == 3 and all(fake.images_[i].owner for i in ids)
    state = json.loads((tmp_path / "state" / "index-state.json").read_text())
    assert len(state["refused"]) == 1
    caplog.clear()
    poll(tmp_path, fake, worker, index_reconcile_polls=1)
    assert "refused" not in caplog.text  # not read again, not logged again


def test_the_kept_index_as_a_library(tmp_path, worker):
    """``KeptIndex.step`` with no scheduler around it: the building block ``after_poll`` uses."""
    fake, ids, _ = backlog(tmp_path, 2)
    poll(tmp_path, fake, worker, index=False)  # annotated, no index kept
    assert not (tmp_path / "state" / "index").exists()
    kept = KeptIndex(worker, str(tmp_path / "state"), {"files": NS, "pixels": "org.iscc.omero.pixels"})
    assert kept.step(fake.access(0)) == []  # built: nothing new to a reader
    assert os.path.isfile(tmp_path / "state" / "index" / "MANIFEST")
    same_as_server(tmp_path, worker, fake)
