"""What an account on a shared OMERO host, or a receiver on the network, could do to the helper,
each as a test: a webhook that redirects, answers garbage or drips; a state directory someone
else owns or a link planted under the state's temporary name; scripts started in parallel;
an image name that is a spreadsheet formula; a worker record without an id. And what an
administrator must be told: no credentials, an unreachable server."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from test_annotate import load_script

from omero_iscc import state as state_mod
from omero_iscc.__main__ import main
from omero_iscc.config import Config, ConfigError, ScriptSettings, load
from omero_iscc.errors import InputError
from omero_iscc.statuses import ExitStatus
from omero_iscc.webhook import Webhook, WebhookError, post

ANNOTATE = load_script("ISCC_Annotate")
DUPLICATES = load_script("ISCC_Find_Duplicates")


# -- the webhook -----------------------------------------------------------------------------
class Recorder(BaseHTTPRequestHandler):
    hits: list = []

    def do_POST(self):  # noqa: N802 - http.server's API
        length = int(self.headers.get("Content-Length", 0))
        type(self).hits.append((self.path, self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = do_POST  # noqa: N815 - a redirected POST arrives as a GET

    def log_message(self, *args):
        pass


def serve(handler) -> HTTPServer:
    server = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def raw_server(reply) -> socket.socket:
    """A TCP server that answers every connection with ``reply(conn)``."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)

    def loop():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=reply, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return sock


def test_a_redirect_is_a_failure_and_is_never_followed():
    Recorder.hits = []
    elsewhere = serve(Recorder)

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{elsewhere.server_port}/stolen")
            self.end_headers()

        def log_message(self, *args):
            pass

    here = serve(Redirect)
    try:
        with pytest.raises(WebhookError, match="redirects are not followed"):
            post(f"http://127.0.0.1:{here.server_port}/hook", {"image_id": 1}, timeout=5)
    finally:
        here.shutdown()
        elsewhere.shutdown()
    assert Recorder.hits == [], "the notice went to the host the redirect named"


def test_garbage_and_a_dripping_receiver_fail_alone_within_the_deadline(caplog):
    def garbage(conn):
        conn.recv(65536)
        conn.sendall(b"\x00\xffthis is not HTTP\r\n\r\n")
        conn.close()

    def drip(conn):
        conn.recv(65536)
        try:
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            for _ in range(100):  # one header byte a second: each read is quick, the whole is not
                time.sleep(1)
                conn.sendall(b"X")
        except OSError:
            pass
        finally:
            conn.close()

    bad, slow = raw_server(garbage), raw_server(drip)
    Recorder.hits = []
    good = serve(Recorder)
    caplog.set_level(logging.WARNING)
    try:
        hook = Webhook(f"http://127.0.0.1:{bad.getsockname()[1]}/secret-token-123", timeout=2)
        hook.notify({"image_id": 1})
        hook.drain(10)
        hook.url = f"http://127.0.0.1:{slow.getsockname()[1]}/secret-token-123"
        start = time.monotonic()
        hook.notify({"image_id": 2})
        hook.drain(20)
        took = time.monotonic() - start
        hook.url = f"http://127.0.0.1:{good.server_port}/secret-token-123"
        hook.notify({"image_id": 3})
        hook.drain(10)
    finally:
        bad.close()
        slow.close()
        good.shutdown()
    assert (hook.failed, hook.sent) == (2, 1), "a failure ended the sender, or a bad reply counted as sent"
    assert took < 6, f"the dripping receiver held the notice {took:.1f} s past its 2 s deadline"
    assert [json.loads(body)["image_id"] for _, body in Recorder.hits] == [3]
    assert "no complete reply within 2 s" in caplog.text
    assert "secret-token-123" not in caplog.text and "http://127.0.0.1:" in caplog.text


def test_the_webhook_url_is_validated_and_masked(tmp_path):
    cfg = Config(webhook_url="https://hooks.example.org/services/T000/B000/XXXXSECRET")
    assert cfg.masked()["webhook_url"] == "https://hooks.example.org/***"
    empty = tmp_path / "c.json"
    empty.write_text("{}")
    for bad in ["ftp://x/y", "https:///nohost", "https://h/x\nInjected: 1"]:
        with pytest.raises(ConfigError, match="webhook_url"):
            load(cli={"webhook_url": bad}, env={}, config_file=str(empty))


# -- the state directory ---------------------------------------------------------------------
def test_a_state_directory_others_own_or_may_write_is_refused(tmp_path):
    mine = tmp_path / "state"
    mine.mkdir(mode=0o700)
    state_mod.save(str(mine), state_mod.State(annotated_total=3))
    assert state_mod.load(str(mine)).annotated_total == 3
    mine.chmod(0o777)
    with pytest.raises(state_mod.StateDirError, match="writable by others"):
        state_mod.load(str(mine))
    with pytest.raises(state_mod.StateDirError, match="writable by others"):
        state_mod.Lock(str(mine)).acquire()
    mine.chmod(0o700)
    os.chown(mine, 65534, 65534)
    try:
        with pytest.raises(state_mod.StateDirError, match="belongs to uid 65534"):
            state_mod.save(str(mine), state_mod.State())
    finally:
        os.chown(mine, os.getuid(), os.getgid())
    empty = tmp_path / "c.json"
    empty.write_text("{}")
    (tmp_path / "open").mkdir(mode=0o700)
    assert main(["--config", str(empty), "--state-dir", str(tmp_path / "open"), "status"]) == 0
    (tmp_path / "open").chmod(0o777)
    assert main(["--config", str(empty), "--state-dir", str(tmp_path / "open"), "status"]) == ExitStatus.USAGE


def test_a_link_planted_under_the_states_temporary_name_is_not_written_through(tmp_path):
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    # The name the state was once written through; and a lock file swapped for a link.
    (state_dir / f"state.json.{os.getpid()}.tmp").symlink_to(victim)
    state_mod.save(str(state_dir), state_mod.State(annotated_total=1))
    assert victim.read_text() == "precious"
    assert json.loads((state_dir / "state.json").read_text())["annotated_total"] == 1
    (state_dir / "scheduler.lock").symlink_to(victim)
    with pytest.raises(OSError):
        state_mod.Lock(str(state_dir)).acquire()
    assert victim.read_text() == "precious"


# -- one script worker per host ----------------------------------------------------------------
def test_scripts_take_turns_on_a_host_and_one_that_waits_too_long_says_so(world, worker, tmp_path):
    settings = ScriptSettings(worker=worker, state_dir=str(tmp_path / "state"), script_wait=0.5)
    params = {"Data_Type": "Image", "IDs": [world.single], "Replace_Existing": False, "Wide": False}
    with state_mod.script_slot(str(tmp_path / "state"), "ISCC_Verify.py", 0):
        start = time.monotonic()
        with pytest.raises(
            state_mod.LockedError, match=r"another omero-iscc script is hashing on this server \(ISCC_Ve"
        ):
            ANNOTATE.annotate_selection(world.omero, params, settings)
        assert 0.5 <= time.monotonic() - start < 5
    assert not world.server.annotations, "the waiting script hashed nothing"
    # A slot freed while a script waits is taken.
    holder = state_mod.script_slot(str(tmp_path / "state"), "ISCC_Verify.py", 0)
    holder.__enter__()
    threading.Timer(0.3, holder.__exit__, (None, None, None)).start()
    settings.script_wait = 10
    message, _ = ANNOTATE.annotate_selection(world.omero, params, settings)
    assert message.startswith("1 annotated"), message


def test_the_script_settings_always_name_a_slot():
    settings = ScriptSettings()
    assert settings.state_dir is None  # made by hand (tests): no slot
    from omero_iscc.config import script_settings

    assert script_settings(os.devnull).state_dir, "a host without a configuration file still has the slot"


# -- reports ----------------------------------------------------------------------------------
def test_image_names_never_become_formulas_in_the_reports(world, worker):
    fake = world.server
    names = ['=HYPERLINK("https://evil.example/x","open")', "+cmd", "-2+3", "@SUM(A1)", "plain"]
    ids = []
    for k, name in enumerate(names):
        d = f"scientist_2/2026-11/30/n{k}/"
        p = world.repo / d / "f.tif"
        p.parent.mkdir(parents=True)
        p.write_bytes(os.urandom(2000))
        [image_id] = fake.add_fileset([fake.original_file(str(p), d)], d, names=[name])
        ids.append(image_id)
    params = {"Data_Type": "Image", "IDs": ids, "Scope": "Selection", "Threshold": 12}
    DUPLICATES.duplicates_of(world.omero, params, ScriptSettings(worker=worker))
    data = world.server.attachments[-1][3].decode()
    rows = {int(r["image_id"]): r["image_name"] for r in csv.DictReader(io.StringIO(data))}
    assert [rows[i] for i in ids] == ["'" + n for n in names[:4]] + ["plain"]
    verify = load_script("ISCC_Verify")
    ANNOTATE.annotate_selection(world.omero, {"Data_Type": "Image", "IDs": ids}, ScriptSettings(worker=worker))
    verify.verify_selection(world.omero, {"Data_Type": "Image", "IDs": ids}, ScriptSettings(worker=worker))
    data = world.server.attachments[-1][3].decode()
    rows = {int(r["image_id"]): r["image_name"] for r in csv.DictReader(io.StringIO(data))}
    assert [rows[i] for i in ids] == ["'" + n for n in names[:4]] + ["plain"]


# -- a worker record without an id ----------------------------------------------------------------
def test_a_worker_record_without_an_id_fails_only_its_own_image(world, worker, tmp_path):
    # The real worker, its first record stripped of its id on the way out.
    wrapper = tmp_path / "worker-dropping-an-id"
    wrapper.write_text(
        f"#!{sys.executable}\n"
        "import json, subprocess, sys\n"
        f"proc = subprocess.Popen([{worker!r}, *sys.argv[1:]], stdout=subprocess.PIPE)\n"
        "first = True\n"
        "for line in proc.stdout:\n"
        "    record = json.loads(line)\n"
        "    if first and 'id' in record:\n"
        "        del record['id']\n"
        "        first = False\n"
        "    sys.stdout.write(json.dumps(record) + '\\n')\n"
        "sys.exit(proc.wait())\n"
    )
    wrapper.chmod(0o755)
    params = {"Data_Type": "Image", "IDs": [world.single, world.multi_file], "Replace_Existing": False}
    message, _ = ANNOTATE.annotate_selection(world.omero, params, ScriptSettings(worker=str(wrapper)))
    assert message.startswith("1 annotated"), message
    assert "the worker returned no record for it" in message
    assert len(world.server.iscc_anns(world.single)) + len(world.server.iscc_anns(world.multi_file)) == 1


# -- what the administrator is told ---------------------------------------------------------------
def test_no_credentials_or_the_placeholder_are_refused_with_what_to_set(tmp_path, capsys):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"username": "CHANGE-ME", "password": "CHANGE-ME", "state_dir": str(tmp_path / "s")}))
    assert main(["--config", str(cfg), "run", "--once"]) == ExitStatus.USAGE
    err = capsys.readouterr().err
    assert f"username and password in {cfg} are still install.sh's placeholder 'CHANGE-ME'" in err
    assert "restricted administrator with the Sudo privilege" in err
    cfg.write_text(json.dumps({"state_dir": str(tmp_path / "s")}))
    assert main(["--config", str(cfg), "run", "--once"]) == ExitStatus.USAGE
    assert "no OMERO credentials in" in capsys.readouterr().err
    assert Config().credentials_problem() and not Config(session_key="k").credentials_problem()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_server_has_its_own_exit_status_and_fails_no_image(tmp_path, worker, capsys):
    cfg = tmp_path / "config.json"
    cfg.write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "port": free_port(),
                "username": "iscc",
                "password": "x",
                "worker": worker,
                "state_dir": str(tmp_path / "s"),
            }
        )
    )
    start = time.monotonic()
    status = main(["--config", str(cfg), "run", "--once"])  # the real omero-py connection
    assert status == ExitStatus.NO_SERVER == 5, capsys.readouterr().err
    assert time.monotonic() - start < 20, "a --once run retried a server that never answered"
    assert "cannot reach the OMERO server at 127.0.0.1:" in capsys.readouterr().err
    assert state_mod.load(str(tmp_path / "s")).failures == {}
    assert main(["--config", str(cfg), "find", "ISCC:KUAKRTHCAYVPS74GIFZWKBMR65XMM"]) == ExitStatus.NO_SERVER
    assert "cannot reach the OMERO server" in capsys.readouterr().err


def test_a_connection_lost_for_good_mid_run_is_no_server_not_failed_images(tmp_path, worker):
    import Ice

    from omero_iscc.scheduler import Scheduler

    class Lost:
        """An OMERO access whose connection is gone: every call raises as Ice does."""

        def __getattr__(self, name):
            raise Ice.ConnectionLostException()

    calls = []

    def connect(cfg):
        calls.append(1)
        if len(calls) > 1:
            raise Ice.ConnectionRefusedException()
        return None, Lost()

    sched = Scheduler(Config(worker=worker, state_dir=str(tmp_path / "s")), connect, sleep=lambda s: None)
    assert sched.run(once=True) == ExitStatus.NO_SERVER
    assert len(calls) == 6, "a session was lost mid-run: reconnected 5 times, then gave up"
    assert state_mod.load(str(tmp_path / "s")).failures == {}, "no image is failed for a lost server"
    never = Scheduler(Config(worker=worker, state_dir=str(tmp_path / "t")), connect, sleep=lambda s: None)
    assert never.run(once=True) == ExitStatus.NO_SERVER
    assert len(calls) == 7, "a --once run that never reached the server gives up at once"


def test_input_errors_of_every_command_are_exit_2_not_tracebacks(tmp_path, capsys):
    (tmp_path / "s").mkdir()
    (tmp_path / "s").chmod(0o777)
    empty = tmp_path / "c.json"
    empty.write_text("{}")
    assert main(["--config", str(empty), "--state-dir", str(tmp_path / "s"), "status"]) == 2
    assert "writable by others" in capsys.readouterr().err
    assert issubclass(state_mod.StateDirError, InputError)


# -- budgets --------------------------------------------------------------------------------------
def test_a_poll_stops_taking_images_once_its_time_budget_is_spent(tmp_path, worker):
    from fake_server import FakeServer

    from omero_iscc.scheduler import Scheduler

    repo = tmp_path / "repo"
    server = FakeServer(root=str(repo))
    for k in range(3):
        d = f"u/2026-12/01/{k}/"
        p = repo / d / "f.tif"
        p.parent.mkdir(parents=True)
        p.write_bytes(os.urandom(3000 + k))
        server.add_fileset([server.original_file(str(p), d)], d)

    def run(budget):
        cfg = Config(worker=worker, state_dir=str(tmp_path / f"s{budget}"), time_budget=budget)
        sched = Scheduler(cfg, lambda c: (None, server.access(0)), sleep=lambda s: None)
        result = sched.poll_once()
        limits = sched.limits()
        sched.close()
        return result, limits

    spent, limits = run(1e-9)
    assert (spent.annotated, spent.stopped) == (0, True), "a poll past its budget started an image"
    assert limits.deadline is not None and limits.time_budget() == 1.0  # the worker is given at least 1 s
    done, _ = run(None)
    assert done.annotated == 3 and not done.stopped


def test_a_scripts_worker_limits_count_from_the_scripts_start():
    settings = ScriptSettings(script_time_budget=100, max_file_size=1 << 30, started=time.monotonic() - 40)
    limits = settings.limits()
    assert 59 <= limits.time_budget() <= 60 and limits.max_file_size == 1 << 30
