"""How long a script runs under OMERO's Processor, on the stand-in (``standin.processor``):
the script session lives ``omero.scripts.timeout``, and cancelling a script sends SIGTERM to
the script's own pid only (omero-py ``ProcessI._term``), never to its process group."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from conftest import TOP
from fake_server import FakeServer
from standin.processor import run_script

SCRIPTS = TOP / "omero_scripts" / "omero_iscc" / "scripts"


def _images(server: FakeServer, repo: Path, n: int) -> list[int]:
    out = []
    for k in range(n):
        rel = f"scientist_2/{k}/"
        p = repo / rel / "a.tif"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(5000))
        out += server.add_fileset([server.original_file(str(p), rel)], rel)
    return out


def _running(pid: int) -> bool:
    """Whether the process runs (a zombie waiting for its parent does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def _environment(tmp_path: Path, worker: str) -> tuple[tuple, tuple]:
    """PATH with ``omero-iscc`` (where the server's Python finds it), PYTHONPATH with the helper."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    target = bin_dir / "omero-iscc"
    if not target.exists():
        target.symlink_to(worker)
    return (str(bin_dir),), (str(TOP / "omero_scripts"),)


def test_a_script_cancelled_by_sigterm_to_its_own_pid_stops_its_worker(tmp_path):
    # The Processor's SIGTERM reaches the script only: a worker left in hand would keep
    # reading the repository after the user cancelled, with no one to read its answers.
    repo = tmp_path / "repo"
    server = FakeServer(root=str(repo))
    images = _images(server, repo, 1)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pid_file = tmp_path / "worker.pid"
    fake = bin_dir / "omero-iscc"
    fake.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 120\n")
    fake.chmod(0o755)

    def cancel_once_the_worker_runs(session) -> None:
        # What ProcessI._term does: SIGTERM to the script's own pid.
        if pid_file.exists() and pid_file.read_text().strip() and not getattr(session, "cancelled", False):
            session.cancelled = True
            os.kill(session.process.pid, signal.SIGTERM)

    run = run_script(
        server,
        str(SCRIPTS / "ISCC_Annotate.py"),
        {"Data_Type": "Image", "IDs": images},
        user=2,
        path=(str(bin_dir),),
        pythonpath=(str(TOP / "omero_scripts"),),
        timeout=120,
        while_running=cancel_once_the_worker_runs,
    )
    assert pid_file.exists(), run.stderr
    pid = int(pid_file.read_text())
    try:
        assert not _running(pid), f"the worker {pid} still runs after the script ended: {run.stderr[-2000:]}"
    finally:
        if _running(pid):
            os.kill(pid, 9)
    assert run.returncode != 0


def test_a_script_takes_no_new_work_past_omero_scripts_timeout_and_says_what_is_left(tmp_path, worker):
    # A one-minute script timeout leaves no time to hash in: the script hashes nothing and
    # says what is left and where long runs belong, instead of dying mid-run.
    repo = tmp_path / "repo"
    server = FakeServer(root=str(repo))
    images = _images(server, repo, 2)
    server.config["omero.scripts.timeout"] = "60000"
    path, pythonpath = _environment(tmp_path, worker)
    run = run_script(
        server,
        str(SCRIPTS / "ISCC_Annotate.py"),
        {"Data_Type": "Image", "IDs": images},
        user=2,
        path=path,
        pythonpath=pythonpath,
    )
    message = run.outputs.get("Message", "")
    assert run.returncode == 0, run.stderr
    assert message.startswith("0 annotated"), message
    assert "2 image(s) left" in message and "omero iscc annotate" in message, message
    assert server.iscc_anns(images[0]) == [], "nothing was started past the budget"


def test_the_scripts_time_limit_comes_from_omero_scripts_timeout(tmp_path, worker):
    # With the default hour the same selection is annotated in full.
    repo = tmp_path / "repo"
    server = FakeServer(root=str(repo))
    images = _images(server, repo, 2)
    path, pythonpath = _environment(tmp_path, worker)
    run = run_script(
        server,
        str(SCRIPTS / "ISCC_Annotate.py"),
        {"Data_Type": "Image", "IDs": images},
        user=2,
        path=path,
        pythonpath=pythonpath,
    )
    assert run.outputs.get("Message", "").startswith("2 annotated"), (run.outputs, run.stderr[-2000:])


def test_the_admin_poll_script_takes_no_image_past_omero_scripts_timeout(tmp_path, worker):
    import json

    from test_annotate import load_script

    script = load_script("ISCC_Annotate_New_Images")
    repo = tmp_path / "repo"
    server = FakeServer(root=str(repo))
    images = _images(server, repo, 2)
    server.config["omero.scripts.timeout"] = "60000"
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"worker": worker, "state_dir": str(tmp_path / "state")}))
    message = script.poll(server.access(0), 5, config_file=str(cfg))
    assert message.startswith("0 annotated") and "stopped before the script's time limit (1 min" in message, message
    assert all(server.iscc_anns(i) == [] for i in images)


def test_verify_takes_no_image_past_the_script_timeout_and_says_what_is_left(tmp_path, worker):
    from test_annotate import load_script

    from omero_iscc.config import ScriptSettings

    repo = tmp_path / "repo"
    server = FakeServer(root=str(repo))
    images = _images(server, repo, 3)
    settings = ScriptSettings(worker=worker).within(60.0)  # a one-minute script timeout
    verify = load_script("ISCC_Verify")
    message, _outputs = verify.verify_selection(server.access(2), {"Data_Type": "Image", "IDs": images}, settings)
    assert message.startswith("Verified 0 image(s)") and "3 image(s) left" in message, message
    assert "omero iscc verify" in message, message
