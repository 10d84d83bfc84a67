"""The live suite: the helper, the scripts through the script service, the scheduler, the
backlog and the CLI plugin against an OMERO server through omero-py's own client, as an
administrator, a restricted administrator and a member of each group type.

Without ``OMERO_ISCC_TEST_HOST`` it runs against the stand-in server on the wire
(``tests/standin/``, a fresh port per run). With it, the same tests run against that server:

    OMERO_ISCC_TEST_HOST, OMERO_ISCC_TEST_PORT (default 4064),
    OMERO_ISCC_TEST_USER, OMERO_ISCC_TEST_PASSWORD   a full administrator
    OMERO_ISCC_TEST_REPOSITORY   the server's ManagedRepository as mounted on this machine
                                 (the backlog reads the files there)

The world is made through the server's own API where it has one (groups, users, datasets,
links); files are placed with ``omero import`` on a server (Java on this machine) and with the
stand-in's import call otherwise. The scripts must be installed on a real server (install.sh,
the worker next to its Python); docs/testing.md explains how to run this against
ome/docker-example-omero.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import NS, TOP, reference

HOST = os.environ.get("OMERO_ISCC_TEST_HOST")
pytestmark = pytest.mark.omero

#: Each role annotates images of a member: the administrators in a read-annotate group (as the
#: images' owner, through sudo), a member its own images in a group of each type.
ROLES = ["admin", "restricted-admin", "member-private", "member-read-only", "member-read-annotate", "member-read-write"]
GROUP_TYPES = {"private": "rw----", "read-only": "rwr---", "read-annotate": "rwra--", "read-write": "rwrw--"}


class Live:
    """A server to test against (real, or the stand-in) and the calls that set up its world."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.gateways: list = []
        if HOST:
            self.world = None
            self.host, self.port = HOST, int(os.environ.get("OMERO_ISCC_TEST_PORT", "4064"))
            self.admin_name = os.environ["OMERO_ISCC_TEST_USER"]
            self.admin_password = os.environ["OMERO_ISCC_TEST_PASSWORD"]
            self.repository = os.environ.get("OMERO_ISCC_TEST_REPOSITORY")
        else:
            from fake_server import FakeServer

            (tmp / "ManagedRepository").mkdir()
            self.world = FakeServer(root=str(tmp / "ManagedRepository"))
            self.world.keep = True
            self.world.processor_path = [str(Path(os.environ["OMERO_ISCC_WORKER"]).parent)]
            self.world.processor_pythonpath = [str(TOP / "omero_scripts")]
            self.host, self.port, self.admin_name, self.admin_password = self.world.login("root")
            self.repository = self.world.root
        self.admin = self.connect(self.admin_name, self.admin_password)

    def connect(self, name: str, password: str):
        import omero
        import omero.clients  # noqa: F401
        from omero.gateway import BlitzGateway

        client = omero.client(self.host, self.port)
        client.createSession(name, password)
        gateway = BlitzGateway(client_obj=client)
        self.gateways.append(gateway)
        return gateway

    def close(self) -> None:
        for gateway in self.gateways:
            gateway.close()
        if self.world is not None:
            self.world.keep = False

    # -- the world, through the server's API --------------------------------------------------------
    def new_group(self, perms: str) -> tuple[int, str]:
        import omero
        from omero.rtypes import rstring

        name = f"iscc-{uuid.uuid4().hex[:8]}"
        group = omero.model.ExperimenterGroupI()
        group.setName(rstring(name))
        group.getDetails().setPermissions(omero.model.PermissionsI(perms))
        return self.admin.getAdminService().createGroup(group), name

    def new_user(self, group_ids: list[int]) -> tuple[int, str, str]:
        import omero
        from omero.rtypes import rstring

        admin = self.admin.getAdminService()
        name = f"iscc-{uuid.uuid4().hex[:8]}"
        user = omero.model.ExperimenterI()
        user.setOmeName(rstring(name))
        user.setFirstName(rstring("I"))
        user.setLastName(rstring("SCC"))
        groups = [omero.model.ExperimenterGroupI(g, False) for g in group_ids] + [admin.lookupGroup("user")]
        uid = admin.createExperimenterWithPassword(user, rstring("secret"), groups[0], groups)
        return uid, name, "secret"

    def new_restricted_admin(self, privileges: list[str]) -> tuple[int, str, str]:
        import omero
        from omero.rtypes import rstring

        name = f"iscc-{uuid.uuid4().hex[:8]}"
        user = omero.model.ExperimenterI()
        user.setOmeName(rstring(name))
        user.setFirstName(rstring("Facility"))
        user.setLastName(rstring("Manager"))
        granted = []
        for value in privileges:
            p = omero.model.AdminPrivilegeI()
            p.setValue(rstring(value))
            granted.append(p)
        uid = self.admin.getAdminService().createRestrictedSystemUserWithPassword(user, granted, rstring("secret"))
        return uid, name, "secret"

    def import_image(self, path: Path, owner: tuple, group: tuple, pixels: tuple | None = None) -> int:
        """``omero import`` as the owner into the group (the stand-in: its import call)."""
        uid, name, password = owner
        if self.world is None:
            out = subprocess.run(
                ["omero", "import", "-s", self.host, "-p", str(self.port), "-u", name, "-w", password]
                + ["-g", group[1], str(path)],
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            match = re.search(r"Image:(\d+)", out.stdout + out.stderr)
            assert match, f"omero import failed: {out.stderr[-2000:]}"
            return int(match.group(1))
        return self.world.import_file(str(path), uid, group[0], pixels)

    def new_dataset(self, conn, group_id: int, image_ids: list[int]) -> int:
        """A Dataset of the images, saved by their owner through the update service."""
        import omero
        from omero.rtypes import rstring

        ctx = {"omero.group": str(group_id)}
        update = conn.getUpdateService()
        dataset = omero.model.DatasetI()
        dataset.setName(rstring(f"iscc-{uuid.uuid4().hex[:6]}"))
        dataset = update.saveAndReturnObject(dataset, ctx)
        for image_id in image_ids:
            link = omero.model.DatasetImageLinkI()
            link.setParent(omero.model.DatasetI(dataset.getId().val, False))
            link.setChild(omero.model.ImageI(image_id, False))
            update.saveAndReturnObject(link, ctx)
        return dataset.getId().val


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    server = Live(tmp_path_factory.mktemp("live"))
    yield server
    server.close()


@pytest.fixture(scope="module")
def pixel_case(cases):
    """A single-series OME-TIFF whose pixels iscc-bio read (its code is the reference)."""
    case = next(
        c
        for c in cases
        if not c.get("iscc_bio_departs")
        and sum(1 for d in cases if d["file"] == c["file"]) == 1
        and c["sizes"][2] * c["sizes"][3] * c["sizes"][4] > 1
    )
    path = Path(case["raw"]).parent / case["file"]
    pixels = (tuple(case["sizes"]), case["pixel_type"], case["bytes_per_pixel"], Path(case["raw"]).read_bytes())
    return path, pixels, case["biocode"]["iscc_code"]


class Scene:
    """One role's world: the acting session, the images' owner, their group, a dataset of two
    copies of one file and an image with pixels."""

    def __init__(self, live: Live, role: str, samples: Path, pixel_case: tuple) -> None:
        kind = role.split("member-", 1)[1] if role.startswith("member-") else "read-annotate"
        self.group = live.new_group(GROUP_TYPES[kind])
        self.owner = live.new_user([self.group[0]])
        if role == "admin":
            self.actor = (None, live.admin_name, live.admin_password)
        elif role == "restricted-admin":
            self.actor = live.new_restricted_admin(["Sudo", "WriteOwned", "DeleteOwned", "WriteFile"])
        else:
            self.actor = self.owner
        self.file = samples / "ome-tiff" / "neuron-4Ch.tiff"
        self.copies = [live.import_image(self.file, self.owner, self.group) for _ in range(2)]
        path, pixels, self.pixel_code = pixel_case
        self.pixel_image = live.import_image(path, self.owner, self.group, pixels)
        owner_conn = live.connect(self.owner[1], self.owner[2])
        self.dataset = live.new_dataset(owner_conn, self.group[0], [*self.copies, self.pixel_image])
        self.conn = live.connect(self.actor[1], self.actor[2])


@pytest.fixture(scope="module", params=ROLES)
def scene(request, live, samples, pixel_case):
    return Scene(live, request.param, samples, pixel_case)


def _settings(worker: str):
    from omero_iscc.config import ScriptSettings

    return ScriptSettings(worker=worker)


def test_annotate_files_and_pixels_as_each_role(scene, worker):
    from omero_iscc import PIXELS_NAMESPACE
    from omero_iscc.gateway import BlitzOmero
    from omero_iscc.jobs import annotate_job
    from omero_iscc.layout import newest_pixel_record, newest_record

    access = BlitzOmero(scene.conn)
    result = annotate_job(access, "Image", scene.copies, _settings(worker), codes=("files",))
    assert result.message == "2 annotated", result.message
    result = annotate_job(access, "Image", [scene.pixel_image], _settings(worker), codes=("files", "pixels"))
    assert result.message == "files: 1 annotated; pixels: 1 annotated", result.message
    anns = access.iscc_annotations(scene.copies, NS)
    want = reference([scene.file])["iscc"]
    assert {newest_record(anns[i]).iscc for i in scene.copies} == {want}
    assert all(a.getDetails().getOwner().getId().val == scene.owner[0] for i in scene.copies for a in anns[i])
    pixels = newest_pixel_record(access.iscc_annotations([scene.pixel_image], PIXELS_NAMESPACE)[scene.pixel_image])
    assert pixels.iscc == scene.pixel_code
    # Again: nothing twice.
    result = annotate_job(access, "Image", scene.copies, _settings(worker), codes=("files",))
    assert result.message == "0 annotated, 2 already had an ISCC", result.message


def test_verify_and_duplicates_as_each_role(scene, worker):
    from omero_iscc.gateway import BlitzOmero
    from omero_iscc.jobs import annotate_job, duplicates_job, verify_job

    access = BlitzOmero(scene.conn)
    annotate_job(access, "Dataset", [scene.dataset], _settings(worker), codes=("files",))
    result = verify_job(access, "Dataset", [scene.dataset], _settings(worker))
    assert {r["status"] for r in result.rows} == {"OK"} and len(result.rows) == 3, result.rows
    result = duplicates_job(access, "Dataset", [scene.dataset], _settings(worker))
    assert result.message.startswith("1 group(s) of identical images (2 images)"), result.message


def test_the_cli_plugin_logs_in_and_annotates_verifies_and_finds_duplicates(
    live, scene, worker, tmp_path, monkeypatch, capsys
):
    from omero.cli import CLI

    monkeypatch.setenv("OMERO_SESSIONDIR", str(tmp_path / "sessions"))
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"worker": worker, "state_dir": str(tmp_path / "state")}))
    cli = CLI()
    cli.loadplugins()
    cli.invoke(
        ["login", "-s", live.host, "-p", str(live.port), "-u", scene.actor[1], "-w", scene.actor[2]], strict=True
    )
    try:
        capsys.readouterr()
        for command, expect in [
            (["iscc", "annotate", f"Dataset:{scene.dataset}"], f"Image:{scene.copies[0]}"),
            (["iscc", "verify", f"Dataset:{scene.dataset}"], "3 OK"),
            (["iscc", "duplicates", f"Dataset:{scene.dataset}"], "1 group(s) of identical images (2 images)"),
        ]:
            cli.rv = 0
            cli.invoke([*command, "--config", str(cfg)], strict=False)
            out = capsys.readouterr().out
            assert cli.rv == 0 and expect in out, (command, out)
    finally:
        cli.invoke(["logout"], strict=False)


def test_scripts_run_through_the_script_service(live, samples, pixel_case, worker):
    import omero
    import omero.scripts
    from omero.rtypes import rbool, rlist, rlong, rstring, unwrap

    scene = Scene(live, "admin", samples, pixel_case)
    svc = live.admin.getScriptService()

    def run(name: str, inputs: dict) -> dict:
        script_id = svc.getScriptID(f"/iscc/{name}")
        if script_id <= 0:
            script_id = svc.uploadOfficialScript(
                f"/iscc/{name}", (TOP / "omero_scripts" / "omero_iscc" / "scripts" / name).read_text()
            )
        wrapped = {
            k: rbool(v) if isinstance(v, bool) else rlist([rlong(x) for x in v]) if isinstance(v, list) else rstring(v)
            for k, v in inputs.items()
        }
        proc = svc.runScript(script_id, wrapped, None)
        cb = omero.scripts.ProcessCallbackI(live.admin.c, proc)
        try:
            while proc.poll() is None:
                cb.block(1000)
            return {k: unwrap(v) for k, v in proc.getResults(3).items()}
        finally:
            cb.close()

    results = run("ISCC_Annotate.py", {"Data_Type": "Dataset", "IDs": [scene.dataset]})
    assert results["Message"].startswith("3 annotated"), results
    results = run("ISCC_Verify.py", {"Data_Type": "Dataset", "IDs": [scene.dataset]})
    assert results["Message"].startswith("Verified 3 image(s): 3 OK"), results
    assert "File_Annotation" in results
    # Nothing to attach the report to: the script's File output, uploaded in the admin's group.
    results = run("ISCC_Verify.py", {"Data_Type": "Image", "IDs": [999999999]})
    assert "it is the script's File output" in results["Message"], results
    assert "File" in results and "File_Annotation" not in results


def _scheduler_config(live: Live, tmp_path: Path, worker: str, **extra) -> Path:
    cfg = tmp_path / "config.json"
    values = {
        "host": live.host,
        "port": live.port,
        "username": live.admin_name,
        "password": live.admin_password,
        "worker": worker,
        "state_dir": str(tmp_path / "state"),
        **extra,
    }
    cfg.write_text(json.dumps(values))
    return cfg


def _helper(args: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(TOP / "omero_scripts"))
    return subprocess.run(
        [sys.executable, "-m", "omero_iscc", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def test_the_scheduler_polls_in_a_process_of_its_own(live, samples, pixel_case, worker, tmp_path):
    from omero_iscc.gateway import BlitzOmero

    scene = Scene(live, "admin", samples, pixel_case)
    cfg = _scheduler_config(live, tmp_path, worker, batch_size=1000)
    done = _helper(["--config", str(cfg), "run", "--once"])
    assert done.returncode == 0, done.stderr[-3000:]
    anns = BlitzOmero(scene.conn).iscc_annotations([*scene.copies, scene.pixel_image], NS)
    assert all(anns[i] for i in [*scene.copies, scene.pixel_image]), done.stderr[-3000:]
    assert all(a.getDetails().getOwner().getId().val == scene.owner[0] for a in anns[scene.copies[0]])


def test_the_backlog_ingests_what_it_hashed_locally(live, samples, pixel_case, worker, tmp_path):
    from omero_iscc.gateway import BlitzOmero

    assert live.repository, "set OMERO_ISCC_TEST_REPOSITORY to the server's ManagedRepository mounted here"
    scene = Scene(live, "admin", samples, pixel_case)
    cfg = _scheduler_config(
        live, tmp_path, worker, repository=live.repository, backlog_dir=str(tmp_path / "backlog"), shard_bytes=1 << 20
    )
    done = _helper(["--config", str(cfg), "backlog", "--local", "1"])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    anns = BlitzOmero(scene.conn).iscc_annotations(scene.copies, NS)
    assert all(anns[i] for i in scene.copies)
