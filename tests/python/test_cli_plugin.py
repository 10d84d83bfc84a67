"""`omero iscc ...`: the CLI plugin run through omero-py's real CLI (`omero.cli.CLI`, plugins
loaded as a user's `omero` loads them, `omero login` to the stand-in server on the wire), and the
Python distribution built, installed into a fresh environment beside omero-py, run, and
uninstalled."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import TOP, reference

SUBCOMMANDS = ["annotate", "verify", "duplicates", "find", "status", "doctor", "run", "backlog"]


def cli_logged_in(server, user: str, tmp_path, monkeypatch):
    """omero-py's own CLI with its plugins, logged in to the stand-in (``omero login -s HOST -p
    PORT -u USER -w PASSWORD``, sessions kept under ``tmp_path``)."""
    from omero.cli import CLI

    monkeypatch.setenv("OMERO_SESSIONDIR", str(tmp_path / "sessions"))
    cli = CLI()
    cli.loadplugins()
    host, port, name, password = server.login(user)
    cli.invoke(["login", "-s", host, "-p", str(port), "-u", name, "-w", password], strict=True)
    server.clients.append(cli.get_client())
    return cli


@pytest.fixture
def cli(world, worker, tmp_path, monkeypatch):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"worker": worker, "state_dir": str(tmp_path / "state")}))
    cli = cli_logged_in(world.server, "scientist", tmp_path, monkeypatch)

    def invoke(*args: str) -> int:
        cli.rv = 0
        cli.invoke(["iscc", *args, "--config", str(cfg)], strict=False)
        return cli.rv

    return invoke


def test_help_lists_every_subcommand(capsys):
    from omero.cli import CLI

    cli = CLI()
    cli.loadplugins()
    cli.invoke(["iscc", "-h"], strict=False)
    text = capsys.readouterr().out
    for sub in SUBCOMMANDS:
        assert re.search(rf"^\s+{sub}\s", text, re.M), (sub, text)


def test_annotate_a_dataset_with_json_and_the_workers_exit_statuses(world, cli, capsys):
    status = cli("annotate", f"Dataset:{world.dataset}", "--json")
    out = json.loads(capsys.readouterr().out)
    assert status == 1, "one image's file is missing: status 1, like the worker's"
    rows = {r["image_id"]: r for r in out["rows"]}
    assert rows[world.single]["status"] == "annotated"
    assert rows[world.single]["iscc"] == reference(world.disk[world.single])["iscc"]
    assert rows[world.missing]["status"] == "failed" and rows[world.locked]["status"] == "not_permitted"
    assert out["message"].startswith("7 annotated")
    # The same job the script runs: the annotation is there, in the same layout.
    assert dict(world.server.pairs(world.single))["iscc:sum"] == rows[world.single]["iscc"]


def test_dry_run_says_per_image_what_it_would_do_and_does_nothing(world, cli, capsys):
    assert cli("annotate", f"Image:{world.single}", f"Image:{world.multi_file}", "--dry-run") == 0
    text = capsys.readouterr().out
    assert f"Image:{world.single}" in text and "would annotate" in text and "fileset:" in text
    assert "dry run: would annotate 2 image(s) of 2" in text
    assert world.server.annotations == {}


def test_verify_and_duplicates_take_several_objects_the_cli_way(world, cli, capsys):
    cli("annotate", f"Image:{world.single}", f"Plate:{world.plate}")
    capsys.readouterr()
    assert cli("verify", f"Image:{world.single}", f"Plate:{world.plate}", "--json") == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert sorted(r["image_id"] for r in rows) == sorted([world.single, *world.multi_series])
    assert {r["status"] for r in rows} == {"OK"}
    assert cli("duplicates", f"Plate:{world.plate}") == 0
    assert "1 group(s) of identical images (3 images)" in capsys.readouterr().out


def test_bad_objects_and_usage_errors_exit_2(world, cli, capsys):
    assert cli("annotate", "Frobnicator:1") == 2
    assert cli("duplicates", f"Image:{world.single}", f"Dataset:{world.dataset}") == 2
    assert "give the objects of one type, or --all" in capsys.readouterr().err


def test_the_scheduler_commands_run_through_the_same_helper(world, cli, capsys):
    assert cli("run", "--once") == 1  # one image's file is missing
    assert world.server.iscc_anns(world.single)
    assert cli("status") == 0
    text = capsys.readouterr().out
    assert "waiting to be retried: 2" in text and f"image {world.missing}: attempt 1" in text


def _build(tmp_path: Path) -> tuple[Path, Path, Path]:
    out = tmp_path / "dist"
    src = tmp_path / "src"  # a copy: building writes build/ and *.egg-info beside the sources
    subprocess.run(["cp", "-r", str(TOP / "omero_scripts"), str(src)], check=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    sdist = subprocess.run(
        [sys.executable, "-c", f"import setuptools.build_meta as b; print(b.build_sdist({str(out)!r}))"],
        cwd=src,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[-1]
    made = subprocess.run(
        [sys.executable, str(TOP / "omero_scripts" / "make_wheel.py"), str(tmp_path / "made")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return next(out.glob("*.whl")), out / sdist, Path(made)


def test_the_distribution_builds_installs_beside_omero_py_runs_and_uninstalls_cleanly(tmp_path):
    wheel, sdist, made = _build(tmp_path)
    version = re.search(r'^version = "(.*)"', (TOP / "Cargo.toml").read_text(), re.M).group(1)
    from omero_iscc import __version__

    assert wheel.name == f"omero_iscc-{version}-py3-none-any.whl" and __version__ == version
    names = sorted(n for n in zipfile.ZipFile(wheel).namelist() if ".dist-info/" not in n)
    assert "omero/plugins/iscc.py" in names and "omero/__init__.py" not in names
    assert "omero_iscc/jobs.py" in names and not any(n.startswith("ISCC_") for n in names)
    # install.sh's standard-library build holds the same files.
    assert sorted(n for n in zipfile.ZipFile(made).namelist() if ".dist-info/" not in n) == names
    with tarfile.open(sdist) as tar:
        assert any(n.endswith("omero/plugins/iscc.py") for n in tar.getnames())

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "omero-py.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # omero-py beside it
    before = sorted(p.relative_to(site) for p in site.rglob("*"))
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", str(wheel)], check=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    helped = subprocess.run(
        [str(python), "-m", "omero_iscc", "--help"], capture_output=True, text=True, env=env, check=False
    )
    assert helped.returncode == 0 and "scheduler" in helped.stdout, helped.stderr
    omero_help = subprocess.run(
        [str(python), "-c", "from omero.cli import argv; argv(['omero', 'iscc', '-h'])"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    for sub in SUBCOMMANDS:
        assert sub in omero_help.stdout, omero_help.stdout + omero_help.stderr
    subprocess.run([str(python), "-m", "pip", "uninstall", "--quiet", "--yes", "omero-iscc"], check=True)

    def files() -> list:
        return sorted(p.relative_to(site) for p in site.rglob("*") if p.is_file() and "__pycache__" not in p.parts)

    assert files() == [p for p in before if (site / p).is_file() and "__pycache__" not in p.parts], "left behind"
