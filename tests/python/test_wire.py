"""What only a server below omero-py shows: the helper against the stand-in on the wire, where
Ice checks every argument and the server's rules refuse what a server refuses. Each test names
the server rule it meets (docs/testing.md lists them with their sources)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import NS
from fake_server import FakeServer

from omero_iscc.annotate import annotate
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
def test_an_administrator_annotates_another_users_image_in_a_session_of_its_owner(tmp_path, worker):
    # ISession.createSessionWithTimeout(Principal{name, group, eventType}, ttl): `group` is a
    # Slice string, so Ice refuses an int before anything is sent.
    repo = tmp_path / "repo"
    server = FakeServer(root=str(repo))
    images = _images(server, repo, 3)
    report = annotate(server.access(0), images, worker, str(repo), NS, units_per_run=1)  # three saves
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
    omero = server.access(0)
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
def test_a_report_without_a_target_is_uploaded_in_a_group_the_session_may_write(tmp_path, worker, target):
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
    [(name, data, mimetype, owner)] = server.uploads.values()
    assert name == "iscc_verify_report.csv" and data.startswith(b"image_id,") and owner == 2
