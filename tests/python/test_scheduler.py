"""The scheduler against the in-memory OMERO with the real worker: backlog, retries, lost
connections, SIGTERM, the lock, the webhook and the configuration."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from conftest import TOP, reference
from fake_server import FakeServer

from omero_iscc import state as state_mod
from omero_iscc.__main__ import main
from omero_iscc.config import Config, load
from omero_iscc.scheduler import Scheduler


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def backlog(tmp_path: Path, n: int) -> tuple[FakeServer, list[int], dict]:
    repo = tmp_path / "repo"
    fake = FakeServer(root=str(repo))
    ids, paths = [], {}
    for k in range(n):
        d = f"u/2026-11/29/{k:05d}/"
        p = repo / d / f"img{k}.tif"
        p.parent.mkdir(parents=True)
        p.write_bytes(os.urandom(200 + k * 3))
        [image_id] = fake.add_fileset([fake.original_file(str(p), d)], d)
        ids.append(image_id)
        paths[image_id] = p
    return fake, ids, paths


def make(tmp_path, fake, worker, clock=None, **cfg) -> tuple[Scheduler, list]:
    connects = []

    def connect(config):
        connects.append(1)
        return None, fake.access(0)  # the scheduler runs as an administrator

    config = Config(state_dir=str(tmp_path / "state"), worker=worker, poll_interval=60.0, **cfg)
    return Scheduler(config, connect, sleep=lambda s: None, clock=clock or Clock()), connects


def test_backlog_of_250_in_three_polls_each_image_once(tmp_path, worker):
    fake, ids, paths = backlog(tmp_path, 250)
    sched, _ = make(tmp_path, fake, worker, batch_size=100)
    results = [sched.poll_once() for _ in range(4)]
    assert [r.annotated for r in results] == [100, 100, 50, 0]
    for image_id in ids:
        assert len(fake.annotations[image_id]) == 1
    for image_id in (ids[0], ids[-1]):
        assert dict(fake.pairs(image_id))["iscc:sum"] == reference([paths[image_id]])["iscc"]
    assert state_mod.load(sched.cfg.state_dir).annotated_total == 250


def test_failing_image_is_tried_three_times_then_left(tmp_path, worker, capsys):
    fake, ids, paths = backlog(tmp_path, 3)
    paths[ids[1]].unlink()
    clock = Clock()
    sched, _ = make(tmp_path, fake, worker, clock=clock, batch_size=10)
    tried = []
    for _ in range(6):
        tried.append(sched.poll_once().seen)
        clock.t += 10 * 3600  # past any backoff
    assert tried == [3, 1, 1, 0, 0, 0]
    failure = state_mod.load(sched.cfg.state_dir).failures[ids[1]]
    assert failure.attempts == 3
    assert main(["--state-dir", sched.cfg.state_dir, "--worker", worker, "status"]) == 0
    out = capsys.readouterr().out
    assert "given up after 3 attempts: 1" in out and f"image {ids[1]}:" in out


def test_backoff_delays_a_retry(tmp_path, worker):
    fake, ids, paths = backlog(tmp_path, 2)
    paths[ids[0]].unlink()
    clock = Clock()
    sched, _ = make(tmp_path, fake, worker, clock=clock)
    assert sched.poll_once().seen == 2
    assert sched.poll_once().seen == 0  # waiting for its backoff
    clock.t += 61
    assert sched.poll_once().seen == 1


@pytest.mark.parametrize("method, after", [("saveAndReturnArray", 5), ("findAllByQuery", 1), ("projection", 1)])
def test_lost_connection_mid_batch_loses_and_duplicates_nothing(tmp_path, worker, method, after):
    fake, ids, _ = backlog(tmp_path, 12)
    sched, connects = make(tmp_path, fake, worker, batch_size=20)
    fake.drop_connection_after(method, after)
    result = sched.poll_once()
    assert result.annotated == 12 and result.failed == 0
    assert len(connects) == 2
    for image_id in ids:
        assert len(fake.annotations[image_id]) == 1


def test_sigterm_mid_batch_exits_0_and_the_next_run_resumes(tmp_path, worker):
    fake, ids, _ = backlog(tmp_path, 10)
    sched, _ = make(tmp_path, fake, worker, batch_size=100)
    sched.install_signal_handlers()
    original = sched._annotated
    count = []

    def annotated_then_signal(image_id, record, seconds=0.0):
        original(image_id, record, seconds)
        count.append(image_id)
        if len(count) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # a real signal, handled like systemd's stop

    sched._annotated = annotated_then_signal
    try:
        assert sched.run(once=False) == 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    done = [i for i in ids if fake.annotations.get(i)]
    assert done == ids[:3]
    assert state_mod.load(sched.cfg.state_dir).annotated_total == 3
    again, _ = make(tmp_path, fake, worker, batch_size=100)
    assert again.run(once=True) == 0
    assert all(len(fake.annotations[i]) == 1 for i in ids)


def test_second_instance_is_refused(tmp_path, worker):
    state_dir = tmp_path / "state"
    cfg = tmp_path / "c.json"
    cfg.write_text("{}")
    env = dict(os.environ, PYTHONPATH=str(TOP / "omero_scripts"))
    with state_mod.Lock(str(state_dir)):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "omero_iscc",
                "--config",
                str(cfg),
                "--state-dir",
                str(state_dir),
                "--worker",
                worker,
                "run",
                "--once",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
    assert proc.returncode == 3, proc.stderr
    assert "another omero-iscc scheduler is running" in proc.stderr


class Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 - http.server's API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_gets_one_notice_per_image_and_a_dead_one_blocks_nothing(tmp_path, worker):
    Receiver.received = []
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        fake, ids, _ = backlog(tmp_path, 5)
        sched, _ = make(tmp_path, fake, worker, webhook_url=f"http://127.0.0.1:{server.server_port}/hook")
        assert sched.run(once=True) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert sorted(n["image_id"] for n in Receiver.received) == ids
    notice = Receiver.received[0]
    assert set(notice) == {"image_id", "code", "iscc", "datahash", "timestamp", "server"}
    assert notice["code"] == "files"
    assert notice["iscc"] == dict(fake.pairs(notice["image_id"]))["iscc:sum"]

    dead_port = server.server_port  # closed now
    fake2, ids2, _ = backlog(tmp_path / "b", 4)
    sched2, _ = make(tmp_path / "b", fake2, worker, webhook_url=f"http://127.0.0.1:{dead_port}/hook")
    assert sched2.run(once=True) == 0
    assert all(len(fake2.annotations[i]) == 1 for i in ids2)


def test_configuration_precedence(tmp_path):
    f = tmp_path / "config.json"
    f.write_text(json.dumps({"host": "file-host", "port": 4000, "batch_size": 7, "password": "s3cret"}))
    env = {"OMERO_ISCC_PORT": "4100", "OMERO_ISCC_BATCH_SIZE": "8"}
    cfg = load(cli={"batch_size": 9, "host": None}, env=env, config_file=str(f))
    assert (cfg.host, cfg.port, cfg.batch_size) == ("file-host", 4100, 9)
    assert cfg.masked()["password"] == "***" and cfg.password == "s3cret"


@pytest.mark.parametrize(
    "content, args, message",
    [
        ('{"poll_interval": -5}', [], "poll_interval: -5.0 must be greater than 0"),
        ('{"pol_interval": 5}', [], "unknown key(s)"),
        ('{"batch_size": "many"}', [], "batch_size: 'many' is not a number"),
        ("not json", [], "is not valid JSON"),
        (None, [], "cannot read the configuration file"),
        ("{}", ["--port", "70000"], "port: 70000 is not a TCP port"),
        ("{}", ["--log-level", "chatty"], "log_level"),
    ],
)
def test_bad_configuration_exits_2_with_a_clear_message(tmp_path, capsys, content, args, message):
    f = tmp_path / "config.json"
    if content is not None:
        f.write_text(content)
    assert main(["--config", str(f), *args, "--state-dir", str(tmp_path / "s"), "run", "--once"]) == 2
    assert message in capsys.readouterr().err


def test_the_effective_configuration_is_logged_masked(tmp_path, worker, caplog):
    fake, _, _ = backlog(tmp_path, 1)
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"password": "topsecret", "worker": worker, "state_dir": str(tmp_path / "s")}))
    import logging

    caplog.set_level(logging.INFO)
    assert main(["--config", str(f), "run", "--once"], connect=lambda cfg: (None, fake.access(0))) == 0
    text = caplog.text
    assert "configuration:" in text and "topsecret" not in text and '"password": "***"' in text
    [image_id] = list(fake.annotations)
    code = dict(fake.pairs(image_id))["iscc:sum"]
    assert re.search(rf"image {image_id} files {code} \d+\.\d\ds", text)  # one line per image: id, kind, code, seconds


def test_the_admin_script_runs_one_poll_with_the_scheduler_state(tmp_path, worker):
    from test_annotate import load_script

    script = load_script("ISCC_Annotate_New_Images")
    fake, ids, paths = backlog(tmp_path, 7)
    paths[ids[2]].unlink()
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"worker": worker, "state_dir": str(tmp_path / "state")}))
    message = script.poll(fake.access(0), 5, config_file=str(cfg))
    assert message == "4 annotated, 1 failed, of 5 image(s) without an ISCC (batch size 5)"
    assert state_mod.load(str(tmp_path / "state")).failures[ids[2]].attempts == 1
    with state_mod.Lock(str(tmp_path / "state")), pytest.raises(state_mod.LockedError):
        script.poll(fake.access(0), 5, config_file=str(cfg))
    with pytest.raises(script.scripting.ScriptError, match="only administrators"):
        script.poll(fake.access(2), 5, config_file=str(cfg))


def test_the_backlog_scan_resumes_where_the_last_poll_stopped(tmp_path, worker):
    # Images given up on stay without an ISCC: a scan from id 0 every poll reads them again,
    # poll after poll (a server with a million unreadable images reads a million rows per
    # poll). The scan resumes after the last image it took, and starts over once it reaches
    # the end (then the images whose retry has come are found again).
    fake, ids, _paths = backlog(tmp_path, 12)
    sched, _ = make(tmp_path, fake, worker, batch_size=2)
    for image_id in ids[:6]:  # the six oldest were given up long ago
        sched.states["files"].failures[image_id] = state_mod.Failure(3, "unreadable", 0.0, 0.0)

    def scanned() -> int:
        rows = sum(n for text, n in fake.queries if "not exists" in text)
        fake.queries.clear()
        return rows

    assert sched.poll_once().annotated == 2 and scanned() == 8  # six given up, then two
    assert sched.poll_once().annotated == 2 and scanned() == 2, "the second poll resumes after the first"
    assert [sched.poll_once().annotated for _ in range(2)] == [2, 0]
    scanned()
    assert sched.poll_once().annotated == 0 and scanned() == 6, "past the end, the scan starts over"
    assert all(len(fake.annotations[i]) == 1 for i in ids[6:])


def test_a_poll_stopped_before_its_batch_leaves_the_scan_where_it_was(tmp_path, worker):
    # A poll past its deadline takes its batch but hashes none of it: the next poll must find
    # those images again rather than resume after them.
    import time

    fake, ids, _paths = backlog(tmp_path, 6)
    sched, _ = make(tmp_path, fake, worker, batch_size=2)
    sched.deadline = time.monotonic() - 1
    assert sched.poll_once().stopped
    sched.deadline = None
    assert sched.poll_once().annotated == 2
    assert [i for i in ids if fake.iscc_anns(i)] == ids[:2]
