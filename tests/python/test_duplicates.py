"""Finding identical and near-identical images from their annotations, with planted copies
and variants of the real sample files; permissions respected."""

from __future__ import annotations

import csv
import io
import os

import pytest
from conftest import NS
from test_annotate import load_script, run_annotate

from omero_iscc import duplicates
from omero_iscc.config import Config, ScriptSettings
from omero_iscc.fromindex import find_command

SCRIPT = load_script("ISCC_Find_Duplicates")


@pytest.fixture
def variants(world):
    """A copy, an edited (middle bytes changed) and an extended version of the single image."""
    fake, original = world.server, world.disk[world.single][0]
    data = original.read_bytes()
    edited = bytearray(data)
    mid = len(edited) // 2
    edited[mid : mid + 64] = bytes(b ^ 0x5A for b in edited[mid : mid + 64])
    made = {}
    for label, content in [("copy", data), ("edited", bytes(edited)), ("extended", data + os.urandom(30000))]:
        d = f"scientist_2/2026-11/30/{label}/"
        p = world.repo / d / f"{label}.tiff"
        p.parent.mkdir(parents=True)
        p.write_bytes(content)
        [made[label]] = fake.add_fileset([fake.original_file(str(p), d)], d, names=[label])
        world.disk[made[label]] = [p]
    fake.add_to_container("Dataset", world.dataset, list(made.values()))
    return made


def script(world, worker, scope="Selection", ids=None):
    params = {"Data_Type": "Dataset", "IDs": ids or [world.dataset], "Scope": scope, "Threshold": 12}
    return SCRIPT.duplicates_of(world.omero, params, ScriptSettings(worker=worker))


def test_identical_and_near_duplicates_with_distances(world, worker, variants):
    run_annotate(world, worker)
    message, attachment = script(world, worker)
    assert message.startswith("2 group(s) of identical images (5 images), 1 group(s) of similar images")
    assert "have no ISCC yet" in message and "gone" in message  # the image whose file is missing
    kind, obj_id, name, data, ns, mimetype = world.server.attachments[-1]
    assert (kind, obj_id, name, ns) == ("Dataset", world.dataset, "iscc_duplicates.csv", NS + ".duplicates")
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    by_group: dict = {}
    for r in rows:
        by_group.setdefault((r["group"], r["kind"]), []).append(r)
    identical = [g for (n, k), g in by_group.items() if k == "identical"]
    assert sorted(sorted(int(r["image_id"]) for r in g) for g in identical) == sorted(
        [sorted([world.single, variants["copy"]]), sorted(world.multi_series)]
    )
    [similar] = [g for (n, k), g in by_group.items() if k == "similar"]
    members = {int(r["image_id"]): int(r["distance"]) for r in similar}
    assert set(members) == {world.single, variants["copy"], variants["edited"], variants["extended"]}
    codes = {i: dict(world.server.pairs(i))["iscc:sum"] for i in members}
    for image_id, d in members.items():
        assert d == duplicates.distance(codes[world.single], codes[image_id])
    assert all(
        r["owner"] == "scientist" and r["group_name"].startswith("group ") for r in rows if r["kind"] != "no_iscc"
    )


def test_server_scope_never_shows_what_the_user_cannot_see(world, worker, variants):
    run_annotate(world, worker)
    world.server.hide(variants["copy"])
    message, _ = script(world, worker, scope="Server")
    data = world.server.attachments[-1][3].decode()
    assert f",{variants['copy']}," not in data
    assert message.startswith("1 group(s) of identical images (3 images)")


def test_find_by_image_and_by_code(world, worker, variants, capsys, tmp_path):
    run_annotate(world, worker)
    hits = duplicates.find(world.omero, str(variants["edited"]), NS)
    ids = [c.image_id for c, _ in hits]
    assert ids[0] == variants["edited"] and set(ids) == {
        world.single,
        variants["copy"],
        variants["edited"],
        variants["extended"],
    }
    code = dict(world.server.pairs(world.single))["iscc:sum"]
    # The `find` command, with no code index kept here: it reads the server.
    cfg = Config(state_dir=str(tmp_path / "state"), worker=worker)
    assert find_command(cfg, lambda cfg: (None, world.omero), code, 0) == 0
    out = capsys.readouterr().out
    assert f"image {world.single}" in out and f"image {variants['copy']}" in out
    assert f"image {variants['edited']}" not in out
    assert find_command(cfg, lambda cfg: (None, world.omero), "ISCC:!!", 12) == 2
