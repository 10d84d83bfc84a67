"""What only a server below omero-py shows: the helper against the stand-in on the wire, where
Ice checks every argument and the server's rules refuse what a server refuses. Each test names
the server rule it meets (docs/testing.md lists them with their sources)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import NS
from fake_server import FakeServer
from standin.world import USER_GROUP

from omero_iscc.annotate import annotate
from omero_iscc.config import Config
from omero_iscc.scheduler import Scheduler
from omero_iscc.statuses import ImageStatus


def _file(repo: Path, rel: str, size: int = 3000) -> str:
    p = repo / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(os.urandom(size))
    return str(p)


def _images(server: FakeServer, repo: Path, n: int, group: int = 1, owner: int = 2, prefix: str = "i") -> list[int]:
    out = []
    for k in range(n):
        rel = f"{prefix}/{k}/"
        out += server.add_fileset(
            [server.original_file(_file(repo, rel + "a.tif"), rel)], rel, group_id=group, owner=owner
        )
    return out


# -- sudo: Principal.group is a string; sessions reused and renewed -------------------------------
def _facility(server: FakeServer) -> int:
    """A restricted administrator who annotates as the owners through sudo sessions."""
    server.add_user(5, "facility", set(), admin=True, privileges={"Sudo", "WriteOwned", "DeleteOwned"})
    return 5


def test_an_administrator_annotates_another_users_image_in_a_session_of_its_owner(tmp_path, worker):
    # ISession.createSessionWithTimeout(Principal{name, group, eventType}, ttl): `group` is a
    # Slice string, so Ice refuses an int before anything is sent.
    repo = tmp_path / "repo"
    server = FakeServer(root=str(repo))
    images = _images(server, repo, 3)
    report = annotate(server.access(_facility(server)), images, worker, str(repo), NS, units_per_run=1)
    assert report.count(ImageStatus.ANNOTATED) == 3, report.message()
    assert all(server.owner_of_iscc(i) == (2, 2) for i in images)
    assert server.calls["createSessionWithTimeout"] == 1, "one sudo session per owner and group"


def test_a_sudo_session_is_renewed_before_its_time_to_live_ends(tmp_path, worker, monkeypatch):
    # The ttl of createSessionWithTimeout is the sudo session's whole lifetime: a session kept
    # for a long run dies under it (SessionTimeoutException), keep-alives or not.
    import time

    from omero_iscc import gateway

    monkeypatch.setattr(gateway, "SUDO_TTL_MS", 2000)
    repo = tmp_path / "repo"
    server = FakeServer(root=str(repo))
    first, second = _images(server, repo, 2)
    omero = server.access(_facility(server))
    assert annotate(omero, [first], worker, str(repo), NS).count(ImageStatus.ANNOTATED) == 1
    time.sleep(1.1)  # past half the lifetime on the helper's clock...
    server.advance(1.5)  # ...and past all of it on the server's
    report = annotate(omero, [second], worker, str(repo), NS)
    assert report.count(ImageStatus.ANNOTATED) == 1, report.message()
    assert server.calls["createSessionWithTimeout"] == 2 and server.owner_of_iscc(second) == (2, 2)


def test_a_slow_delete_is_waited_for_to_the_end(tmp_path, worker):
    # Delete2 answers through its Handle; omero-py's deleteObjects(wait=True) gives up after
    # 10 x 500 ms and closes the handle, which cancels (rolls back) the request.
    repo = tmp_path / "repo"
    server = FakeServer(root=str(repo))
    [image] = _images(server, repo, 1)
    omero = server.access(2)
    annotate(omero, [image], worker, str(repo), NS)
    [old] = server.iscc_anns(image)
    server.delete_seconds = 5.5
    report = annotate(omero, [image], worker, str(repo), NS, replace=True)
    assert report.count(ImageStatus.ANNOTATED) == 1 and not report.outcomes[0].message, report.outcomes
    assert [a.id for a in server.iscc_anns(image)] != [old.id] and len(server.iscc_anns(image)) == 1


def test_a_refused_delete_leaves_that_annotation_and_deletes_the_others(tmp_path, worker):
    # Delete2 is one transaction: one target the session may not delete rolls back all.
    repo = tmp_path / "repo"
    server = FakeServer(root=str(repo))
    server.add_user(13, "colleague", {1})
    a, b = _images(server, repo, 2)
    theirs = server.add_annotation(a, [["iscc:sum", "ISCC:KUAX"]], NS, owner=13)  # a colleague's, long ago
    mine = server.add_annotation(b, [["iscc:sum", "ISCC:KUAX"]], NS)
    report = annotate(server.access(2), [a, b], worker, str(repo), NS, replace=True)
    assert report.count(ImageStatus.ANNOTATED) == 2, report.message()
    assert mine not in server.anns, "the member's own old annotation is deleted"
    assert theirs in server.anns, "the colleague's stays: the member may not delete it"
    by_image = {o.image_id: o.message for o in report.outcomes}
    assert str(theirs) in by_image[a] and not by_image[b]


def test_a_restricted_admin_without_delete_owned_retires_an_old_annotation_as_its_owner(tmp_path, worker):
    # A restricted administrator may delete others' objects only with DeleteOwned; with Sudo
    # the owner's own session deletes what the owner owns.
    repo = tmp_path / "repo"
    server = FakeServer(root=str(repo))
    server.add_user(5, "facility", set(), admin=True, privileges={"Sudo", "WriteOwned"})
    [image] = _images(server, repo, 1)
    old = server.add_annotation(image, [["iscc:sum", "ISCC:KUAX"]], NS)  # the owner's
    report = annotate(server.access(5), [image], worker, str(repo), NS, replace=True)
    assert report.count(ImageStatus.ANNOTATED) == 1 and not report.outcomes[0].message, report.outcomes
    assert old not in server.anns and len(server.iscc_anns(image)) == 1


@pytest.mark.parametrize("target", ["read_only", "gone"])
def test_a_report_that_cannot_be_attached_is_uploaded_in_the_targets_group(tmp_path, worker, target):
    # A new object saved with omero.group -1 is refused (ApiUsageException): the File output
    # is uploaded in the session's own group.
    from test_annotate import load_script

    from omero_iscc.config import ScriptSettings

    repo = tmp_path / "repo"
    server = FakeServer(root=str(repo))
    [locked] = server.add_fileset(
        [server.original_file(_file(repo, "b/x.tif"), "b/")], "b/", can_annotate=False
    )  # the boss's image in a read-only group
    verify = load_script("ISCC_Verify")
    params = {"Data_Type": "Image", "IDs": [locked] if target == "read_only" else [999999]}
    message, outputs = verify.verify_selection(server.access(2), params, ScriptSettings(worker=worker))
    assert "it is the script's File output" in message and set(outputs) == {"File"}, message
    [(fid, (name, data, mimetype, owner))] = server.uploads.items()
    assert name == "iscc_verify_report.csv" and data.startswith(b"image_id,") and owner == 2
    # In the target's group, for whom the report was written; without one, the session's.
    assert server.files[fid].group == (3 if target == "read_only" else 1), server.files[fid].group


# -- queries: distinct rows, import order, pages of rows (item 8) ---------------------------------
def test_an_images_annotation_comes_back_once_whatever_its_number_of_pairs(tmp_path, worker):
    # A join (fetch) over a collection returns a row per element: without `distinct` the link
    # comes back once per key-value pair.
    repo = tmp_path / "repo"
    server = FakeServer(root=str(repo))
    [image] = _images(server, repo, 1, prefix="scientist_2/a")
    omero = server.access()
    annotate(omero, [image], worker, str(repo), NS)
    anns = omero.iscc_annotations([image], NS)[image]
    assert [a.getId().val for a in anns] == [a.id for a in server.iscc_anns(image)], anns


def test_a_filesets_files_are_read_in_import_order_not_by_entry_id(tmp_path, worker):
    # Fileset.usedFiles is a list: its order (index(e)) is the import order, which entry ids
    # need not follow.
    from conftest import reference

    repo = tmp_path / "repo"
    server = FakeServer(root=str(repo))
    rel = "scientist_2/2026-12/01/ordered/"
    paths = [_file(repo, rel + f"part{k}.bin", 1000 + k) for k in range(3)]
    [image] = server.add_fileset([server.original_file(p, rel) for p in paths], rel)
    entries = sorted(
        (e for e in server.table("FilesetEntry").values() if e.v["fileset"] == server.images_[image].v["fileset"]),
        key=lambda e: e.id,
    )
    for position, entry in zip([2, 0, 1], entries):  # imported as part1, part2, part0
        entry.position = position
    server.changed()
    report = annotate(server.access(), [image], worker, str(repo), NS)
    assert report.count(ImageStatus.ANNOTATED) == 1, report.message()
    order = [Path(paths[k]) for k in (1, 2, 0)]
    assert dict(server.pairs(image))["iscc:sum"] == reference(order)["iscc"]


def test_a_large_filesets_entries_are_read_in_pages_of_rows(tmp_path, worker, monkeypatch):
    # A 100,000-file Fileset must never be one answer: the entries are paged by rows.
    from omero_iscc import gateway
    from omero_iscc.filesets import plan

    monkeypatch.setattr(gateway, "READ_PAGE", 50)
    server = FakeServer(root=str(tmp_path))
    rel = "scientist_2/big/"
    files = [server.original_file(str(tmp_path / rel / f"f{k:04d}"), rel) for k in range(120)]
    images = server.add_fileset(files, rel)
    omero = server.access()
    [unit] = plan(omero, omero.images(images))
    assert [f.name for f in unit.files] == [f"f{k:04d}" for k in range(120)]
    entry_queries = [rows for text, rows in server.queries if "usedFiles" in text or "FilesetEntry" in text]
    assert entry_queries and max(entry_queries) <= 50, entry_queries


def test_the_children_of_many_parents_come_from_one_query(tmp_path):
    # A project of 40 datasets is expanded with one query per level, not one per dataset
    # (each a round trip, and the server's parse and plan).
    from omero_iscc.selection import expand

    server = FakeServer(root=str(tmp_path))
    datasets = list(range(300, 340))
    images = {d: [server.add_image(), server.add_image()] for d in datasets}
    for d in reversed(datasets):
        server.add_container("Dataset", d, images[d])
    server.add_container("Project", 7, datasets)
    server.queries.clear()
    ids, missing = expand(server.access(), "Project", [7])
    assert ids == [i for d in datasets for i in sorted(images[d])] and missing == []
    per_level = [text for text, _rows in server.queries if "AnnotationLink" not in text]
    assert len(per_level) == 3, per_level  # the project, its datasets, their images


# -- who may annotate whose image (item 5) ---------------------------------------------------------
def _colleagues(tmp_path: Path, perms: str):
    """A group of ``perms`` with two members, and an image of each."""
    repo = tmp_path / "repo"
    server = FakeServer(root=str(repo))
    server.add_group(50, "lab", perms)
    server.add_user(51, "ann", {50})
    server.add_user(52, "bob", {50})
    images = {}
    for uid, name in ((51, "ann"), (52, "bob")):
        rel = f"{name}_{uid}/2026-12/01/x/"
        images[uid] = server.add_fileset(
            [server.original_file(_file(repo, rel + "a.tif"), rel)], rel, group_id=50, owner=uid
        )[0]
    return server, repo, images


@pytest.mark.parametrize("perms", ["rwra--", "rwrw--"])
def test_a_member_annotates_a_colleagues_image_where_the_group_lets_members_annotate(tmp_path, worker, perms):
    # BasicACLVoter: a member has the group's rights (annotate in rwra-- and rwrw--); no Sudo
    # is needed, and the annotation is the member's own.
    server, repo, images = _colleagues(tmp_path, perms)
    report = annotate(server.access(51), [images[52]], worker, str(repo), NS)
    assert report.count(ImageStatus.ANNOTATED) == 1, report.message()
    assert server.owner_of_iscc(images[52]) == (51, 51)


def test_a_member_of_a_read_only_group_may_not_annotate_a_colleagues_image(tmp_path, worker):
    server, repo, images = _colleagues(tmp_path, "rwr---")
    report = annotate(server.access(51), [images[52]], worker, str(repo), NS)
    [outcome] = report.outcomes
    assert outcome.status is ImageStatus.NOT_PERMITTED and "may not annotate" in outcome.message, outcome
    assert not server.iscc_anns(images[52])


def test_a_restricted_admin_with_write_owned_and_without_sudo_annotates_in_its_own_name(tmp_path, worker):
    server, repo, images = _colleagues(tmp_path, "rwra--")
    server.add_user(55, "facility", set(), admin=True, privileges={"WriteOwned"})
    report = annotate(server.access(55), [images[52]], worker, str(repo), NS)
    assert report.count(ImageStatus.ANNOTATED) == 1, report.message()
    assert server.owner_of_iscc(images[52]) == (55, 55)


def test_a_group_leader_annotates_a_members_image_in_a_private_group_as_its_owner(tmp_path, worker):
    # Leaders may open sessions of their groups' members (SessionBean.createSessionWithTimeouts
    # passes the groups led); in a private group only the owner's own annotation may be linked.
    server, repo, images = _colleagues(tmp_path, "rw----")
    server.groups[50].leaders.add(51)
    report = annotate(server.access(51), [images[52]], worker, str(repo), NS)
    assert report.count(ImageStatus.ANNOTATED) == 1, report.message()
    assert server.owner_of_iscc(images[52]) == (52, 52)


# -- sessions per run (item 1) ---------------------------------------------------------------------
def _owners_in_groups(tmp_path: Path):
    """Images of three owners in a private and a read-annotate group."""
    repo = tmp_path / "repo"
    server = FakeServer(root=str(repo))
    server.add_group(60, "private", "rw----")
    server.add_group(61, "shared", "rwra--")
    images = []
    for uid, name in ((62, "u1"), (63, "u2"), (64, "u3")):
        server.add_user(uid, name, {60, 61})
        for gid in (60, 61):
            rel = f"{name}_{uid}/2026-12/01/g{gid}/"
            images += server.add_fileset(
                [server.original_file(_file(repo, rel + "a.tif"), rel)], rel, group_id=gid, owner=uid
            )
    return server, repo, images


def test_a_full_administrator_annotates_as_each_owner_without_a_session_per_owner(tmp_path, worker):
    # A full administrator sets the owner of the new annotation and link directly
    # (OmeroInterceptor.newTransientDetails; in a private group too: ticket:8979).
    server, repo, images = _owners_in_groups(tmp_path)
    omero = server.access(0)
    before = server.opened["sessions"], len(server.opened["connections"])
    report = annotate(omero, images, worker, str(repo), NS)
    assert report.count(ImageStatus.ANNOTATED) == 6, report.message()
    assert all(server.owner_of_iscc(i) == (server.images_[i].owner,) * 2 for i in images)
    assert (server.opened["sessions"], len(server.opened["connections"])) == before, "no session, no communicator"
    assert server.calls.get("createSessionWithTimeout", 0) == 0


def test_a_restricted_administrator_opens_one_sudo_session_per_owner_and_group_for_a_whole_run(tmp_path, worker):
    # Sudo: one session (and one communicator) per (owner, group), kept across the polls of
    # a run while its lifetime lasts.
    server, repo, images = _owners_in_groups(tmp_path)
    server.add_user(65, "facility", set(), admin=True, privileges={"Sudo", "WriteOwned", "DeleteOwned"})
    cfg = Config(state_dir=str(tmp_path / "state"), worker=worker, repository=str(repo), batch_size=2)
    scheduler = Scheduler(cfg, lambda c: (None, server.access(65)), sleep=lambda s: None)
    before = server.opened["sessions"], len(server.opened["connections"])
    for _ in range(4):
        scheduler.poll_once()
    scheduler.close()
    assert all(server.iscc_anns(i) for i in images)
    sessions = server.opened["sessions"] - before[0]
    connections = len(server.opened["connections"]) - before[1]
    assert (sessions, connections) == (1 + 6, 1 + 6), "the login, and one per owner and group"


def test_an_owner_who_left_the_group_or_was_disabled_is_that_images_not_permitted(tmp_path, worker):
    # SecurityViolation of createSessionWithTimeout for an inactive user or one not in the
    # group: that image is not permitted, the others are annotated.
    server, repo, images = _owners_in_groups(tmp_path)
    server.add_user(65, "facility", set(), admin=True, privileges={"Sudo", "WriteOwned", "DeleteOwned"})
    server.users[62].groups.discard(61)  # u1 left the shared group
    server.users[63].groups.discard(USER_GROUP)  # u2 is disabled
    for user in (0, 65):
        report = annotate(server.access(user), images, worker, str(repo), NS, replace=True)
        by_status = {}
        for o in report.outcomes:
            by_status.setdefault(o.status, []).append(o.image_id)
        owners = {i: (server.images_[i].owner, server.images_[i].group) for i in images}
        refused = [i for i in images if owners[i] == (62, 61) or owners[i][0] == 63]
        assert sorted(by_status.get(ImageStatus.NOT_PERMITTED, [])) == sorted(refused), (user, report.message())
        assert len(by_status.get(ImageStatus.ANNOTATED, [])) == 3, (user, report.message())
