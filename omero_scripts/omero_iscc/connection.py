"""Connecting the scheduler to OMERO, and telling a lost connection from an image's failure."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Callable

from .config import Config

#: Ice exceptions that mean the connection or session is gone (not that one image failed).
CONNECTION_ERRORS = {
    "ConnectionLostException",
    "ConnectionRefusedException",
    "ConnectFailedException",
    "ConnectTimeoutException",
    "CloseTimeoutException",
    "TimeoutException",
    "SocketException",
    "CommunicatorDestroyedException",
    "ObjectNotExistException",
    "ConnectionTimeoutException",
    "DNSException",
    "SessionTimeoutException",
    "RemovedSessionException",
}


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the connection or session was lost."""
    seen = 0
    while exc is not None and seen < 10:
        if any(cls.__name__ in CONNECTION_ERRORS for cls in type(exc).__mro__):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


#: What the server answers to a login it refuses (wrong password, disabled account).
LOGIN_REFUSED = {"PermissionDeniedException", "CannotCreateSessionException"}


def is_login_refused(exc: BaseException) -> bool:
    """Whether ``exc`` is the server refusing the login (the configuration is wrong; retrying
    will not help)."""
    return any(cls.__name__ in LOGIN_REFUSED for cls in type(exc).__mro__)


def omero_access(client):
    """The helper's OMERO access (``gateway.BlitzOmero``) over a client with a session: the
    scheduler's, a script's, the OMERO CLI's. The one place that builds it."""
    from omero.gateway import BlitzGateway

    from .gateway import BlitzOmero

    return BlitzOmero(BlitzGateway(client_obj=client))


def connect(cfg: Config):
    """Opens a session (password or session key) and returns ``(client, BlitzOmero)``."""
    cfg.require_credentials()
    import omero
    import omero.clients  # noqa: F401 - registers the object factories

    client = omero.client(cfg.host, cfg.port)
    try:
        if cfg.session_key:
            client.joinSession(cfg.session_key)
        else:
            client.createSession(cfg.username, cfg.password)
        client.enableKeepAlive(60)
        return client, omero_access(client)
    except BaseException:
        client.closeSession()
        raise


@contextlib.contextmanager
def session(cfg: Config, connect: Callable[[Config], tuple]) -> Iterator:
    """``with session(cfg, connect) as omero:`` the helper's OMERO access for one job, its
    session closed afterwards whatever happens (the one place that opens and closes one)."""
    client, omero = connect(cfg)
    try:
        yield omero
    finally:
        if client is not None:
            client.closeSession()
