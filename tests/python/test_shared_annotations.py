"""One annotation per Fileset, shared by its images and linked to the Fileset (layout 2.0):
what the stand-in server is asked to write for a plate of thousands of files, replacing one
image of a Fileset while the others keep theirs, Verify naming the changed file from the file
list, and annotations of layout 1.0 read and replaced."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import NS, reference
from fake_server import FakeServer

from omero_iscc import ANNOTATION_VERSION
from omero_iscc.annotate import annotate
from omero_iscc.layout import FILES_IN_TABLE, parse_files_jsonl
from omero_iscc.statuses import ImageStatus, Verdict
from omero_iscc.verify import verify


def _fileset(server: FakeServer, repo: Path, rel: str, n_files: int, n_images: int, hasher="SHA1-160"):
    paths = []
    for k in range(n_files):
        p = repo / rel / f"well_{k:05d}.tif"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(40 + k % 50))
        paths.append(p)
    files = [server.original_file(str(p), rel, hasher=hasher) for p in paths]
    return server.add_fileset(files, rel, n_images=n_images), paths


def test_a_1536_image_plate_of_6144_files_writes_one_small_annotation_one_file_list_and_1537_links(tmp_path, worker):
    # Before: 1,536 annotations of about 6,155 rows each (9.5 million key-value rows).
    repo = tmp_path / "repo"
    server = FakeServer(root=str(repo))
    images, paths = _fileset(server, repo, "plate/", 6144, 1536)
    report = annotate(server.access(), images, worker, str(repo), NS)
    assert report.count(ImageStatus.ANNOTATED) == 1536, report.message()
    assert server.written["map_annotations"] == 1 and server.written["rows"] <= 24, server.written
    assert server.written["links"] == 1537 + 1  # the annotation's 1,537, and the file list's own
    [(kind, fileset_id, name, data, ns, mimetype)] = server.attachments
    assert (kind, name, ns) == ("Fileset", "iscc_files.jsonl", NS)
    files = parse_files_jsonl(data)
    assert [f.path for f in files] == [p.name for p in paths]
    for f, p in list(zip(files, paths))[::1000]:
        assert f.iscc == reference([p])["iscc"]
    values = dict(server.pairs(images[0]))
    assert values["iscc:version"] == ANNOTATION_VERSION == "2.0"
    assert values["iscc:files"] == "6144" and "iscc:file" not in values
    assert int(values["iscc:files_annotation"]) in server.anns
    assert values["iscc:sum"] == reference(paths)["iscc"]
    assert all(server.iscc_anns(i)[0].id == server.iscc_anns(images[0])[0].id for i in images)


def test_small_filesets_keep_their_files_in_the_table(tmp_path, worker):
    repo = tmp_path / "repo"
    server = FakeServer(root=str(repo))
    images, paths = _fileset(server, repo, "small/", FILES_IN_TABLE, 2)
    annotate(server.access(), images, worker, str(repo), NS)
    pairs = server.pairs(images[0])
    assert [v.split(" ", 1)[1] for k, v in pairs if k == "iscc:file"] == [p.name for p in paths]
    assert server.attachments == []


def test_replacing_one_image_of_a_fileset_leaves_the_others_their_iscc(world, worker):
    a, b, c = world.multi_series
    annotate(world.omero, [a, b, c], worker, str(world.repo), NS)
    shared = world.server.iscc_anns(a)[0].id
    assert [world.server.iscc_anns(i)[0].id for i in (b, c)] == [shared, shared]
    report = annotate(world.omero, [a], worker, str(world.repo), NS, replace=True)
    assert report.count(ImageStatus.ANNOTATED) == 1 and not report.outcomes[0].message
    [new] = world.server.iscc_anns(a)
    assert new.id != shared
    assert [world.server.iscc_anns(i)[0].id for i in (b, c)] == [shared, shared], "b and c keep theirs"
    assert shared in world.server.anns
    # Replacing the rest retires the old annotation for good.
    annotate(world.omero, [b, c], worker, str(world.repo), NS, replace=True)
    assert shared not in world.server.anns
    assert len({world.server.iscc_anns(i)[0].id for i in (a, b, c)}) == 2


def test_verify_names_the_changed_file_from_the_file_list(tmp_path, worker):
    repo = tmp_path / "repo"
    server = FakeServer(root=str(repo))
    images, paths = _fileset(server, repo, "big/", FILES_IN_TABLE + 4, 1, hasher=None)  # no import checksum
    annotate(server.access(), images, worker, str(repo), NS)
    [ok] = verify(server.access(), images, worker, str(repo), NS)
    assert ok.status == Verdict.OK, ok.detail
    paths[7].write_bytes(b"changed after import")
    [changed] = verify(server.access(), images, worker, str(repo), NS)
    assert changed.status == Verdict.CHANGED
    assert f"changed or missing file(s): {paths[7].name}" in changed.detail


def test_layout_1_0_is_read_and_replaced_by_the_shared_annotation(world, worker):
    image = world.multi_file
    old = reference(world.disk[image])
    pairs = [["iscc:sum", old["iscc"]], ["iscc:datahash", old["datahash"]], ["iscc:version", "1.0"]]
    pairs += [["iscc:file", f"{reference([p])['iscc']} 77654033/CT2/{p.name}"] for p in world.disk[image]]
    old_id = world.server.add_annotation(image, pairs, NS)
    [verdict] = verify(world.omero, [image], worker, str(world.repo), NS)
    assert verdict.status == Verdict.OK and verdict.stored_iscc == old["iscc"]
    report = annotate(world.omero, [image], worker, str(world.repo), NS, replace=True)
    assert report.count(ImageStatus.ANNOTATED) == 1
    assert old_id not in world.server.anns
    assert dict(world.server.pairs(image))["iscc:version"] == "2.0"
