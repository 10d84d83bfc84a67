"""The Verify script's logic: stored codes and OMERO's import checksums recomputed from one
read of each file."""

from __future__ import annotations

import csv
import io

from conftest import NS
from test_annotate import load_script, run_annotate

from omero_iscc.config import ScriptSettings

VERIFY = load_script("ISCC_Verify")


def run_verify(world, worker, ids):
    params = {"Data_Type": "Image", "IDs": ids}
    return VERIFY.verify_selection(world.omero, params, ScriptSettings(worker=worker))


def rows(world):
    kind, obj_id, name, data, ns, mimetype = world.server.attachments[-1]
    assert (name, mimetype, ns) == ("iscc_verify_report.csv", "text/csv", NS + ".verify")
    return kind, obj_id, list(csv.DictReader(io.StringIO(data.decode())))


def test_ok_changed_missing_and_no_annotation(world, worker):
    annotated = [world.single, world.multi_file, world.multi_series[0], world.legacy]
    run_annotate(world, worker, "Image", annotated)
    message, _ = run_verify(world, worker, annotated)
    assert message == "Verified 4 image(s): 4 OK, 0 CHANGED, 0 MISSING_FILE, 0 NO_ANNOTATION"
    kind, obj_id, report = rows(world)
    assert (kind, obj_id) == ("Image", world.single)
    assert all(
        int(r["checksums_checked"]) == len(world.disk[int(r["image_id"])])
        for r in report
        if int(r["image_id"]) != world.legacy
    )

    # Modify one DICOM file in place (same size), delete the single file.
    victim = world.disk[world.multi_file][1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    world.disk[world.single][0].unlink()
    ids = [world.single, world.multi_file, world.multi_series[0], world.other_group]
    message, _ = run_verify(world, worker, ids)
    assert message == "Verified 4 image(s): 1 OK, 1 CHANGED, 1 MISSING_FILE, 1 NO_ANNOTATION"
    _, _, report = rows(world)
    status = {int(r["image_id"]): r for r in report}
    assert status[world.single]["status"] == "MISSING_FILE"
    changed = status[world.multi_file]
    assert changed["status"] == "CHANGED"
    assert changed["checksum_mismatches"] == "77654033/CT2/17136"
    assert "ISCC differs" in changed["detail"] and "import checksum differs" in changed["detail"]
    assert status[world.multi_series[0]]["status"] == "OK"
    assert status[world.other_group]["status"] == "NO_ANNOTATION"
    assert [int(r["image_id"]) for r in report] == ids


def test_the_report_is_attached_in_its_targets_group_not_the_sessions(world, worker):
    # The session's group is group 1; a report on an image of group 2 is saved there (a new
    # object with omero.group -1 is refused; one in group 1 could not be linked to it).
    message, outputs = run_verify(world, worker, [world.other_group])
    assert "File_Annotation" in outputs, message
    kind, obj_id, _report = rows(world)
    assert (kind, obj_id) == ("Image", world.other_group)
    [ann] = [a for a in world.server.anns.values() if a.cls == "FileAnnotation"]
    assert ann.group == 2 and world.server.files[ann.file_id].group == 2
