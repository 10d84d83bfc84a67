"""Webhook notices, one POST per annotated image, sent from a background thread so that a
slow or broken receiver never delays or undoes an annotation (failures are only logged).

The URL is the administrator's, but what answers it is not trusted: a reply is never
followed elsewhere (a redirect is a failure: it could lead to another host, or from https to
http), every notice has one deadline for connecting, sending and reading the reply (a
receiver that drips bytes is cut off), at most ``MAX_REPLY`` bytes of the reply are read,
and any failure, whatever it is, is counted and logged without ending the sender. The URL
often carries a secret token, so logs name only its scheme and host.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import queue
import socket
import ssl
import threading
import urllib.parse

from .config import mask_url

log = logging.getLogger(__name__)

#: Bytes of a reply that are read (and ignored): enough for any acknowledgement.
MAX_REPLY = 64 * 1024


class WebhookError(Exception):
    """The receiver did not accept the notice."""


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
            except Exception as exc:  # noqa: BLE001 - a notice's failure must never end the sender
                self.failed += 1
                log.warning("webhook %s failed for image %s: %s", mask_url(self.url), notice.get("image_id"), exc)
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
    """POSTs ``notice`` as JSON; returns the 2xx status, or raises (``WebhookError`` for any
    other status, a redirect included; ``OSError`` and others for the connection). The whole
    exchange ends within ``timeout`` seconds: past it the socket is shut down under the
    reader."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError(f"{mask_url(url)} is not an http(s) URL")
    target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    if parts.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    data = json.dumps(notice).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "omero-iscc"}
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        secret = urllib.parse.unquote(parts.password or "")
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()

    expired = threading.Event()

    def cut_off() -> None:
        expired.set()
        sock = conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed: nothing left to cut
                sock.shutdown(socket.SHUT_RDWR)

    deadline = threading.Timer(timeout, cut_off)
    deadline.daemon = True
    deadline.start()
    try:
        try:
            conn.request("POST", target, body=data, headers=headers)
            resp = conn.getresponse()
            resp.read(MAX_REPLY)
        except Exception as exc:
            if expired.is_set():
                raise WebhookError(f"no complete reply within {timeout:g} s") from exc
            raise
        if expired.is_set():
            raise WebhookError(f"no complete reply within {timeout:g} s")
        if 300 <= resp.status < 400:
            raise WebhookError(f"HTTP {resp.status}: redirects are not followed")
        if not 200 <= resp.status < 300:
            raise WebhookError(f"HTTP {resp.status} {resp.reason}")
        return resp.status
    finally:
        deadline.cancel()
        conn.close()
