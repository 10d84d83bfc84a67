"""Webhook notices, one POST per annotated image, sent from a background thread so that a
slow or broken receiver never delays or undoes an annotation (failures are only logged)."""

from __future__ import annotations

import json
import logging
import queue
import threading
import urllib.error
import urllib.request

log = logging.getLogger(__name__)


class Webhook:
    def __init__(self, url: str | None, timeout: float = 5.0) -> None:
        self.url = url
        self.timeout = timeout
        self.queue: queue.Queue = queue.Queue()
        self.sent = 0
        self.failed = 0
        self.thread: threading.Thread | None = None
        if url:
            self.thread = threading.Thread(target=self._run, name="omero-iscc-webhook", daemon=True)
            self.thread.start()

    def notify(self, notice: dict) -> None:
        if self.url:
            self.queue.put(notice)

    def _run(self) -> None:
        while True:
            notice = self.queue.get()
            try:
                post(self.url, notice, self.timeout)
                self.sent += 1
            except (OSError, urllib.error.URLError, ValueError) as exc:
                self.failed += 1
                log.warning("webhook %s failed for image %s: %s", self.url, notice.get("image_id"), exc)
            finally:
                self.queue.task_done()

    def drain(self, timeout: float) -> None:
        """Waits up to ``timeout`` seconds for queued notices to be sent."""
        if not self.url:
            return
        done = threading.Event()
        threading.Thread(target=lambda: (self.queue.join(), done.set()), daemon=True).start()
        if not done.wait(timeout):
            log.warning("webhook: %d notice(s) not sent before exit", self.queue.qsize())


def post(url: str, notice: dict, timeout: float) -> int:
    data = json.dumps(notice).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - admin-configured URL
        return resp.status
