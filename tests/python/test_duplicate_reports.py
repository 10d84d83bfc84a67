"""Where a duplicates report goes, and what it may list (#21 item 11): a report attached to an
object is read by everyone who may read that object, so it lists only images all of them may
see; a server-wide report of an administrator lists every group's images, so only
administrators may read it."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from conftest import NS
from fake_server import FakeServer
from standin.world import SYSTEM_GROUP
from test_annotate import load_script

from omero_iscc.annotate import annotate
from omero_iscc.config import ScriptSettings

SCRIPT = load_script("ISCC_Find_Duplicates")
DATASET = 500


def _scene(tmp_path: Path, worker: str, perms: str = "rwra--") -> tuple[FakeServer, dict]:
    """The same file imported four times: twice by scientist (2) and once by ann (51) in lab
    50 (``perms``), once by scientist in group 2; and another file twice, by scientist in lab
    50 and in group 2. Scientist's dataset in lab 50 holds their first two."""
    repo = tmp_path / "repo"
    server = FakeServer(root=str(repo))
    server.add_group(50, "lab", perms)
    server.add_user(51, "ann", {50})
    server.users[2].groups.add(50)
    server.changed()
    data, other = os.urandom(20000), os.urandom(20000)
    made = {}
    for label, owner, group in [
        ("mine", 2, 50),
        ("mine_again", 2, 50),
        ("anns", 51, 50),
        ("elsewhere", 2, 2),
        ("pair_here", 2, 50),
        ("pair_there", 2, 2),
    ]:
        rel = f"u_{owner}/{label}/"
        p = repo / rel / "a.tif"
        p.parent.mkdir(parents=True)
        p.write_bytes(other if label.startswith("pair") else data)
        [made[label]] = server.add_fileset([server.original_file(str(p), rel)], rel, group_id=group, owner=owner)
    server.add_container("Dataset", DATASET, [made["mine"], made["mine_again"]], group=50, owner=2)
    for owner in (2, 51):
        mine = [i for i in made.values() if server.images_[i].owner == owner]
        report = annotate(server.access(owner), mine, worker, str(repo), NS)
        assert report.failures == [], report.message()
    return server, made


def _run(server: FakeServer, user: int, worker: str, scope: str) -> tuple[str, dict]:
    params = {"Data_Type": "Dataset", "IDs": [DATASET], "Scope": scope, "Threshold": 12}
    return SCRIPT.duplicates_of(server.access(user), params, ScriptSettings(worker=worker))


def _listed(data: bytes) -> set[int]:
    return {int(r["image_id"]) for r in csv.DictReader(io.StringIO(data.decode()))}


def test_a_report_attached_in_a_group_lists_only_images_its_members_may_see(tmp_path, worker):
    # Scope=Server gathers every group the user is in; the report attached to the dataset in
    # lab 50 must not name the image of group 2, which lab's members may not read.
    server, made = _scene(tmp_path, worker)
    message, outputs = _run(server, 2, worker, "Server")
    [(kind, parent, _name, data, _ns, _mime)] = server.attachments
    assert (kind, parent) == ("Dataset", DATASET) and "File_Annotation" in outputs
    # pair_here is dropped too: alone, it would point at a copy lab's members cannot see.
    assert _listed(data) == {made["mine"], made["mine_again"], made["anns"]}, data.decode()
    assert "2 image(s)" in message and "not listed" in message, message


def test_in_a_private_group_the_report_lists_only_the_owners_images(tmp_path, worker):
    # In a private group members do not see each other's images: the report on scientist's
    # dataset is read by scientist (and the group's leaders and administrators) only, though
    # scientist, who leads the group, sees ann's image.
    server, made = _scene(tmp_path, worker, perms="rw----")
    server.groups[50].leaders.add(2)
    server.changed()
    message, _outputs = _run(server, 2, worker, "Server")
    [(_kind, _parent, _name, data, _ns, _mime)] = server.attachments
    assert _listed(data) == {made["mine"], made["mine_again"]}, data.decode()
    assert "3 image(s)" in message, message


def test_an_administrators_server_wide_report_is_readable_by_administrators_only(tmp_path, worker):
    server, made = _scene(tmp_path, worker)
    message, outputs = _run(server, 0, worker, "Server")
    assert server.attachments == [], "not attached to the dataset, which lab's members read"
    [(fid, (name, data, _mime, _owner))] = server.uploads.items()
    assert server.files[fid].group == SYSTEM_GROUP and set(outputs) == {"File"}
    assert _listed(data) == set(made.values())
    assert "only administrators" in message, message
