"""`omero iscc ...`: the CLI plugin run through omero-py's real CLI (`omero.cli.CLI`, plugins
loaded as a user's `omero` loads them, `omero login` to the stand-in server on the wire). (The
distribution that carries it is built, installed, run and uninstalled in test_wheel.py.)"""

from __future__ import annotations

import json
import re

import pytest
from conftest import reference

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
