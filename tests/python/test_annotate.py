"""The Annotate script's logic against the in-memory OMERO, with the real worker over real
files laid out as a ManagedRepository; codes compared with iscc-core."""

from __future__ import annotations

import re

import pytest
from conftest import TOP, reference

import omero_iscc.compute as compute_mod
from omero_iscc.config import ScriptSettings
from omero_iscc.layout import from_pairs

KEYS = [
    "iscc:sum",
    "iscc:datahash",
    "iscc:filesize",
    "iscc:data",
    "iscc:instance",
    "iscc:version",
    "iscc:source_file",
    "iscc:files",
    "iscc:timestamp",
    "iscc:processor",
    "iscc:input",
]


def load_script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, TOP / "omero_scripts" / "omero_iscc" / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ANNOTATE = load_script("ISCC_Annotate")


def run_annotate(world, worker, data_type="Dataset", ids=None, replace=False, wide=False):
    params = {
        "Data_Type": data_type,
        "IDs": [world.dataset] if ids is None else ids,
        "Replace_Existing": replace,
        "Wide": wide,
    }
    return ANNOTATE.annotate_selection(world.omero, params, ScriptSettings(worker=worker))


def test_every_kind_of_image_gets_the_reference_code(world, worker):
    message, outputs = run_annotate(world, worker)
    assert message.startswith("7 annotated, 1 skipped (not allowed to annotate), 1 failed (image ")
    assert f"image {world.missing}: file missing from repository (" in message
    assert outputs["Result"].getId().val == world.single and not outputs["Result"].isLoaded()
    for image_id in [world.single, world.multi_file, *world.multi_series, world.legacy, world.other_group]:
        pairs = world.server.pairs(image_id)
        keys = [k for k, _ in pairs]
        assert keys[: len(KEYS)] == KEYS
        values = dict(pairs)
        want = reference(world.disk[image_id])
        for key in ("iscc", "datahash", "data", "instance"):
            assert values[f"iscc:{key if key != 'iscc' else 'sum'}"] == want[key], (image_id, key)
        assert values["iscc:filesize"] == str(want["filesize"])
        assert values["iscc:version"] == "2.0"
        assert values["iscc:files"] == str(len(world.disk[image_id]))
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", values["iscc:timestamp"])
        assert values["iscc:processor"].startswith("omero-iscc ")
        assert values["iscc:input"] == ("raw-file-store" if image_id == world.legacy else "managed-repository")
    # A multi-file Fileset lists each file's own code, relative to the fileset directory.
    files = [v for k, v in world.server.pairs(world.multi_file) if k == "iscc:file"]
    assert [f.split(" ", 1)[1] for f in files] == ["77654033/CT2/17106", "77654033/CT2/17136", "77654033/CT2/17166"]
    for entry, path in zip(files, world.disk[world.multi_file]):
        assert entry.split(" ", 1)[0] == reference([path])["iscc"]
    assert dict(world.server.pairs(world.single))["iscc:source_file"] == "neuron-4Ch.tiff"
    # Saved in each image's own group; the locked and missing images carry nothing.
    assert (world.other_group, 2) in world.server.saved_groups
    assert world.locked not in world.server.annotations
    assert world.missing not in world.server.annotations


def test_multi_series_fileset_is_hashed_once(world, worker, monkeypatch):
    seen = []
    real = compute_mod.run_groups

    def spy(worker_path, root, groups, **kw):
        seen.extend(gid for gid, _ in groups)
        return real(worker_path, root, groups, **kw)

    monkeypatch.setattr(compute_mod, "run_groups", spy)
    run_annotate(world, worker, "Plate", [world.plate])
    assert len(seen) == 1 and seen[0].startswith("fileset:")
    codes = {dict(world.server.pairs(i))["iscc:sum"] for i in world.multi_series}
    assert len(codes) == 1


def test_wide_codes(world, worker):
    run_annotate(world, worker, "Image", [world.single], wide=True)
    values = dict(world.server.pairs(world.single))
    assert values["iscc:sum"] == reference(world.disk[world.single], wide=True)["iscc"]
    assert values["iscc:sum"].startswith("ISCC:K4A")


def test_rerun_skips_and_replace_swaps_without_touching_other_namespaces(world, worker):
    world.server.add_annotation(world.single, [["lab", "keep me"]], "org.example.other")
    run_annotate(world, worker, "Image", [world.single, world.multi_file])
    first_ids = {i: world.server.annotations[i][0].getId().val for i in (world.single, world.multi_file)}
    message, _ = run_annotate(world, worker, "Image", [world.single, world.multi_file])
    assert message == "0 annotated, 2 already had an ISCC"
    assert len(world.server.annotations[world.single]) == 1
    message, _ = run_annotate(world, worker, "Image", [world.single, world.multi_file], replace=True)
    assert message == "2 annotated"
    for image_id, old in first_ids.items():
        anns = world.server.annotations[image_id]
        assert len(anns) == 1 and anns[0].getId().val != old
    assert [[nv.name, nv.value] for nv in world.server.other_annotations[world.single][0].getMapValue()] == [
        ["lab", "keep me"]
    ]


def test_replace_keeps_the_old_annotation_when_the_new_one_fails(world, worker):
    run_annotate(world, worker, "Image", [world.single, world.other_group])
    old_single = world.server.annotations[world.single][0].getId().val
    old_other = world.server.annotations[world.other_group][0].getId().val
    world.disk[world.single][0].unlink()  # computation fails (not in the repository, nor via OMERO)
    world.server.fail_save_for.add(world.other_group)  # the save is refused
    message, _ = run_annotate(world, worker, "Image", [world.single, world.other_group], replace=True)
    assert message.startswith("0 annotated, 2 failed")
    assert [a.getId().val for a in world.server.annotations[world.single]] == [old_single]
    assert [a.getId().val for a in world.server.annotations[world.other_group]] == [old_other]


def test_unreadable_file_is_streamed_through_omero(world, as_nobody_worker):
    from conftest import open_for_others

    open_for_others(world.repo)
    for paths in world.disk.values():
        for p in paths:
            open_for_others(p)
    world.disk[world.single][0].chmod(0o600)
    message, _ = run_annotate(world, as_nobody_worker, "Image", [world.single, world.multi_file])
    assert message == "2 annotated"
    single = dict(world.server.pairs(world.single))
    assert single["iscc:input"] == "raw-file-store"
    assert single["iscc:sum"] == reference(world.disk[world.single])["iscc"]
    assert dict(world.server.pairs(world.multi_file))["iscc:input"] == "managed-repository"


@pytest.mark.parametrize(
    "data_type, ids_of, expected_of",
    [
        ("Project", lambda w: [w.project], lambda w: 9),
        ("Screen", lambda w: [w.screen], lambda w: 3),
        ("Fileset", lambda w: [w.server.images_[w.multi_series[0]].fileset], lambda w: 3),
        ("Image", lambda w: [w.single, w.single, 999999], lambda w: 1),
    ],
)
def test_selection_expands_to_each_image_once(world, worker, data_type, ids_of, expected_of):
    from omero_iscc.selection import expand

    images, missing = expand(world.omero, data_type, ids_of(world))
    assert len(images) == expected_of(world) == len(set(images))
    if data_type == "Image":
        assert missing == [999999]


def test_bad_selection_is_an_input_error(world, worker):
    from omero_iscc.selection import SelectionError

    with pytest.raises(SelectionError, match="Data_Type must be one of"):
        run_annotate(world, worker, "Well", [1])
    with pytest.raises(SelectionError, match="no IDs"):
        run_annotate(world, worker, "Image", [])


def test_images_the_user_cannot_see_are_not_found(world, worker):
    world.server.hide(world.single)
    message, _ = run_annotate(world, worker, "Image", [world.single])
    assert message.startswith("0 annotated") and "Image not found: " in message


def test_seed_service_annotations_are_read():
    record = from_pairs(
        [("iscc:sum", "ISCC:KUAX"), ("iscc:data", "ISCC:GAA"), ("iscc:inst", "ISCC:IAA"), ("unknown", "x")]
    )
    assert (record.iscc, record.data, record.instance) == ("ISCC:KUAX", "ISCC:GAA", "ISCC:IAA")
    assert from_pairs([("something", "else")]) is None


def test_scripts_parse(monkeypatch):
    import omero
    import omero.scripts

    made = []
    real_client = omero.client

    def recording_client(*args, **kwargs):
        client = real_client(*args, **kwargs)
        made.append(client)
        return client

    # parse_file leaves each script's client behind (it exits by exception); close them here.
    monkeypatch.setattr(omero, "client", recording_client)
    try:
        for script in sorted((TOP / "omero_scripts" / "omero_iscc" / "scripts").glob("ISCC_*.py")):
            params = omero.scripts.parse_file(str(script))
            assert params.name == script.name
            names = list(params.inputs)
            if script.name == "ISCC_Annotate_New_Images.py":
                assert names == ["Batch_Size"]
            else:
                assert params.inputs["Data_Type"].grouping == "1" and params.inputs["IDs"].grouping == "2"
    finally:
        for client in made:
            client.closeSession()
    assert len(made) == 4
