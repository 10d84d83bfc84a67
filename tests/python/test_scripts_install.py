"""`omero iscc scripts install` and `python -m omero_iscc scripts install`: the OMERO.scripts of
the installed release put where the server runs them (copied into OMERO.server/lib/scripts/iscc,
or uploaded as the official scripts iscc/NAME.py) and taken away again, leaving everything else.

The upload goes through IScript (uploadOfficialScript, editScript, deleteScript, getScriptID);
a small script service here records those calls as a server would answer them. Against a real
server's script repository this is untested (see docs/install.md)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest
from conftest import TOP

from omero_iscc import deploy
from omero_iscc.__main__ import main

BUNDLED = sorted(p.name for p in (TOP / "omero_scripts" / "omero_iscc" / "scripts").glob("ISCC_*.py"))


@pytest.fixture
def server(tmp_path) -> Path:
    server = tmp_path / "OMERO.server-5.6.16"
    (server / "lib" / "scripts" / "omero").mkdir(parents=True)
    link = tmp_path / "OMERO.server"
    link.symlink_to(server)  # the usual layout: a link to the release
    return link


def test_copy_installs_each_script_once_and_uninstall_keeps_what_is_not_ours(server, capsys):
    target = server.resolve() / "lib" / "scripts" / "iscc"  # reported through the link, resolved
    assert BUNDLED == [
        "ISCC_Annotate.py",
        "ISCC_Annotate_New_Images.py",
        "ISCC_Find_Duplicates.py",
        "ISCC_Verify.py",
    ]
    assert main(["scripts", "install", "--omero-dir", str(server), "--dry-run"]) == 0
    assert not target.exists(), "--dry-run created the folder"
    assert main(["scripts", "install", "--omero-dir", str(server)]) == 0
    for name in BUNDLED:
        path = target / name
        assert path.read_bytes() == (TOP / "omero_scripts" / "omero_iscc" / "scripts" / name).read_bytes()
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    mtimes = {p.name: p.stat().st_mtime_ns for p in target.iterdir()}
    capsys.readouterr()
    assert main(["scripts", "install", "--omero-dir", str(server)]) == 0
    assert capsys.readouterr().out.count("unchanged ") == len(BUNDLED)
    assert {p.name: p.stat().st_mtime_ns for p in target.iterdir()} == mtimes

    # A site's own script beside ours, and one of ours the site edited: both stay.
    (target / "Site_Script.py").write_text("# ours\n")
    edited = target / "ISCC_Verify.py"
    edited.write_text(edited.read_text() + "# local change\n")
    assert main(["scripts", "install", "--omero-dir", str(server), "--uninstall"]) == 1
    out = capsys.readouterr().out
    assert f"kept {edited}: not the script this release installs" in out
    assert sorted(p.name for p in target.iterdir()) == ["ISCC_Verify.py", "Site_Script.py"]
    edited.unlink()
    (target / "Site_Script.py").unlink()
    assert main(["scripts", "install", "--omero-dir", str(server), "--uninstall"]) == 0
    assert not target.exists(), "the folder it made goes when it is empty"


def test_a_link_or_a_foreign_folder_is_refused_and_a_planted_link_is_replaced_not_followed(server, tmp_path, capsys):
    target = server.resolve() / "lib" / "scripts" / "iscc"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target.symlink_to(elsewhere)
    assert main(["scripts", "install", "--omero-dir", str(server)]) == 2
    assert f"{target} is a symbolic link: refusing to write through it" in capsys.readouterr().err
    assert list(elsewhere.iterdir()) == []
    target.unlink()
    target.mkdir()
    target.chmod(0o777)
    assert main(["scripts", "install", "--omero-dir", str(server)]) == 2
    assert "may be written by others" in capsys.readouterr().err
    target.chmod(0o755)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (target / "ISCC_Annotate.py").symlink_to(victim)
    assert main(["scripts", "install", "--omero-dir", str(server)]) == 0
    assert victim.read_text() == "precious"
    assert not (target / "ISCC_Annotate.py").is_symlink()
    assert main(["scripts", "install", "--omero-dir", str(tmp_path)]) == 2
    assert "does not look like OMERO.server" in capsys.readouterr().err


class ScriptService:
    """IScript as the server answers the calls the upload makes: official scripts by path."""

    def __init__(self) -> None:
        self.scripts: dict[str, tuple[int, str]] = {}
        self.calls: list[tuple] = []
        self.next_id = 100

    def getScriptID(self, path):  # noqa: N802 - IScript's API
        self.calls.append(("getScriptID", path))
        return self.scripts.get(path, (-1, ""))[0]

    def uploadOfficialScript(self, path, text):  # noqa: N802
        self.calls.append(("uploadOfficialScript", path))
        assert path not in self.scripts, "the server refuses an upload over an existing path"
        self.next_id += 1
        self.scripts[path] = (self.next_id, text)
        return self.next_id

    def editScript(self, ofile, text):  # noqa: N802
        self.calls.append(("editScript", ofile["id"]))
        path = next(p for p, (i, _) in self.scripts.items() if i == ofile["id"])
        self.scripts[path] = (ofile["id"], text)

    def deleteScript(self, sid):  # noqa: N802
        self.calls.append(("deleteScript", sid))
        path = next(p for p, (i, _) in self.scripts.items() if i == sid)
        del self.scripts[path]


class QueryService:
    def get(self, kind, oid):
        assert kind == "OriginalFile"
        return {"id": oid}


def test_upload_makes_iscc_name_then_replaces_in_place_and_uninstall_deletes(capsys):
    svc = ScriptService()
    services = lambda: (svc, QueryService())  # noqa: E731 - the session's services
    assert deploy.run(False, None, services) == 0
    assert sorted(svc.scripts) == [f"iscc/{n}" for n in BUNDLED]
    ids = {p: i for p, (i, _) in svc.scripts.items()}
    text = (TOP / "omero_scripts" / "omero_iscc" / "scripts" / "ISCC_Annotate.py").read_text()
    assert svc.scripts["iscc/ISCC_Annotate.py"][1] == text
    svc.calls.clear()
    assert deploy.run(False, None, services) == 0
    assert [c[0] for c in svc.calls if c[0] != "getScriptID"] == ["editScript"] * len(BUNDLED)
    assert {p: i for p, (i, _) in svc.scripts.items()} == ids, "a second run keeps the scripts' ids"
    assert "replace iscc/ISCC_Verify.py (OriginalFile:" in capsys.readouterr().out
    assert deploy.run(True, None, services) == 0
    assert svc.scripts == {}


def test_the_plugin_has_the_scripts_command(server, capsys):
    from omero.cli import CLI

    cli = CLI()
    cli.loadplugins()
    cli.invoke(["iscc", "scripts", "install", "--omero-dir", str(server)], strict=False)
    assert cli.rv == 0
    assert sorted(p.name for p in (server / "lib" / "scripts" / "iscc").iterdir()) == BUNDLED
    cli.invoke(["iscc", "scripts", "install", "--omero-dir", str(server), "--uninstall"], strict=False)
    assert cli.rv == 0 and not (server / "lib" / "scripts" / "iscc").exists()
    cli.invoke(["iscc", "-h"], strict=False)
    assert "5 when the OMERO server cannot be reached" in capsys.readouterr().out


def test_the_module_runs_without_omero_py_for_the_copy(server, tmp_path):
    """install.sh copies the scripts with the server's Python before anything else is there:
    the copy route imports nothing of omero-py."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = (
        "import sys; sys.modules['omero'] = None; sys.path.insert(0, sys.argv[1]); "
        "from omero_iscc.__main__ import main; sys.exit(main(['--config', sys.argv[3], "
        "'scripts', 'install', '--omero-dir', sys.argv[2]]))"
    )
    (tmp_path / "c.json").write_text("{}")
    result = subprocess.run(
        [sys.executable, "-I", "-c", code, str(TOP / "omero_scripts"), str(server), str(tmp_path / "c.json")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert len(list((server / "lib" / "scripts" / "iscc").iterdir())) == len(BUNDLED)
