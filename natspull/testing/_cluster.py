"""Several routed ``nats-server`` nodes with JetStream: :class:`NatsCluster`.

Owns the cluster's ports and ``cluster {}`` config blocks, starting all nodes before waiting for
any (a clustered JetStream node is healthy only once a quorum elected a meta leader), rebuilding
on fresh ports after a port clash, and waiting for the meta leader. Each node is a
:class:`NatsServer`; this module drives their internals (``_spawn``, ``_wait_ready``,
``_log_tail``, ``_send_terminate``) directly.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import TypeVar

from ._net import HOST, POLL_INTERVAL, PORT_ATTEMPTS, free_ports, port_taken
from ._server import NatsServer

__all__ = ["NatsCluster"]

# Return type of methods returning self, for subclasses (typing.Self needs Python 3.11).
_ClusterT = TypeVar("_ClusterT", bound="NatsCluster")


class NatsCluster:
    """``size`` routed ``nats-server`` nodes with JetStream on loopback, one cluster name.

    Every node is a :class:`NatsServer` (see :attr:`servers`) with its own client, monitoring and
    route port and its own store dir; every node's ``routes`` lists all route URLs. ``config`` is
    appended to every node's config file. ``binary`` is the ``nats-server`` every node runs, or a
    list with one per node (a cluster in the middle of a rolling upgrade); None: the default.

        with NatsCluster(3) as cluster:
            leader = cluster.wait_for_meta_leader()
            cluster.server_for_name(leader).kill()
            cluster.wait_for_meta_leader()  # a new leader among the two survivors
    """

    def __init__(
        self,
        size: int = 3,
        *,
        config: str | None = None,
        startup_timeout: float = 20.0,
        binary: str | Sequence[str] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size!r}")
        if binary is None or isinstance(binary, str):
            self._binaries: list[str | None] = [binary] * size
        else:
            self._binaries = list(binary)
            if len(self._binaries) != size:
                raise ValueError(f"binary must name one binary per node ({size}), got {len(self._binaries)}")
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
                taken = any(port_taken(s._log_tail()) for s in self.servers)
                self.stop()
                if not taken or attempts >= PORT_ATTEMPTS:
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
            time.sleep(POLL_INTERVAL)

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
        ports = free_ports(3 * self.size)
        clients, monitors, routes = ports[0::3], ports[1::3], ports[2::3]
        route_urls = ", ".join(f'"nats-route://{HOST}:{p}"' for p in routes)
        servers = []
        for i in range(self.size):
            block = (
                "cluster {\n"
                f"  name: {json.dumps(self.name)}\n"
                f'  listen: "{HOST}:{routes[i]}"\n'
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
                    binary=self._binaries[i],
                )
            )
        return servers
