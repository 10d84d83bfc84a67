"""The stand-in OMERO server on the wire: an Ice object adapter on 127.0.0.1 serving the
Glacier2 router, the sessions and their services over IceSSL (a self-signed certificate made
at start) and plain TCP (the insecure router omero-py switches to), so that ``omero.client(host,
port)``, ``BlitzGateway``, ``omero login -s 127.0.0.1 -p PORT`` and ``suConn`` work unmodified.

It runs in a thread of the test process (``ensure_server()``: one per process, worlds register
with it) or as a process of its own::

    python tests/standin/server.py [--port PORT] [--world FILE.pickle]

which prints the port and a login, and serves until interrupted.

Logging in: ``createSession(name, password)`` finds the world whose password is given (each
world has its own, ``world.password``; a user made with ``createExperimenterWithPassword`` has
the one given there) and the user by name; joining is ``createSession(uuid, uuid)``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time
import weakref

if __package__ in (None, ""):  # run as a script: make the package importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    __package__ = "standin"  # noqa: A001

import Glacier2
import Ice
import omero
import omero.clients  # noqa: F401 - the model's object factories
import omero.rtypes

from . import services
from .sessions import Session, default_group
from .world import USER_GROUP

#: How long a test client waits for an answer before giving up (ms): no call hangs a test.
INVOCATION_TIMEOUT_MS = 120000
_lock = threading.Lock()
_server = None


class Router(Glacier2.Router):
    """``OMERO.Glacier2/router``: sessions are created here; every request then goes to the
    adapter directly (the router's client and server proxies are the adapter's own)."""

    def __init__(self, server) -> None:
        self.server = server

    def _same_transport(self, current):
        prx = current.adapter.createProxy(Ice.stringToIdentity("OMERO.Glacier2/router"))
        transport = str(current.con.getEndpoint()).split()[0] if current.con is not None else "ssl"
        return prx.ice_endpoints([e for e in prx.ice_getEndpoints() if str(e).split()[0] == transport])

    def getClientProxy(self, current=None):  # noqa: N802 - Ice's API
        return self._same_transport(current)

    def getServerProxy(self, current=None):  # noqa: N802
        return self._same_transport(current)

    def addProxies(self, proxies, current=None):  # noqa: N802
        return []

    def addProxy(self, proxy, current=None):  # noqa: N802
        return None

    def getCategoryForClient(self, current=None):  # noqa: N802
        return "standin-client"

    def getSessionTimeout(self, current=None):  # noqa: N802
        return 600

    def getACMTimeout(self, current=None):  # noqa: N802
        return 0

    def createSession_async(self, cb, user, password, current=None):  # noqa: N802
        try:
            cb.ice_response(self.server.login(user, password, current))
        except (Glacier2.PermissionDeniedException, Glacier2.CannotCreateSessionException, Ice.Exception) as exc:
            cb.ice_exception(exc)

    def createSessionFromSecureConnection_async(self, cb, current=None):  # noqa: N802
        cb.ice_exception(Glacier2.PermissionDeniedException("not served by the stand-in"))

    def refreshSession_async(self, cb, current=None):  # noqa: N802
        cb.ice_response()

    def destroySession(self, current=None):  # noqa: N802
        found = self.server.session_of_connection(current.con)
        if found is None:
            raise Glacier2.SessionNotExistException()
        self.server.detach(found, current.con)


class Server:
    def __init__(self, port: int = 0) -> None:
        self.certs = _certificates()
        props = Ice.createProperties([])
        for key, value in {
            "Ice.Plugin.IceSSL": "IceSSL:createIceSSL",
            "IceSSL.DefaultDir": self.certs,
            "IceSSL.CertFile": "server.p12",
            "IceSSL.Password": "standin",
            "IceSSL.VerifyPeer": "0",
            "Ice.ThreadPool.Server.Size": "4",
            "Ice.ThreadPool.Server.SizeMax": "32",
            "Ice.ThreadPool.Client.SizeMax": "8",
            "Ice.MessageSizeMax": "250000",
            "Ice.ACM.Server.Timeout": "0",
            "Ice.ACM.Timeout": "0",
            "Ice.Warn.Connections": "0",
            "Ice.Default.InvocationTimeout": "30000",
        }.items():
            props.setProperty(key, value)
        init = Ice.InitializationData()
        init.properties = props
        self.communicator = Ice.initialize(init)
        omero.ObjectFactoryRegistrar.registerObjectFactory(self.communicator, None)
        for factory in omero.rtypes.ObjectFactories.values():
            factory.register(self.communicator)
        endpoints = f"ssl -h 127.0.0.1 -p {port}:tcp -h 127.0.0.1 -p 0"
        self.adapter = self.communicator.createObjectAdapterWithEndpoints("OMERO.standin", endpoints)
        self.adapter.add(Router(self), Ice.stringToIdentity("OMERO.Glacier2/router"))
        self.adapter.activate()
        ports = {str(e).split()[0]: int(str(e).split("-p ")[1].split()[0]) for e in self.adapter.getEndpoints()}
        self.port, self.tcp_port = ports["ssl"], ports["tcp"]
        self.worlds: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self.sessions: dict[str, tuple] = {}
        self.by_connection: dict = {}
        self.lock = threading.RLock()

    # -- worlds and sessions -----------------------------------------------------------------
    def register(self, world) -> None:
        self.worlds[world.password] = world

    def _world_for(self, user: str, password: str):
        world = self.worlds.get(password)
        if world is not None:
            return world, next((u for u in world.users.values() if u.name == user), None)
        for world in list(self.worlds.values()):
            for u in world.users.values():
                if u.name == user and u.__dict__.get("password") == password:
                    return world, u
        return None, None

    def login(self, user: str, password: str, current):
        with self.lock:
            found = self.sessions.get(user) if user == password else None
            if found is not None:
                world, session = found
                try:
                    session.check(world, _Current(None))
                except services.Refused as refused:
                    raise Glacier2.PermissionDeniedException(refused.exc.message) from None
            else:
                world, who = self._world_for(user, password)
                if world is None or who is None:
                    raise Glacier2.PermissionDeniedException("Password check failed")
                if who.disabled or USER_GROUP not in who.groups:
                    raise Glacier2.PermissionDeniedException(f"User {user} is not active")
                wanted = current.ctx.get("omero.group")
                group = default_group(world, who)
                if wanted:
                    from .sessions import group_by_name_or_id

                    named = group_by_name_or_id(world, wanted)
                    if named is None or named.id not in who.groups:
                        raise Glacier2.CannotCreateSessionException(f"not a member of group {wanted}")
                    group = named.id
                session = self.new_session(world, who.id, group, tti_ms=int(world.config["omero.sessions.timeout"]))
            self.attach(session, current.con)
            sf = self.session_servant(world, session)
            return Glacier2.SessionPrx.uncheckedCast(sf)

    def new_session(self, world, user: int, group: int, ttl_ms: int = 0, tti_ms: int = 0, kind: str = "User"):
        session = Session(user, group, ttl_ms, tti_ms, kind)
        session.started = session.last_access = world.now()
        session.id = next(world.ids)
        with self.lock:
            self.sessions[session.uuid] = (world, session)
        world.sessions[session.uuid] = session
        return session

    def session_servant(self, world, session):
        name = "__sf__"
        if name not in session.servants:
            identity = Ice.Identity(session.uuid, "")
            session.servants[name] = (identity, self.add(services.ServiceFactory(self, world, session), identity))
        return session.servants[name][1]

    def session(self, uuid: str):
        return self.sessions.get(uuid)

    def attach(self, session, con) -> None:
        if con is None:
            return
        key = connection_key(con)
        session.connections.add(key)
        self.by_connection.setdefault(key, []).append(session)
        try:
            con.setCallback(_Watch(self, key))
        except Ice.Exception:
            self._closed(key)

    def _closed(self, key: str) -> None:
        with self.lock:
            for session in self.by_connection.pop(key, []):
                session.connections.discard(key)

    def session_of_connection(self, con):
        found = self.by_connection.get(connection_key(con)) or []
        return found[-1] if found else None

    def detach(self, session, con) -> None:
        key = connection_key(con)
        with self.lock:
            session.connections.discard(key)
            if key in self.by_connection and session in self.by_connection[key]:
                self.by_connection[key].remove(session)

    def close_session(self, uuid: str) -> None:
        with self.lock:
            found = self.sessions.pop(uuid, None)
        if found is None:
            return
        world, session = found
        session.closed = True
        for identity, _prx in list(session.servants.values()):
            self.remove(identity)
        for servant in list(session.stateful):
            self.remove(servant.identity)
        world.sessions.pop(uuid, None)

    def forget_world(self, world) -> None:
        for uuid in list(world.sessions):
            self.close_session(uuid)
        self.worlds.pop(world.password, None)

    # -- the adapter -------------------------------------------------------------------------
    def add(self, servant, identity):
        return self.adapter.add(servant, identity)

    def remove(self, identity) -> None:
        with contextlib.suppress(Ice.NotRegisteredException):
            self.adapter.remove(identity)

    def client_config(self) -> str:
        """An Ice configuration file every test client reads (``ICE_CONFIG``): no call waits
        longer than ``INVOCATION_TIMEOUT_MS``."""
        path = os.path.join(self.certs, "client.cfg")
        with open(path, "w") as f:
            f.write(f"Ice.Default.InvocationTimeout={INVOCATION_TIMEOUT_MS}\n")
        return path

    def shutdown(self) -> None:
        self.communicator.destroy()


class _Watch(Ice.ConnectionCallback):
    """Unbinds a connection's sessions when it closes (Glacier2 ends its routing then)."""

    def __init__(self, server, key: str) -> None:
        self.server, self.key = server, key

    def heartbeat(self, con) -> None:
        pass

    def closed(self, con) -> None:
        self.server._closed(self.key)


def connection_key(con) -> str:
    """A connection's name while it is open (IcePy connections are not hashable)."""
    return con.toString()


class _Current:
    def __init__(self, con) -> None:
        self.con = con


def _certificates() -> str:
    """A self-signed certificate for IceSSL (an OMERO server's is often self-signed too)."""
    directory = tempfile.mkdtemp(prefix="omero-standin-")
    run = lambda *args: subprocess.run(args, cwd=directory, check=True, capture_output=True)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "cert.pem",
        "-days", "2", "-subj", "/CN=127.0.0.1")  # fmt: skip
    run("openssl", "pkcs12", "-export", "-in", "cert.pem", "-inkey", "key.pem", "-out", "server.p12",
        "-passout", "pass:standin")  # fmt: skip
    return directory


def ensure_server() -> Server:
    """The stand-in of this process (started on first use, in threads of this process)."""
    global _server
    with _lock:
        if _server is None:
            _server = Server()
            os.environ["ICE_CONFIG"] = _server.client_config()
            atexit.register(_at_exit, _server)
    return _server


def _at_exit(server: Server) -> None:
    """Closes the clients left open (sudo clones the helper made in a test, say) and then the
    server, so that no communicator outlives the process."""
    import gc

    for obj in gc.get_objects():
        if isinstance(obj, omero.clients.BaseClient):
            with contextlib.suppress(Exception):
                obj.closeSession()
    server.shutdown()


def connect(world, name: str, password: str | None = None):
    """A logged-in ``omero.client`` of ``name`` in ``world``, as omero-py makes one from a host
    and a port (SSL router)."""
    host, port, name, default = world.login(name)
    client = omero.client(host, port)
    client.createSession(name, password or default)
    world.clients.append(client)
    return client


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="the SSL port (default: any free one)")
    parser.add_argument("--world", help="a pickled world (FakeServer) to serve; default: an empty one")
    args = parser.parse_args(argv)
    from .world import FakeServer

    if args.world:
        import pickle

        with open(args.world, "rb") as f:
            world = pickle.load(f)
    else:
        world = FakeServer(root=None)
    server = Server(args.port)
    server.register(world)
    print(f"port={server.port} tcp_port={server.tcp_port} password={world.password}", flush=True)
    print(f"login: omero login -s 127.0.0.1 -p {server.port} -u root -w {world.password}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
