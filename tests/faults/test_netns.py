"""Five hosts in network namespaces: a 3-node nats-server cluster and ``natspull worker`` on two
more, one durable R3 consumer, 20,000 messages. During the run one worker host's runner is
SIGKILLed and restarted, the other's link is cut for 10 s and restored, and a server host is
killed and restarted. The ledger (each worker host appends the stream sequences it handled,
tests/faults/netns_target.py) and the consumer's state prove every message handled and acked,
none lost; redeliveries (at-least-once) are counted and printed.

The topology: a bridge in a namespace of its own (its own netfilter, whatever the root's rules),
one veth from it to each host namespace (``eth0`` there), and one to the root namespace, where
this test publishes and reads the consumer's state. A link cut is the bridge end of the host's
veth set down (the host keeps its address: a cable pulled, not an interface removed).

Needs root and ``ip`` (iproute2); skipped with the reason otherwise. Every namespace, veth and
process is removed in a finalizer, also when the test fails.
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import appended_lines, wait_until

import natspull
from natspull.testing import find_server_binary

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="network namespaces are Linux's")

TOTAL = 20_000
STREAM, CONSUMER = "NETNS", "netns"
SERVERS = ("s1", "s2", "s3")
WORKERS = ("w1", "w2")
HERE = str(Path(__file__).parent)


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


class Net:
    """The namespaces, the bridge and the veths; :meth:`close` removes them and every process in them."""

    def __init__(self) -> None:
        self.tag = f"np{os.getpid() % 100000}"
        self.bridge = f"{self.tag}-br"
        self.root_if = f"{self.tag}r"
        self.namespaces: list[str] = []
        routes = ip("route").stdout
        third = next(n for n in random.sample(range(1, 250), 249) if f"10.213.{n}." not in routes)
        self.prefix = f"10.213.{third}"
        self.hosts: dict[str, tuple[str, str, str]] = {}  # host -> (namespace, address, bridge port)

    def ns(self, host: str) -> str:
        return self.hosts[host][0]

    def addr(self, host: str) -> str:
        return self.hosts[host][1]

    def add_namespace(self, name: str) -> None:
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def build(self, hosts: list[str]) -> None:
        self.add_namespace(self.bridge)
        ip("-n", self.bridge, "link", "add", "br0", "type", "bridge")
        ip("-n", self.bridge, "link", "set", "br0", "up")
        for index, host in enumerate(hosts, 1):
            namespace, port, address = f"{self.tag}-{host}", f"p{index}", f"{self.prefix}.{index}"
            self.add_namespace(namespace)
            ip(
                "link",
                "add",
                "eth0",
                "netns",
                namespace,
                "type",
                "veth",
                "peer",
                "name",
                port,
                "netns",
                self.bridge,
            )
            ip("-n", self.bridge, "link", "set", port, "master", "br0", "up")
            ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
            ip("-n", namespace, "link", "set", "eth0", "up")
            self.hosts[host] = (namespace, address, port)
        ip("link", "add", self.root_if, "type", "veth", "peer", "name", "proot", "netns", self.bridge)
        ip("-n", self.bridge, "link", "set", "proot", "master", "br0", "up")
        ip("addr", "add", f"{self.prefix}.254/24", "dev", self.root_if)
        ip("link", "set", self.root_if, "up")

    def link(self, host: str, state: str) -> None:
        ip("-n", self.bridge, "link", "set", self.hosts[host][2], state)

    def close(self) -> None:
        for namespace in self.namespaces:
            pids = ip("netns", "pids", namespace, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        for namespace in reversed(self.namespaces):
            for _ in range(50):  # a process just killed may hold it a moment
                if ip("netns", "del", namespace, check=False).returncode == 0:
                    break
                time.sleep(0.1)
        ip("link", "del", self.root_if, check=False)


@pytest.fixture
def net() -> Iterator[Net]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("no `ip` (iproute2): apt-get install iproute2")
    net = Net()
    try:
        try:
            net.add_namespace(f"{net.tag}-probe")
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"cannot make a network namespace here (`ip netns add`: {exc.stderr.strip()})")
        ip("netns", "del", net.namespaces.pop())
        net.build([*SERVERS, *WORKERS])
        yield net
    finally:
        net.close()
    assert not [n for n in ip("netns", "list").stdout.split() if n.startswith(net.tag)]


class Hosts:
    """The processes started in the namespaces (servers and worker runners), by host."""

    def __init__(self, net: Net, tmp: Path) -> None:
        self.net, self.tmp = net, tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.binary = find_server_binary()
        self.urls = ",".join(f"nats://{net.addr(s)}:4222" for s in SERVERS)

    def _spawn(self, host: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        with open(self.tmp / f"{host}.log", "ab") as log:
            self.procs[host] = subprocess.Popen(
                ["ip", "netns", "exec", self.net.ns(host), *argv],  # ip execs argv: the pid is its
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.tmp,
            )

    def start_server(self, host: str) -> None:
        address = self.net.addr(host)
        routes = ", ".join(f'"nats-route://{self.net.addr(s)}:6222"' for s in SERVERS if s != host)
        config = self.tmp / f"{host}.conf"
        config.write_text(
            f'server_name: "{host}"\nlisten: "{address}:4222"\nhttp: "{address}:8222"\n'
            f'jetstream {{ store_dir: "{self.tmp / host}", max_memory_store: 64MB, max_file_store: 1GB }}\n'
            f'cluster {{ name: "netns", listen: "{address}:6222", routes: [{routes}] }}\n'
        )
        self._spawn(host, [self.binary, "-c", str(config)])

    def healthy(self, host: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.net.addr(host)}:8222/healthz", timeout=1) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    def start_worker(self, host: str) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")]),
            "NATSPULL_NETNS_LEDGER": str(self.ledger(host)),
            "NATSPULL_NETNS_DELAY": "0.005",
        }
        argv = [sys.executable, "-m", "natspull", "worker", "netns_target:handle", "--stream", STREAM]
        argv += ["--consumer", CONSUMER, "--server", self.urls, "--processes", "1", "--threads", "2"]
        argv += ["--status", "lines", "--status-interval", "2", "--grace", "10"]
        self._spawn(host, argv, env)

    def ledger(self, host: str) -> Path:
        return self.tmp / f"{host}.ledger"

    def kill(self, host: str) -> None:
        proc = self.procs[host]
        proc.kill()
        proc.wait(10)

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {p.name}: {p.read_text(errors='replace')[-1500:]}" for p in sorted(self.tmp.glob("*.log"))
        )

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def entries(hosts: Hosts) -> list[tuple[int, int, int]]:
    """Every ledger line of both worker hosts: (stream seq, num_delivered, pid)."""
    found = []
    for host in WORKERS:
        for line in appended_lines(hosts.ledger(host)):
            seq, delivered, pid = line.split()
            found.append((int(seq), int(delivered), int(pid)))
    return found


def handled(hosts: Hosts) -> int:
    return len({seq for seq, _, _ in entries(hosts)})


@pytest.mark.timeout(240)
def test_five_hosts_worker_killed_link_cut_server_killed(net: Net, tmp_path: Path) -> None:
    started = time.monotonic()
    phases: list[str] = []

    def phase(name: str) -> None:
        phases.append(f"{name} {time.monotonic() - started:.1f}")

    hosts = Hosts(net, tmp_path)
    client = None
    try:
        for server in SERVERS:
            hosts.start_server(server)
        wait_until(
            lambda: all(hosts.healthy(s) for s in SERVERS),
            60,
            lambda: f"a healthy cluster\n{hosts.log_tail()}",
        )
        client = natspull.connect(hosts.urls.split(","), reconnect_time_wait=0.2, max_reconnect_attempts=-1)
        js = client.jetstream(timeout=10)

        def create() -> bool:
            try:
                js.add_stream(
                    name=STREAM, subjects=["netns.>"], num_replicas=3, storage=natspull.StorageType.FILE
                )
            except natspull.JetStreamAPIError:  # no meta leader yet, or not enough peers yet
                return False
            return True

        wait_until(create, 30, "the R3 stream created")
        phase("cluster")
        js.publish_many((f"netns.{i % 10}", b"%08d" % i) for i in range(TOTAL))
        js.add_consumer(
            STREAM,
            durable_name=CONSUMER,
            ack_policy=natspull.AckPolicy.EXPLICIT,
            ack_wait=4.0,
            max_ack_pending=1000,
            num_replicas=3,
        )
        phase("published")
        for worker in WORKERS:
            hosts.start_worker(worker)
        progress = lambda: f"{handled(hosts)} of {TOTAL} handled\n{hosts.log_tail()}"  # noqa: E731
        # 1. w1's runner SIGKILLed mid-run (its processes stop on their own), then restarted
        wait_until(lambda: handled(hosts) >= 3000, 90, progress)
        phase("w1 killed")
        hosts.kill("w1")
        wait_until(
            lambda: not [p for p in ip("netns", "pids", net.ns("w1")).stdout.split()],
            30,
            "w1's processes gone",
        )
        hosts.start_worker("w1")
        # 2. w2's link cut for 10 s, then restored; w1 carries on meanwhile
        wait_until(lambda: handled(hosts) >= 6000, 90, progress)
        phase("w2 cut")
        net.link("w2", "down")
        before, cut_until = handled(hosts), time.monotonic() + 10
        wait_until(lambda: time.monotonic() >= cut_until, 15, "the end of the cut")
        net.link("w2", "up")
        assert handled(hosts) > before, "w1 handled nothing while w2 was cut off"
        # 3. a server host killed and restarted (same store: it catches up from the others)
        wait_until(lambda: handled(hosts) >= 12000, 90, progress)
        phase("s3 killed")
        hosts.kill("s3")
        hosts.start_server("s3")
        wait_until(lambda: hosts.healthy("s3"), 60, lambda: f"s3 healthy again\n{hosts.log_tail()}")
        # every message handled, and every ack on the server
        phase("s3 healthy")
        wait_until(lambda: handled(hosts) == TOTAL, 120, progress)
        phase("all handled")

        def settled() -> bool:
            info = js.consumer_info(STREAM, CONSUMER)
            return info.num_pending == 0 and info.num_ack_pending == 0

        wait_until(
            settled, 60, lambda: f"no message pending or unacked: {js.consumer_info(STREAM, CONSUMER)}"
        )
        phase("all acked")
        info = js.consumer_info(STREAM, CONSUMER)
        assert info.ack_floor.stream_seq == TOTAL
        for worker in WORKERS:
            hosts.procs[worker].send_signal(signal.SIGTERM)
        for worker in WORKERS:
            assert hosts.procs[worker].wait(30) == 0, hosts.log_tail()
    finally:
        if client is not None:
            client.close()
        hosts.close()
    ledger = entries(hosts)
    seqs = collections.Counter(seq for seq, _, _ in ledger)
    assert sorted(seqs) == list(range(1, TOTAL + 1)), "a message was lost"
    redelivered = sum(1 for _, delivered, _ in ledger if delivered > 1)
    twice = sum(count - 1 for count in seqs.values())
    per_host = {w: len({s for s, _, _ in entries_of(hosts, w)}) for w in WORKERS}
    print(
        f"netns: {TOTAL} messages, {len(ledger)} handler runs, {redelivered} redeliveries "
        f"(num_delivered > 1), {twice} sequences handled more than once; per host {per_host}; "
        f"{time.monotonic() - started:.1f} s ({', '.join(phases)})"
    )


def entries_of(hosts: Hosts, host: str) -> list[tuple[int, int, int]]:
    lines = appended_lines(hosts.ledger(host))
    return [(int(s), int(d), int(p)) for s, d, p in (line.split() for line in lines)]
