"""``Delete2`` through ``ServiceFactory.submit``: a request that runs on the server for a while
and answers through its ``Handle``.

- One transaction (ome ``HandleI.run``: on any error "Request rolled back"): every target is
  checked first (it exists and the session may delete it: ome ``BasicACLVoter.allowDelete``,
  for restricted administrators ``DeleteOwned``); if one may not be deleted the answer is an
  ``ERR`` (``GraphException``) and nothing is deleted.
- It takes ``world.delete_seconds``; until then ``Handle.getResponse`` is null. When it ends the
  server calls ``CmdCallback.finished(response, status)`` on every callback added, over the
  client's own connection.
- ``Handle.close`` (or ``cancel``) before the end cancels the request: nothing is deleted and
  the status says ``CANCELLED`` (ome ``HandleI.close`` cancels an unfinished request). omero-py's
  ``deleteObjects(wait=True)`` waits 10 x 500 ms and then closes the handle: a slower delete is
  rolled back without an error.
- Deleting an annotation deletes the links to it and, for a file annotation, its file (Delete2's
  graph policy for annotations); deleting a link deletes only the link.
"""

from __future__ import annotations

import threading
import time

import omero
import omero.cmd

from . import model

#: Java class names in Delete2's response.
_JAVA = {
    "Annotation": "ome.model.annotations.{}",
    "ImageAnnotationLink": "ome.model.annotations.ImageAnnotationLink",
    "FilesetAnnotationLink": "ome.model.annotations.FilesetAnnotationLink",
    "OriginalFile": "ome.model.core.OriginalFile",
}


class DeleteJob:
    def __init__(self, world, session, targets: list, group: int) -> None:
        self.world, self.session, self.targets, self.group = world, session, targets, group
        self.response = None
        self.state: list = []
        self.callbacks: list = []
        self.lock = threading.Lock()
        self.started = time.time()
        self.stopped = 0.0
        self.timer = threading.Timer(max(0.0, world.delete_seconds), self.finish)
        self.timer.daemon = True

    def add_callback(self, prx) -> None:
        with self.lock:
            self.callbacks.append(prx)
            done = self.response is not None
        if done:
            self._notify([prx])

    def remove_callback(self, identity) -> None:
        with self.lock:
            self.callbacks = [c for c in self.callbacks if c.ice_getIdentity() != identity]

    def status(self, handle):
        return omero.cmd.Status(
            handle, "", "", list(self.state), {}, 1 if self.response else 0, 1, int(self.started * 1000),
            [], [], int(self.stopped * 1000),
        )  # fmt: skip

    def cancel(self) -> bool:
        with self.lock:
            if self.response is not None:
                return False
            self.timer.cancel()
            self.state = [omero.cmd.State.CANCELLED]
            self.response = omero.cmd.ERR("cancel", "Request cancelled (rolled back)", {})
            self.stopped = time.time()
        return True

    def finish(self) -> None:
        with self.world.lock, self.lock:
            if self.response is not None:
                return  # cancelled
            self.response = self._run()
            if isinstance(self.response, omero.cmd.ERR):
                self.state = [omero.cmd.State.FAILURE]
            self.stopped = time.time()
            callbacks = list(self.callbacks)
        self._notify(callbacks)

    def _notify(self, callbacks: list) -> None:
        for prx in callbacks:
            try:
                cb = omero.cmd.CmdCallbackPrx.uncheckedCast(prx)
                cb.begin_finished(self.response, self.status(None))
            except Exception:  # noqa: BLE001 - a client that went away misses its callback
                pass

    def _run(self):
        world, uid = self.world, self.session.user
        view = self.session.with_context(self.group)
        doomed = []
        for cls, ids in self.targets:
            for oid in ids:
                obj = world.get(cls, oid)
                if obj is None or not world.readable(view, obj):
                    continue  # nothing to delete (Delete2 skips what it cannot see)
                if not world.can_delete(uid, obj):
                    return omero.cmd.GraphException(
                        "graph-fail",
                        "Request rolled back",
                        {},
                        f"cannot delete {_java(obj)}[{obj.id}]: not permitted (Request rolled back)",
                    )
                doomed.append(obj)
        deleted: dict = {}
        for obj in list(doomed):
            for extra in _cascade(world, obj):
                if all(extra is not d for d in doomed):
                    doomed.append(extra)
        for obj in doomed:
            world.remove(obj.cls, obj.id)
            deleted.setdefault(_java(obj), []).append(obj.id)
        return omero.cmd.Delete2Response(deleted)


def _java(obj) -> str:
    root = model.root(obj.cls)
    if root == "Annotation":
        return f"ome.model.annotations.{obj.cls}"
    return _JAVA.get(obj.cls, f"ome.model.core.{obj.cls}")


def _cascade(world, obj) -> list:
    out = []
    if model.root(obj.cls) == "Annotation":
        for name, table in list(world.tables.items()):
            if name.endswith("AnnotationLink"):
                out += [link for link in table.values() if link.v.get("child") == obj.id]
        if obj.cls == "FileAnnotation" and obj.v.get("file") in world.files:
            out.append(world.files[obj.v["file"]])
    return out


def start(server, world, session, request, group: int) -> DeleteJob:
    from .services import Refused, server_error

    if not isinstance(request, omero.cmd.Delete2):
        raise Refused(server_error(omero.ApiUsageException, f"{type(request).__name__} is not served by the stand-in"))
    if getattr(request, "dryRun", False):
        raise Refused(server_error(omero.ApiUsageException, "a dry-run Delete2 is not served by the stand-in"))
    targets = []
    for cls, ids in (request.targetObjects or {}).items():
        if not model.is_class(cls):
            raise Refused(server_error(omero.ApiUsageException, f"unknown class {cls}"))
        targets.append((cls, list(ids)))
    job = DeleteJob(world, session, targets, group)
    world.delete_jobs.append(job)
    job.timer.start()
    return job
