"""Running an OMERO.script as the server's Processor runs it (omero-py ``processor.py``
``ProcessI``), against the stand-in:

- a session of the user whose time-to-live is ``omero.scripts.timeout`` (default 3,600,000 ms;
  ``InteractiveProcessorI`` gives the script session this lifetime: past it every call fails,
  whatever keep-alives do), the inputs stored in that session (``ISession.getInputs``);
- a fresh directory with the script and an ``ICE_CONFIG`` naming the router and the session
  (``omero.user`` = ``omero.pass`` = the session's uuid), so ``omero.scripts.client(...)``
  joins it unmodified; the stand-in adds ``omero.host``/``omero.port`` so that a ``suConn``
  clone finds the router too;
- the script's own Python (``sys.executable``) with a whitelisted environment (``PATH``,
  ``HOME``, ``PYTHONPATH``, ``LANG``, ...: ``ProcessI.make_env``);
- cancelling sends SIGTERM to the script's own pid (``ProcessI._term``: ``os.kill(pid,
  SIGTERM)``), not to its process group.

``run_script`` returns the script's return code, its outputs (unwrapped) and its stdout and
stderr.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from omero.rtypes import unwrap, wrap

from .server import INVOCATION_TIMEOUT_MS, ensure_server
from .sessions import default_group

#: What ``ProcessI.make_env`` lets through.
WHITELIST = (
    "CLASSPATH",
    "DISPLAY",
    "DYLD_LIBRARY_PATH",
    "HOME",
    "JYTHON_HOME",
    "LC_ALL",
    "LANG",
    "LANGUAGE",
    "LD_LIBRARY_PATH",
    "MLABRAW_CMD_STR",
    "OMERODIR",
    "OMERO_TEMPDIR",
    "OMERO_TMPDIR",
    "PATH",
    "PYTHONPATH",
)


@dataclass
class ScriptRun:
    returncode: int
    outputs: dict
    stdout: str
    stderr: str
    session: object


def run_script(
    world,
    script: str,
    inputs: dict,
    user: int,
    path: tuple = (),
    pythonpath: tuple = (),
    cancel_after: float | None = None,
    timeout: float = 600,
    while_running=None,
) -> ScriptRun:
    """Runs ``script`` (a file) with ``inputs`` (plain values, wrapped as rtypes) as ``user``;
    ``path``/``pythonpath``: directories put first on the script's PATH and PYTHONPATH (where
    the server's Python would have the worker and the helper); ``cancel_after``: seconds after
    which the script is cancelled as the Processor cancels it; ``while_running(session)``: called
    every 50 ms while the script runs."""
    server = ensure_server()
    server.register(world)
    who = world.users[user]
    session = server.new_session(
        world, user, default_group(world, who), ttl_ms=int(world.config["omero.scripts.timeout"])
    )
    session.inputs = {k: wrap(v) for k, v in inputs.items()}
    directory = tempfile.mkdtemp(prefix="process-")
    try:
        shutil.copyfile(script, os.path.join(directory, "script"))
        config = os.path.join(directory, "config")
        with open(config, "w") as f:
            f.write(f"Ice.Default.Router=OMERO.Glacier2/router:ssl -p {server.port} -h 127.0.0.1\n")
            f.write(f"omero.user={session.uuid}\nomero.pass={session.uuid}\n")
            f.write(f"omero.host=127.0.0.1\nomero.port={server.port}\n")
            f.write(f"Ice.Default.InvocationTimeout={INVOCATION_TIMEOUT_MS}\n")
        env = {k: os.environ[k] for k in WHITELIST if k in os.environ}
        env["PATH"] = os.pathsep.join([*path, env.get("PATH", "")])
        env["PYTHONPATH"] = os.pathsep.join([*pythonpath, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env["ICE_CONFIG"] = config
        with open(os.path.join(directory, "out"), "w+") as out, open(os.path.join(directory, "err"), "w+") as err:
            proc = subprocess.Popen([sys.executable, "script"], cwd=directory, env=env, stdout=out, stderr=err)
            session.process = proc
            began = time.monotonic()
            while proc.poll() is None:
                if cancel_after is not None and time.monotonic() - began > cancel_after:
                    os.kill(proc.pid, signal.SIGTERM)  # the script's own pid, as ProcessI._term does
                    cancel_after = None
                if time.monotonic() - began > timeout:
                    proc.kill()
                if while_running is not None:
                    while_running(session)
                time.sleep(0.05)
            out.seek(0)
            err.seek(0)
            return ScriptRun(
                proc.returncode, {k: unwrap(v) for k, v in session.outputs.items()}, out.read(), err.read(), session
            )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
