"""Duplicates at import, on the wire stand-in: the scheduler keeps the code index and writes a
notice on each image it annotates that names the images holding the same files, the same
pixels in other files, or nearly the same data, and only those the image's owner may read."""

from __future__ import annotations

import json
import threading
from http.server import HTTPServer
from pathlib import Path

import pytest
from fake_server import FakeServer
from standin import pixels as fake_pixels
from test_pixels import by_label
from test_scheduler import Receiver

from omero_iscc import DUPLICATES_NAMESPACE as DUP
from omero_iscc import duplicates
from omero_iscc.codeindex import CodeIndex, Reader
from omero_iscc.config import Config
from omero_iscc.notices import MAX_NAMED
from omero_iscc.scheduler import Scheduler

#: Users and their groups: a read-only facility group of three, and two private labs.
FACILITY, LAB_A, LAB_B = 70, 50, 60
CAROL, DAVE, ERIN, ALICE, BOB = 71, 72, 73, 51, 61


class Lab:
    """A stand-in server with a facility group and two private labs, files imported by their
    users as ``omero import`` leaves them, and a scheduler running as the administrator."""

    def __init__(self, tmp_path: Path, worker: str, case: dict) -> None:
        self.tmp = tmp_path
        self.worker = worker
        self.case = case
        self.fake = FakeServer(root=str(tmp_path / "repo"))
        self.fake.add_group(FACILITY, "imaging facility", "rwr---")
        self.fake.add_group(LAB_A, "lab A", "rw----")
        self.fake.add_group(LAB_B, "lab B", "rw----")
        for uid, name, group in [
            (CAROL, "carol", FACILITY),
            (DAVE, "dave", FACILITY),
            (ERIN, "erin", FACILITY),
            (ALICE, "alice", LAB_A),
            (BOB, "bob", LAB_B),
        ]:
            self.fake.add_user(uid, name, {group})
        self.state = tmp_path / "state"
        self.source = Path(case["raw"]).parent

    def import_(self, owner: int, group: int, name: str = "duplicate.ome.tif", pixels: bool = True) -> int:
        """``name``: the OME-TIFF or the plain TIFF of the same pixels (iscc-bio's case)."""
        image = self.fake.import_file(str(self.source / name), owner, group)
        if pixels:
            data = Path(self.case["raw"]).read_bytes()
            fmt = "OMETiff" if name.endswith(".ome.tif") else "Tiff"
            sizes, bpp = tuple(self.case["sizes"]), self.case["bytes_per_pixel"]
            fake_pixels.add_pixels(self.fake, image, sizes, self.case["pixel_type"], bpp, data, format=fmt)
        return image

    def scheduler(self, **cfg) -> Scheduler:
        options = {"codes": ["files", "pixels"], "index_reconcile_polls": 0, **cfg}
        config = Config(state_dir=str(self.state), worker=self.worker, poll_interval=60.0, **options)
        return Scheduler(config, lambda _cfg: (None, self.fake.access(0)), sleep=lambda s: None)

    def poll(self, failed: int = 0, **cfg) -> None:
        """One poll; ``failed``: the images expected to fail (those without pixels do, for
        their pixel code)."""
        sched = self.scheduler(**cfg)
        try:
            result = sched.poll_once()
        finally:
            sched.close()
        assert result.failed == failed and not result.unreachable

    def notices(self, image: int) -> list:
        return self.fake.iscc_anns(image, DUP)

    def named(self, image: int) -> dict[int, str] | None:
        """The images an image's one notice names, with their kind (None: no notice)."""
        anns = self.notices(image)
        assert len(anns) <= 1, f"image {image} has {len(anns)} notices"
        if not anns:
            return None
        return {
            int(v.split()[0].removeprefix("Image:")): k.removeprefix("iscc:")
            for k, v in anns[0].pairs
            if v.startswith("Image:")
        }


@pytest.fixture
def lab(tmp_path, worker, cases) -> Lab:
    return Lab(tmp_path, worker, by_label(cases, "duplicate (OME-TIFF)"))


def test_each_owner_is_told_only_what_they_may_read(lab):
    carol = lab.import_(CAROL, FACILITY)
    lab.poll()
    assert lab.named(carol) is None  # nothing was there before

    dave = lab.import_(DAVE, FACILITY)  # the same files
    erin = lab.import_(ERIN, FACILITY, "duplicate.tif")  # the same pixels, another format
    alice = lab.import_(ALICE, LAB_A)  # the same files, in a private lab
    alice_again = lab.import_(ALICE, LAB_A)
    bob = lab.import_(BOB, LAB_B)
    lab.poll()

    assert lab.named(dave) == {carol: "identical", erin: "same_pixels"}
    assert lab.named(erin) == {carol: "same_pixels", dave: "same_pixels"}
    assert lab.named(alice) == {alice_again: "identical"}  # her own copy, nothing of the others
    assert lab.named(alice_again) == {alice: "identical"}
    assert lab.named(bob) is None  # the other private lab and the facility hold it: not his to know
    assert lab.named(carol) is None  # not new: not checked again
    for image in (dave, erin, alice):
        [ann] = lab.notices(image)
        owner, group = lab.fake.images_[image].owner, lab.fake.images_[image].group
        assert (ann.owner, ann.group) == (owner, group)  # the owner's, in the image's group

    # The administrator's view of the same index names everything.
    index = CodeIndex(lab.worker, str(lab.state / "index"))
    code = dict(lab.fake.iscc_anns(bob, "org.iscc.omero.sum")[0].pairs)["iscc:sum"]
    everyone = index.query([{"iscc": code}], 12)[0]["matches"]
    assert len(everyone) == 5  # carol, dave, alice twice, bob (erin's files differ)


def test_the_index_filters_by_the_owners_view(lab, monkeypatch):
    """The index's own answer, before the owner's session reads anything, already holds only
    what the owner's view allows."""
    asked = []
    original = CodeIndex.query

    def recorded(self, queries, threshold):
        answers = original(self, queries, threshold)
        asked.extend(zip(queries, answers))
        return answers

    monkeypatch.setattr(CodeIndex, "query", recorded)
    carol = lab.import_(CAROL, FACILITY)
    alice = lab.import_(ALICE, LAB_A)
    bob = lab.import_(BOB, LAB_B)
    lab.poll()
    views = {ALICE: (LAB_A,), BOB: (LAB_B,), CAROL: (FACILITY,)}
    owner_of = {link.id: link.v["parent"] for link in lab.fake.table("ImageAnnotationLink").values()}
    for q, answer in asked:  # each image's check: the owner's view, and only it in the answer
        owner = lab.fake.images_[owner_of[q["id"]]].owner
        assert {m["group"] for m in answer["matches"]} <= set(views[owner]), (q, answer)
        assert q["visible"]["owner"] == owner
    assert len(asked) == 6  # three images, two codes each
    index = CodeIndex(lab.worker, str(lab.state / "index"))
    code = dict(lab.fake.iscc_anns(carol, "org.iscc.omero.sum")[0].pairs)["iscc:sum"]
    groups = {}
    for user in (CAROL, ALICE, BOB, 0):
        reader = Reader.of(lab.fake.access(user).session_view())
        query = {"iscc": code, **({"visible": reader.visible()} if reader.visible() else {})}
        groups[user] = sorted(m["group"] for m in index.query([query], 12)[0]["matches"])
    assert groups == {CAROL: [FACILITY], ALICE: [LAB_A], BOB: [LAB_B], 0: [LAB_A, LAB_B, FACILITY]}
    assert Reader.of(lab.fake.access(ALICE).session_view()).own_groups == (LAB_A,)
    assert alice and bob


def test_a_fileset_of_several_images_is_not_its_own_duplicate(lab, samples):
    rel = "carol_71/plate/"
    (lab.tmp / "repo" / rel).mkdir(parents=True)
    dest = lab.tmp / "repo" / rel / "plate.tiff"
    dest.write_bytes((samples / "ome-tiff" / "neocortex-3Ch.tiff").read_bytes())
    wells = lab.fake.add_fileset([lab.fake.original_file(str(dest), rel)], rel, 3, FACILITY, CAROL)
    copy = lab.fake.import_file(str(dest), DAVE, FACILITY)
    lab.poll(codes=["files"])
    assert len({a.id for w in wells for a in lab.fake.iscc_anns(w, "org.iscc.omero.sum")}) == 1  # one annotation
    for well in wells:
        assert lab.named(well) == {copy: "identical"}  # not the other wells of its own Fileset
    assert lab.named(copy) == {w: "identical" for w in wells}


def test_an_image_is_not_its_own_duplicate_through_a_second_copy_of_its_code(lab):
    """A second annotation of the same code on the image (a replacement cut short before the
    old one was deleted, or a copy written by hand) does not make it name itself."""
    carol = lab.import_(CAROL, FACILITY)
    dave = lab.import_(DAVE, FACILITY, "duplicate.tif")
    lab.poll(codes=["files"])  # different files: no notice yet
    [ann] = lab.fake.iscc_anns(carol, "org.iscc.omero.sum")
    lab.fake.add_annotation(carol, ann.pairs, "org.iscc.omero.sum")
    lab.poll()  # the pixel codes: both checked again
    assert lab.named(carol) == {dave: "same_pixels"}
    assert lab.named(dave) == {carol: "same_pixels"}


def test_an_image_moved_since_it_was_indexed_is_not_named(lab):
    carol = lab.import_(CAROL, FACILITY)
    lab.poll()
    lab.fake.hide(carol)  # moved into a private group carol's colleagues are not in
    dave = lab.import_(DAVE, FACILITY)
    lab.poll()  # no reconciliation: the index still says the facility group
    rows = {r["id"]: r["group"] for r in CodeIndex(lab.worker, str(lab.state / "index")).rows()}
    assert FACILITY in rows.values() and 99 not in rows.values()
    assert lab.named(dave) is None


def test_similar_data_with_its_distance_and_the_layout(lab, tmp_path, samples):
    original = samples / "ome-tiff" / "neuron-4Ch.tiff"
    carol = lab.fake.import_file(str(original), CAROL, FACILITY)
    lab.poll(codes=["files"])
    data = bytearray(original.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(b ^ 0x5A for b in data[mid : mid + 64])  # edited in the middle
    edited = tmp_path / "edited.tiff"
    edited.write_bytes(bytes(data))
    dave = lab.fake.import_file(str(edited), DAVE, FACILITY)
    lab.poll(codes=["files"])
    [ann] = lab.notices(dave)
    codes = {i: dict(lab.fake.iscc_anns(i, "org.iscc.omero.sum")[0].pairs)["iscc:sum"] for i in (carol, dave)}
    d = duplicates.distance(codes[carol], codes[dave])
    keys = [k for k, _ in ann.pairs]
    assert keys == [
        "iscc:duplicates",
        "iscc:similar",
        "iscc:threshold",
        "iscc:checked",
        "iscc:processor",
        "iscc:version",
    ]
    pairs = dict(ann.pairs)
    assert pairs["iscc:duplicates"] == "1" and pairs["iscc:threshold"] == "12"
    assert 0 < d <= 12 and pairs["iscc:similar"] == f"Image:{carol} (distance {d} of 64 bits)"
    assert pairs["iscc:version"] == "1.0" and pairs["iscc:checked"].endswith("Z")


def test_a_notice_is_replaced_never_doubled_and_events_say_what_it_says(lab):
    Receiver.received = []
    hook = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{hook.server_port}/hook"
    try:
        carol = lab.import_(CAROL, FACILITY, "duplicate.tif")
        dave = lab.import_(DAVE, FACILITY)
        lab.poll(codes=["files"], webhook_url=url)  # files only: nothing in common
        assert lab.named(dave) is None
        erin = lab.import_(ERIN, FACILITY)
        lab.poll(codes=["files"], webhook_url=url)
        assert lab.named(erin) == {dave: "identical"}
        [first] = lab.notices(erin)
        lab.poll(webhook_url=url)  # now the pixel codes: erin's notice grows
        assert lab.named(erin) == {dave: "identical", carol: "same_pixels"}
        [second] = lab.notices(erin)
        assert second.id != first.id and first.id not in lab.fake.anns
        lab.poll(webhook_url=url)  # nothing new: nothing written
        assert [a.id for a in lab.notices(erin)] == [second.id]
    finally:
        hook.shutdown()
        hook.server_close()
    events = [e for e in Receiver.received if e.get("event") == "duplicates"]
    assert [(e["image_id"], [(d["kind"], d["image_id"]) for d in e["duplicates"]]) for e in events] == [
        (erin, [("identical", dave)]),
        (carol, [("same_pixels", dave), ("same_pixels", erin)]),
        (dave, [("identical", erin), ("same_pixels", carol)]),
        (erin, [("identical", dave), ("same_pixels", carol)]),
    ]
    keys = {"event", "image_id", "namespace", "duplicates", "more", "threshold", "timestamp", "server"}
    assert set(events[0]) == keys


def test_more_than_the_notice_names_are_counted(lab):
    copies = [lab.import_(CAROL, FACILITY, pixels=False) for _ in range(MAX_NAMED + 3)]
    lab.poll(codes=["files"])
    pairs = lab.notices(copies[0])[0].pairs
    assert dict(pairs)["iscc:duplicates"] == str(MAX_NAMED + 2)
    assert sum(1 for k, _ in pairs if k == "iscc:identical") == MAX_NAMED
    assert dict(pairs)["iscc:more"] == "2"


def test_a_script_poll_leaves_the_rebuild_to_the_scheduler(lab):
    dave = lab.import_(DAVE, FACILITY, pixels=False)
    erin = lab.import_(ERIN, FACILITY, pixels=False)
    sched = lab.scheduler(codes=["files"])
    sched.deadline = 1e12  # as ISCC_Annotate_New_Images sets it
    try:
        sched.poll_once()
    finally:
        sched.close()
    assert not (lab.state / "index").exists() and lab.named(dave) is None
    state = json.loads((lab.state / "index-state.json").read_text())
    assert state["pending"] == [dave, erin]
    lab.poll(codes=["files"])  # the scheduler: builds the index, then checks what waited
    assert lab.named(dave) == {erin: "identical"} and lab.named(erin) == {dave: "identical"}
