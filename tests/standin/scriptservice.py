"""``IScript`` and the ``ScriptProcess`` it hands out: official scripts uploaded by an
administrator, run as the Processor runs them (``processor.run_script``: a session of the user
living ``omero.scripts.timeout``, an ``ICE_CONFIG`` naming it, the script's own Python), the
client told through its ``ProcessCallback`` when the script ends.

Where the server's Python would find the helper and the worker (install.sh puts them there),
the stand-in's Processor uses ``world.processor_path`` (prepended to ``PATH``) and
``world.processor_pythonpath`` (to ``PYTHONPATH``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
import uuid

import Ice
import omero
import omero.api
import omero.grid
from omero.rtypes import rint

from .processor import run_script
from .services import Refused, Servant, server_error, serves


@serves(omero.api.IScript)
class ScriptService(Servant, omero.api.IScript):
    def uploadOfficialScript(self, path, text, current=None):  # noqa: N802 - OMERO's API
        user = self.world.users[self.session.user]
        if not (user.admin and "WriteScriptRepo" in user.privileges):
            raise Refused(server_error(omero.SecurityViolation, "uploading official scripts needs WriteScriptRepo"))
        if path in self.world.scripts:
            raise Refused(server_error(omero.ApiUsageException, f"Path already exists: {path}; use 'replace'"))
        sid = next(self.world.ids)
        self.world.scripts[path] = (sid, text)
        return sid

    def getScriptID(self, path, current=None):  # noqa: N802
        found = self.world.scripts.get(path)
        return found[0] if found else -1

    def getScriptText(self, sid, current=None):  # noqa: N802
        return self._script(sid)[1]

    def _script(self, sid):
        for path, (known, text) in self.world.scripts.items():
            if known == sid:
                return path, text
        raise Refused(server_error(omero.ApiUsageException, f"No script with id {sid}"))

    def runScript(self, sid, inputs, wait_secs, current=None):  # noqa: N802
        path, text = self._script(sid)
        identity = Ice.Identity(str(uuid.uuid4()), self.session.uuid)
        process = ScriptProcess(self.server, self.world, self.session, identity, path, text, dict(inputs or {}))
        prx = self.session.add_stateful(self.server, process, identity)
        process.start()
        return omero.grid.ScriptProcessPrx.uncheckedCast(prx)


@serves(omero.grid.ScriptProcess)
class ScriptProcess(Servant, omero.grid.ScriptProcess):
    def __init__(self, server, world, session, identity, path, text, inputs) -> None:
        super().__init__(server, world, session)
        self.identity, self.path, self.text, self.inputs = identity, path, text, inputs
        self.run = None
        self.callbacks: list = []
        self.cancelled = False
        self.done = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        from omero.rtypes import unwrap

        fd, script = tempfile.mkstemp(suffix=".py")
        with os.fdopen(fd, "w") as f:
            f.write(self.text)

        def watch(session) -> None:
            if self.cancelled and getattr(session, "process", None) is not None:
                os.kill(session.process.pid, signal.SIGTERM)  # ProcessI._term: the script's own pid
                self.cancelled = False

        try:
            self.run = run_script(
                self.world,
                script,
                {k: unwrap(v) for k, v in self.inputs.items()},
                self.session.user,
                path=tuple(getattr(self.world, "processor_path", ())),
                pythonpath=tuple(getattr(self.world, "processor_pythonpath", ())),
                while_running=watch,
            )
        finally:
            os.unlink(script)
            self.done.set()
            for cb in list(self.callbacks):
                with contextlib.suppress(Exception):  # a client gone misses its callback
                    cb.begin_processFinished(self.run.returncode if self.run else -1)

    def poll(self, current=None):
        return rint(self.run.returncode) if self.done.is_set() and self.run else None

    def wait(self, current=None):
        self.done.wait()
        return self.run.returncode if self.run else -1

    def cancel(self, current=None):
        self.cancelled = True
        return True

    def kill(self, current=None):
        self.cancelled = True
        return True

    def shutdown(self, current=None):
        self.cancelled = True

    def registerCallback(self, cb, current=None):  # noqa: N802
        prx = omero.grid.ProcessCallbackPrx.uncheckedCast(current.con.createProxy(cb.ice_getIdentity()))
        self.callbacks.append(prx)
        if self.done.is_set():
            prx.begin_processFinished(self.run.returncode if self.run else -1)

    def unregisterCallback(self, cb, current=None):  # noqa: N802
        self.callbacks = [c for c in self.callbacks if c.ice_getIdentity() != cb.ice_getIdentity()]

    def getResults(self, wait_secs, current=None):  # noqa: N802
        self.done.wait(wait_secs if wait_secs > 0 else None)
        if not self.done.is_set():
            raise Refused(server_error(omero.ApiUsageException, "the script has not finished"))
        return dict(self.run.session.outputs)

    def setMessage(self, message, current=None):  # noqa: N802
        return None

    def close(self, detach, current=None):
        self.session.forget(self)
        self.server.remove(self.identity)
