"""``find`` and ``duplicates`` from the scheduler's code index give the answers of the server
read, for every reader, on one world: files and pixel codes, narrow and wide codes, a Fileset
of several images, private and shared groups, a group leader and the administrator."""

from __future__ import annotations

import base64
import json
import shutil

import pytest
from test_index_notices import CAROL, DAVE, ERIN, FACILITY, LAB_A, LAB_B, Lab
from test_pixels import by_label

from omero_iscc import NAMESPACE, PIXELS_NAMESPACE, duplicates, fromindex
from omero_iscc.__main__ import main
from omero_iscc.codeindex import CodeIndex
from omero_iscc.config import ScriptSettings
from omero_iscc.jobs import annotate_job, duplicates_job

ALICE, BOB, LEAD = 51, 61, 80


@pytest.fixture(scope="module")
def world(tmp_path_factory, worker, cases, samples):
    """Built once: a scheduler poll indexes it, then the tests only read."""
    tmp = tmp_path_factory.mktemp("answers")
    lab = Lab(tmp, worker, by_label(cases, "duplicate (OME-TIFF)"))
    lab.fake.keep = True
    lab.fake.add_user(LEAD, "lead", {LAB_A})
    lab.fake.groups[LAB_A].leaders.add(LEAD)
    images = {
        "carol": lab.import_(CAROL, FACILITY),
        "dave": lab.import_(DAVE, FACILITY),
        "erin tif": lab.import_(ERIN, FACILITY, "duplicate.tif"),
        "alice": lab.import_(ALICE, LAB_A),
        "alice tif": lab.import_(ALICE, LAB_A, "duplicate.tif"),
        "bob": lab.import_(BOB, LAB_B),
        "bob tif": lab.import_(BOB, LAB_B, "duplicate.tif"),
    }
    original = samples / "ome-tiff" / "neuron-4Ch.tiff"
    data = original.read_bytes()
    edited = bytearray(data)
    edited[len(data) // 2 : len(data) // 2 + 64] = bytes(b ^ 0x5A for b in edited[len(data) // 2 : len(data) // 2 + 64])
    for label, content, owner, group in [
        ("neuron", data, CAROL, FACILITY),
        ("neuron edited", bytes(edited), DAVE, FACILITY),
        ("neuron extended", data + bytes(range(256)) * 120, ALICE, LAB_A),
        ("neuron copy", data, BOB, LAB_B),
        ("neuron wide", data, ERIN, FACILITY),
        ("neuron edited wide", bytes(edited), ERIN, FACILITY),
    ]:
        path = tmp / label.replace(" ", "-")
        path.write_bytes(content)
        images[label] = lab.fake.import_file(str(path), owner, group)
    # A Fileset of three images (one file): one annotation linked to each.
    rel = "carol_71/plate/"
    (tmp / "repo" / rel).mkdir(parents=True)
    dest = tmp / "repo" / rel / "plate.tiff"
    shutil.copyfile(samples / "ome-tiff" / "neocortex-3Ch.tiff", dest)
    fid = lab.fake.original_file(str(dest), rel)
    wells = lab.fake.add_fileset([fid], rel, n_images=3, group_id=FACILITY, owner=CAROL)
    lab.poll(failed=9)  # files and pixels codes (the nine images without pixels have none); the index built
    # Erin gives two of her images wide codes (the old annotations replaced), by a script.
    settings = ScriptSettings(worker=worker, repository=lab.fake.root)
    wide = [images["neuron wide"], images["neuron edited wide"]]
    annotate_job(lab.fake.access(ERIN), "Image", wide, settings, replace=True, wide=True)
    # Codes written by hand into the namespace: a chain A ~ B ~ C (8 bits apart each, A and C
    # 16 apart) whose middle is in another lab: without B, A and C are no group.
    some = dict(lab.fake.iscc_anns(images["carol"], NAMESPACE)[0].pairs)["iscc:sum"]
    body = some.removeprefix("ISCC:")
    head = base64.b32decode(body + "=" * (-len(body) % 8))[:2]
    chain = [0x0123_4567_89AB_CDEF, 0x0123_4567_89AB_CDEF ^ 0xFF, 0x0123_4567_89AB_CDEF ^ 0xFF ^ 0xFF00]
    for label, data, owner, group in zip(
        ("chain A", "chain B", "chain C"), chain, (CAROL, BOB, DAVE), (FACILITY, LAB_B, FACILITY)
    ):
        raw = head + data.to_bytes(8, "big") + (data ^ 0x5555).to_bytes(8, "big")
        images[label] = lab.fake.add_image(group, owner, label)
        lab.fake.add_annotation(
            images[label], [["iscc:sum", "ISCC:" + base64.b32encode(raw).decode().rstrip("=")]], NAMESPACE
        )
    lab.poll(codes=["files"], index_reconcile_polls=1)  # picked up, the replaced ones reconciled away
    lab.images, lab.wells = images, wells
    yield lab
    lab.fake.keep = False


READERS = [0, CAROL, ERIN, ALICE, BOB, LEAD]


def report_of(report) -> list:
    return [
        (
            g["kind"],
            [
                (c.image_id, c.name, c.owner, c.group, c.iscc, d, c.format, c.files_iscc, c.code)
                for c, d in g["members"]
            ],
        )
        for g in report.groups
    ]


def index_of(world) -> CodeIndex:
    return CodeIndex(world.worker, str(world.state / "index"))


@pytest.mark.parametrize("reader", READERS)
def test_duplicates_from_the_index_equal_the_server_read(world, worker, reader):
    access = world.fake.access(reader)
    on_server = duplicates.find_duplicates(access, None, worker, NAMESPACE, 12, PIXELS_NAMESPACE)
    before = len(world.fake.queries)
    source = fromindex.IndexSource(access, index_of(world))
    from_index = duplicates.find_duplicates(access, None, worker, NAMESPACE, 12, PIXELS_NAMESPACE, source=source)
    assert report_of(from_index) == report_of(on_server)
    assert on_server.groups, "the world must hold duplicates for every reader"
    assert not any("join a.mapValue mv" in text and "l.id > :after" in text for text, _ in world.fake.queries[before:])


def test_the_readers_see_what_they_may(world, worker):
    """What the equal answers hold, reader by reader (so that equality is not of two empty
    answers, nor of two answers that both show too much)."""
    seen = {}
    for reader in READERS:
        report = duplicates.find_duplicates(world.fake.access(reader), None, worker, NAMESPACE)
        seen[reader] = {c.image_id for g in report.groups for c, _ in g["members"]}
    imgs = world.images
    assert imgs["bob"] in seen[0] and imgs["alice"] in seen[0]
    assert imgs["bob"] not in seen[CAROL] and imgs["alice"] not in seen[CAROL]
    assert seen[ALICE] == {imgs["alice"], imgs["alice tif"]}  # her own same pixels
    assert seen[LEAD] == seen[ALICE]  # the leader of her lab sees her images
    assert imgs["carol"] in seen[CAROL] and set(world.wells) <= seen[CAROL]
    assert seen[BOB] == {imgs["bob"], imgs["bob tif"]}  # not his "neuron copy": no duplicate he may see
    assert {imgs["chain A"], imgs["chain B"], imgs["chain C"]} <= seen[0]  # B joins A and C
    assert imgs["chain A"] not in seen[CAROL] and imgs["chain C"] not in seen[CAROL]  # without B: no group


@pytest.mark.parametrize("reader", READERS)
def test_find_from_the_index_equals_the_server_read(world, worker, reader, monkeypatch):
    access = world.fake.access(reader)
    index = index_of(world)
    view = fromindex.Reader.of(access.session_view())
    original = CodeIndex.query

    def within_the_view(self, queries, threshold):
        """The index is asked with the reader's view, and answers within it."""
        answers = original(self, queries, threshold)
        for q, a in zip(queries, answers):
            assert q.get("visible") == view.visible()
            assert all(view.may_see(m["group"], m["owner"]) for m in a["matches"])
        return answers

    monkeypatch.setattr(CodeIndex, "query", within_the_view)
    queries = [str(i) for i in sorted(world.images.values())] + [str(world.wells[1])]
    codes = {dict(a.pairs)["iscc:sum"] for i in world.images.values() for a in world.fake.iscc_anns(i, NAMESPACE)}
    queries += sorted(codes)
    for query in queries:
        try:
            on_server = duplicates.find(access, query, NAMESPACE, 12, PIXELS_NAMESPACE)
        except LookupError:  # an image this reader cannot see
            with pytest.raises(LookupError):
                fromindex.find(access, index, query, NAMESPACE, 12, PIXELS_NAMESPACE)
            continue
        from_index = fromindex.find(access, index, query, NAMESPACE, 12, PIXELS_NAMESPACE)
        assert [(vars(c), d) for c, d in from_index] == [(vars(c), d) for c, d in on_server], query


def test_wide_and_narrow_codes_follow_one_rule(world, worker):
    """A wide pair is compared over 128 bits (threshold doubled), a wide and a narrow code
    over their first 64: ``find`` (both paths) and ``duplicates`` (the worker's ``similar``)
    join the same pairs."""
    imgs = world.images
    wide = dict(world.fake.iscc_anns(imgs["neuron wide"], NAMESPACE)[0].pairs)["iscc:sum"]
    edited_wide = dict(world.fake.iscc_anns(imgs["neuron edited wide"], NAMESPACE)[0].pairs)["iscc:sum"]
    narrow = dict(world.fake.iscc_anns(imgs["neuron"], NAMESPACE)[0].pairs)["iscc:sum"]
    assert wide.startswith("ISCC:K4") and narrow.startswith("ISCC:KU")
    d128 = duplicates.distance(wide, edited_wide)
    hits = {c.image_id: d for c, d in duplicates.find(world.fake.access(0), wide, NAMESPACE)}
    assert hits[imgs["neuron edited wide"]] == d128 and hits[imgs["neuron"]] == 0
    report = duplicates.find_duplicates(world.fake.access(0), None, worker, NAMESPACE)
    [similar] = [
        g
        for g in report.groups
        if g["kind"] == "similar" and any(c.image_id == imgs["neuron"] for c, _ in g["members"])
    ]
    members = {c.image_id for c, _ in similar["members"]}
    assert {imgs["neuron wide"], imgs["neuron edited wide"], imgs["neuron edited"]} <= members


def test_the_cli_answers_from_the_index_and_falls_back_to_the_server(world, worker, capsys):
    code = dict(world.fake.iscc_anns(world.images["carol"], NAMESPACE)[0].pairs)["iscc:sum"]
    argv = ["--state-dir", str(world.state), "--worker", worker, "find", code]
    connect = lambda _cfg: (None, world.fake.access(CAROL))  # noqa: E731
    assert main(argv, connect=connect) == 0
    indexed = capsys.readouterr()
    assert "(from the code index)" in indexed.err and indexed.out.count("\n") == 2  # carol and dave
    state_file = world.state / "index-state.json"
    saved = state_file.read_text()
    try:
        state = json.loads(saved)
        state["synced_at"] -= state["fresh_for"] + 1  # the scheduler stopped long ago
        state_file.write_text(json.dumps(state))
        assert main(argv, connect=connect) == 0
        read = capsys.readouterr()
        assert "(from the server's annotations)" in read.err and read.out == indexed.out
    finally:
        state_file.write_text(saved)


def test_the_duplicates_job_answers_from_the_index(world, worker):
    access = world.fake.access(0)
    on_server = duplicates_job(access, "Image", [], ScriptSettings(worker=worker), scope="Server")
    before = len(world.fake.queries)
    settings = ScriptSettings(worker=worker, state_dir=str(world.state))
    from_index = duplicates_job(access, "Image", [], settings, scope="Server")
    assert (from_index.message, from_index.rows, from_index.report) == (
        on_server.message,
        on_server.rows,
        on_server.report,
    )
    texts = [text for text, _ in world.fake.queries[before:]]
    assert not any(text.startswith("select l.id, l.parent.id, mv.name") for text in texts)  # no server-wide read
