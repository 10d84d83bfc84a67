"""Files are hashed only where OMERO put them (issue 21, item 10), tested as an attacker would
work: a member of a private group writes rows through the API (``IUpdate`` saves, as any user
may) that name a colleague's file, then runs ISCC_Annotate on their own image through the
Processor; the administrator's scheduler meets the same rows. The worker reads the repository
as the server's own user, so whatever those rows name it could read: the rows are judged
before anything is read (``omero_iscc.provenance``).

What must never reach the attacker: the colleague's code, size, checksum verdict or per-file
code, nor whether the file exists."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import omero
import omero.model
import pytest
from conftest import NS, TOP, reference
from fake_server import FakeServer
from omero.rtypes import rlong, rstring, rtime

from omero_iscc import NAMESPACE
from omero_iscc.annotate import annotate
from omero_iscc.config import Config, ScriptSettings
from omero_iscc.jobs import verify_job
from omero_iscc.scheduler import Scheduler
from omero_iscc.statuses import ImageStatus

LAB = 40  # a private group: alice and mallory see only their own data
ALICE, MALLORY = 41, 42


class Lab:
    """A private group with two members who each imported a file; ``alice_secret`` is the
    file mallory is after."""

    def __init__(self, tmp_path: Path, samples: Path) -> None:
        self.repo = tmp_path / "ManagedRepository"
        self.repo.mkdir()
        self.server = FakeServer(root=str(self.repo))
        self.server.add_group(LAB, "private lab", "rw----")
        self.server.add_user(ALICE, "alice", {LAB})
        self.server.add_user(MALLORY, "mallory", {LAB})
        self.secret_file = samples / "ome-tiff" / "neuron-4Ch.tiff"
        self.alice_image = self.server.import_file(str(self.secret_file), ALICE, LAB)
        decoy = tmp_path / "decoy.tif"
        decoy.write_bytes(os.urandom(5000))
        self.mallory_image = self.server.import_file(str(decoy), MALLORY, LAB)
        [self.secret_row] = [f for f in self.server.files.values() if f.owner == ALICE and f.v.get("repo")]
        self.secret = reference([self.secret_file])
        self.conn = self.server.gateway(MALLORY)  # mallory's own session, as any client makes one

    @property
    def secret_dir(self) -> str:
        return self.secret_row.v["path"]

    def save(self, objects: list):
        return self.conn.getUpdateService().saveAndReturnArray(objects, {"omero.group": str(LAB)})

    def forged_image(self, path: str, name: str, prefix: str) -> int:
        """An OriginalFile, Fileset, FilesetEntry and Image made by mallory through IUpdate."""
        f = omero.model.OriginalFileI()
        f.setPath(rstring(path))
        f.setName(rstring(name))
        f.setSize(rlong(self.secret["filesize"]))
        f.setMimetype(rstring("image/tiff"))
        fileset = omero.model.FilesetI()
        fileset.setTemplatePrefix(rstring(prefix))
        entry = omero.model.FilesetEntryI()
        entry.setFileset(fileset)
        entry.setOriginalFile(f)
        entry.setClientPath(rstring(name))
        image = omero.model.ImageI()
        image.setName(rstring("my image"))
        image.setAcquisitionDate(rtime(0))
        image.setFileset(fileset)
        saved = self.save([entry, image])
        return saved[1].getId().val

    def own_rows(self, image_id: int) -> tuple:
        """mallory's own imported image's OriginalFile and Fileset, loaded for editing."""
        q = self.conn.getQueryService()
        ctx = {"omero.group": str(LAB)}
        image = q.findByQuery("select i from Image i join fetch i.fileset where i.id = :id", _params(id=image_id), ctx)
        [entry] = q.findAllByQuery(
            "select e from FilesetEntry e join fetch e.originalFile where e.fileset.id = :id",
            _params(id=image.getFileset().getId().val),
            ctx,
        )
        return entry.getOriginalFile(), image.getFileset()

    def leaked(self, text: str) -> list[str]:
        """Whatever of alice's file appears in ``text``: its code, units, datahash or size."""
        secrets = [self.secret["iscc"], self.secret["datahash"], self.secret["data"], self.secret["instance"]]
        found = [s for s in secrets if s and s.split(":")[-1] in text]
        if str(self.secret["filesize"]) in text:
            found.append(f"size {self.secret['filesize']}")
        return found

    def annotations_of(self, image_id: int) -> list:
        return self.server.iscc_anns(image_id)


def _params(**values):
    from omero.sys import ParametersI

    p = ParametersI()
    for k, v in values.items():
        p.addLong(k, v)
    return p


@pytest.fixture
def lab(tmp_path, samples) -> Lab:
    return Lab(tmp_path, samples)


def _run_script(lab: Lab, worker: str, name: str, inputs: dict, user: int = MALLORY):
    from standin.processor import run_script

    return run_script(
        lab.server,
        str(TOP / "omero_scripts" / "omero_iscc" / "scripts" / f"{name}.py"),
        inputs,
        user,
        path=(str(Path(worker).parent),),
        pythonpath=(str(TOP / "omero_scripts"),),
    )


def _everything_said(run) -> str:
    return " ".join(str(v) for v in run.outputs.values()) + run.stdout + run.stderr


# -- rows written through the API -------------------------------------------------------------------
def test_a_file_row_a_member_wrote_to_name_a_colleagues_file_gets_no_code(lab, worker):
    # Rows saved through IUpdate have no repo (BasicACLVoter.allowCreation refuses it): the
    # worker never reads what they name.
    forged = lab.forged_image(lab.secret_dir, lab.secret_row.v["name"], lab.secret_dir)
    run = _run_script(lab, worker, "ISCC_Annotate", {"Data_Type": "Image", "IDs": [forged]})
    assert run.returncode == 0, run.stderr
    message = run.outputs["Message"]
    assert message.startswith("0 annotated, 1 failed"), message
    assert "was not written by OMERO's import" in message, message
    assert not lab.annotations_of(forged)
    assert not lab.leaked(_everything_said(run)), lab.leaked(_everything_said(run))


def test_an_imported_row_edited_to_name_a_colleagues_file_gets_no_code(lab, worker):
    # The worst case: an owner may edit their own rows (BasicACLVoter, EDIT), so mallory points
    # her imported file's row (repo set by the import) and her Fileset at alice's directory.
    f, fileset = lab.own_rows(lab.mallory_image)
    f.setPath(rstring(lab.secret_dir))
    f.setName(rstring(lab.secret_row.v["name"]))
    f.setSize(rlong(lab.secret["filesize"]))
    fileset.setTemplatePrefix(rstring(lab.secret_dir))
    lab.save([f, fileset])
    run = _run_script(lab, worker, "ISCC_Annotate", {"Data_Type": "Image", "IDs": [lab.mallory_image]})
    message = run.outputs["Message"]
    assert message.startswith("0 annotated, 1 failed"), message
    assert "lie outside the directory OMERO gives its owner's imports" in message, message
    assert not lab.annotations_of(lab.mallory_image)
    assert not lab.leaked(_everything_said(run)), lab.leaked(_everything_said(run))


def test_whether_the_named_file_exists_is_not_told(lab, worker):
    # Probing paths: a file that is there and one that is not read the same.
    said = []
    for name in (lab.secret_row.v["name"], "no-such-file.tiff"):
        f, fileset = lab.own_rows(lab.mallory_image)
        f.setPath(rstring(lab.secret_dir))
        f.setName(rstring(name))
        fileset.setTemplatePrefix(rstring(lab.secret_dir))
        lab.save([f, fileset])
        run = _run_script(lab, worker, "ISCC_Annotate", {"Data_Type": "Image", "IDs": [lab.mallory_image]})
        said.append(run.outputs["Message"])
    assert said[0] == said[1], said


def test_a_path_that_climbs_out_of_the_owners_directory_is_refused(lab, worker):
    f, fileset = lab.own_rows(lab.mallory_image)
    own = fileset.getTemplatePrefix().val
    f.setPath(rstring(own + "../../../" + lab.secret_dir))
    f.setName(rstring(lab.secret_row.v["name"]))
    lab.save([f])
    report = annotate(lab.server.access(MALLORY), [lab.mallory_image], worker, str(lab.repo), NS)
    [outcome] = report.outcomes
    assert outcome.status is ImageStatus.FAILED and "is not a plain relative path" in outcome.message, outcome
    assert not lab.annotations_of(lab.mallory_image)


def test_a_file_outside_its_filesets_directory_is_refused(lab, worker):
    f, _fileset = lab.own_rows(lab.mallory_image)
    f.setPath(rstring(lab.secret_dir))
    f.setName(rstring(lab.secret_row.v["name"]))
    lab.save([f])
    report = annotate(lab.server.access(MALLORY), [lab.mallory_image], worker, str(lab.repo), NS)
    [outcome] = report.outcomes
    assert outcome.status is ImageStatus.FAILED and "lies outside its Fileset's directory" in outcome.message


def test_the_administrators_scheduler_passes_over_them_and_logs_them(lab, worker, tmp_path, caplog):
    forged = lab.forged_image(lab.secret_dir, lab.secret_row.v["name"], lab.secret_dir)
    f, fileset = lab.own_rows(lab.mallory_image)
    f.setPath(rstring(lab.secret_dir))
    f.setName(rstring(lab.secret_row.v["name"]))
    fileset.setTemplatePrefix(rstring(lab.secret_dir))
    lab.save([f, fileset])
    cfg = Config(state_dir=str(tmp_path / "state"), worker=worker, repository=str(lab.repo))
    scheduler = Scheduler(cfg, lambda c: (None, lab.server.access(0)), sleep=lambda s: None)
    with caplog.at_level(logging.WARNING, logger="omero_iscc"):
        result = scheduler.poll_once()
    scheduler.close()
    assert result.annotated == 1 and result.failed == 2, result  # alice's own image is annotated
    assert lab.server.pairs(lab.alice_image)[0] == ["iscc:sum", lab.secret["iscc"]]
    assert not lab.annotations_of(forged) and not lab.annotations_of(lab.mallory_image)
    logged = caplog.text
    assert f"images {forged} " in logged and "was not written by OMERO's import" in logged, logged
    assert f"images {lab.mallory_image} " in logged, logged


def test_verify_gives_no_checksum_verdict_for_them(lab, worker):
    # Verify compares the bytes with the import checksum: a verdict would tell whether a
    # guessed checksum is alice's.
    f, fileset = lab.own_rows(lab.mallory_image)
    f.setPath(rstring(lab.secret_dir))
    f.setName(rstring(lab.secret_row.v["name"]))
    f.setHash(rstring(lab.secret_row.v["hash"][::-1]))  # a guess
    fileset.setTemplatePrefix(rstring(lab.secret_dir))
    lab.save([f, fileset])
    result = verify_job(lab.server.access(MALLORY), "Image", [lab.mallory_image], ScriptSettings(worker=worker))
    [row] = result.rows
    assert row["status"] == "REFUSED" and not row["iscc"], row
    report = result.report.decode()
    assert "import checksum differs" not in report and not lab.leaked(report), report


# -- what OMERO itself put elsewhere ---------------------------------------------------------------
def test_data_given_to_another_user_is_hashed_when_its_import_checksums_match(lab, worker):
    # chown leaves the files where they were imported, in the first owner's directory: the
    # checksums OMERO recorded at import show they are the files imported.
    given = lab.server.import_file(str(lab.secret_file), ALICE, LAB)
    lab.server.add_user(43, "carol", {LAB})
    fileset = lab.server.images_[given].v["fileset"]
    for table in ("Image", "Fileset", "FilesetEntry", "OriginalFile"):
        for row in lab.server.table(table).values():
            if row.id == given or row.v.get("fileset") == fileset or row.id == fileset:
                row.owner = 43
    for entry in [e for e in lab.server.table("FilesetEntry").values() if e.v.get("fileset") == fileset]:
        lab.server.files[entry.v["originalFile"]].owner = 43
    lab.server.changed()
    report = annotate(lab.server.access(0), [given], worker, str(lab.repo), NS)
    assert report.count(ImageStatus.ANNOTATED) == 1, report.message()
    assert lab.server.pairs(given)[0] == ["iscc:sum", lab.secret["iscc"]]
    # Without a checksum to show it, the same files are not read.
    for entry in [e for e in lab.server.table("FilesetEntry").values() if e.v.get("fileset") == fileset]:
        lab.server.files[entry.v["originalFile"]].v["hash"] = None
    lab.server.changed()
    report = annotate(lab.server.access(0), [given], worker, str(lab.repo), NS, replace=True)
    assert report.count(ImageStatus.FAILED) == 1 and "not every file has an import checksum" in report.message()


def test_an_imported_file_that_changed_since_import_gets_no_code(lab, worker):
    # Where OMERO recorded an import checksum, the bytes must match it before a code is written.
    [decoy] = [f for f in lab.server.files.values() if f.owner == MALLORY and f.v.get("repo")]
    with open(decoy.disk, "r+b") as fh:
        fh.write(b"X")  # same size, other bytes
    report = annotate(lab.server.access(MALLORY), [lab.mallory_image], worker, str(lab.repo), NS)
    [outcome] = report.outcomes
    assert outcome.status is ImageStatus.FAILED and "differ from the checksum OMERO recorded" in outcome.message
    assert not lab.annotations_of(lab.mallory_image)


def test_a_scheduler_without_the_mount_streams_nothing_it_may_not_read(lab, worker, tmp_path):
    # Read through OMERO instead (no repository on this host), the administrator's RawFileStore
    # would read whatever the row names: the same judgement applies first.
    f, fileset = lab.own_rows(lab.mallory_image)
    f.setPath(rstring(lab.secret_dir))
    f.setName(rstring(lab.secret_row.v["name"]))
    fileset.setTemplatePrefix(rstring(lab.secret_dir))
    lab.save([f, fileset])
    report = annotate(lab.server.access(0), [lab.mallory_image, lab.alice_image], worker, None, NAMESPACE)
    by_image = {o.image_id: o for o in report.outcomes}
    assert by_image[lab.alice_image].status is ImageStatus.ANNOTATED
    assert by_image[lab.mallory_image].status is ImageStatus.FAILED
    assert not lab.annotations_of(lab.mallory_image)
