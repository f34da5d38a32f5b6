"""Soak: continuous consume() for NATSPULL_SOAK_SECONDS (default 600) with periodic faults.

Excluded from the default run (``-m "not soak"``); run it with::

    NATSPULL_SOAK_SECONDS=60 python -m pytest -m soak tests/faults/test_soak.py -s

Every few seconds it samples the process's RSS (``VmRSS``), its thread count (``Threads``) and
open file descriptors, prints them, and at the end asserts they stayed flat: the median of the
last quarter of the run is within a small margin of the median of the second quarter (the first
quarter is warm-up). Faults, in turn: a server restart, a burst of proxy resets, a short partition.
The delivery ledger must hold at the end, as in every fault test.
"""

from __future__ import annotations

import faulthandler
import os
import random
import statistics
import threading
import time

import pytest

import natspull
from natspull.testing import NatsServer

from ._chaos import ChaosProxy
from ._ledger import Ledger

SECONDS = float(os.environ.get("NATSPULL_SOAK_SECONDS", "600"))
SAMPLE_EVERY = 2.0
FAULT_EVERY = 10.0
RSS_MARGIN = 1.10  # last-quarter median at most 10 % ...
RSS_SLACK_KB = 8 * 1024  # ... plus 8 MB above the second-quarter median
FD_SLACK = 4  # sockets of a reconnect in progress


def _proc_status(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def sample() -> dict[str, int]:
    return {
        "rss_kb": _proc_status("VmRSS"),
        "threads": _proc_status("Threads"),
        "py_threads": threading.active_count(),
        "fds": len(os.listdir("/proc/self/fd")),
    }


class SteadyPublisher:
    """Publishes straight to the server at a steady rate until stopped, riding out restarts.

    A publish whose ack was lost may be stored twice: the ledger is over stream sequences, so a
    duplicate is simply one more message to consume.
    """

    def __init__(self, js: natspull.JetStream, subject: str, rate: float) -> None:
        self._js = js
        self._subject = subject
        self._batch = 50
        self._pause = self._batch / rate
        self._stop = threading.Event()
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="soak-publisher")
        self._thread.start()

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            try:
                self._js.publish_many(
                    ((self._subject, b"%010d" % (n + i)) for i in range(self._batch)), timeout=2
                )
                n += self._batch
            except natspull.Error:
                self.failures += 1  # the server is restarting: go on
            self._stop.wait(self._pause)  # the publishing rate, not synchronisation

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive()


def _fault(n: int, server: NatsServer, proxy: ChaosProxy) -> str:
    """The n-th fault of the schedule."""
    kind = ("restart", "resets", "partition")[n % 3]
    if kind == "restart":
        server.restart()
    elif kind == "resets":
        for _ in range(5):
            proxy.reset()
            time.sleep(random.uniform(0.2, 0.5))  # the burst's rhythm, not synchronisation
    else:
        proxy.blackhole()
        time.sleep(1.5)  # the partition's length (3 x the 0.5 s heartbeat), not synchronisation
        proxy.heal()
    return kind


def _flat(name: str, series: list[int], margin: float, slack: float) -> None:
    q = len(series) // 4
    second, last = statistics.median(series[q : 2 * q]), statistics.median(series[3 * q :])
    assert last <= second * margin + slack, f"{name} grew: second-quarter median {second}, last {last}"


# Reconnects into a partition or a reset time out after the TCP connect; nats-py drops that
# attempt's StreamWriter unclosed and its __del__ warns (ResourceWarning).
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.soak
@pytest.mark.timeout(SECONDS + 180)
def test_soak(
    nats_server: NatsServer, chaos_proxy: ChaosProxy, admin: natspull.Client, caplog: pytest.LogCaptureFixture
) -> None:
    # pytest's faulthandler_timeout would dump every stack at 110 s and end its watchdog thread,
    # changing the thread count mid-run; pytest-timeout still bounds this test.
    faulthandler.cancel_dump_traceback_later()
    # Every reconnect logs warnings; captured records would pile up in memory and skew the RSS.
    caplog.set_level("CRITICAL", logger="natspull")
    caplog.set_level("CRITICAL", logger="nats")
    js_admin = admin.jetstream(timeout=10)
    js_admin.add_stream(name="SOAK", subjects=["SOAK.>"], storage=natspull.StorageType.FILE)
    js_admin.add_consumer("SOAK", durable_name="c", ack_wait=3)
    ledger = Ledger(0)
    samples: list[dict[str, int]] = []
    faults: list[str] = []
    t0 = time.monotonic()
    with natspull.connect(
        chaos_proxy.url, reconnect_time_wait=0.05, max_reconnect_attempts=-1, connect_timeout=1
    ) as client:
        publisher = SteadyPublisher(js_admin, "SOAK.m", rate=1000)
        ctx = (
            client.jetstream()
            .consumer("SOAK", "c")
            .consume(ledger.handle, workers=4, expires=1, heartbeat=0.5)
        )
        try:
            end = t0 + SECONDS
            next_sample, next_fault = t0, t0 + FAULT_EVERY
            while (now := time.monotonic()) < end:
                if now >= next_sample:
                    s = sample()
                    samples.append(s)
                    print(
                        f"t={now - t0:6.1f}s rss={s['rss_kb'] / 1024:7.1f}MB threads={s['threads']} "
                        f"py_threads={s['py_threads']} fds={s['fds']} handed={ledger.deliveries} "
                        f"unique={ledger.unique} reconnects={ctx.stats().reconnects}",
                        flush=True,
                    )
                    next_sample += SAMPLE_EVERY
                if now >= next_fault:
                    faults.append(_fault(len(faults), nats_server, chaos_proxy))
                    next_fault += FAULT_EVERY
                # the sampling clock, not synchronisation
                time.sleep(max(min(next_sample, next_fault, end) - time.monotonic(), 0))
            publisher.stop()
            ledger.total = js_admin.stream_info("SOAK").state.last_seq
            ledger.settle(client, js_admin, "SOAK", "c", 60)
            stats = ctx.stats()
        finally:
            publisher.stop()
            ctx.drain()
            assert ctx.wait(timeout=10)
    elapsed = time.monotonic() - t0
    print(f"soak: {elapsed:.0f} s, faults {faults}, {ledger.summary()}, {stats}")
    ledger.check()
    assert len(samples) >= 8, "too short to judge: raise NATSPULL_SOAK_SECONDS"
    _flat("RSS (kB)", [s["rss_kb"] for s in samples], RSS_MARGIN, RSS_SLACK_KB)
    _flat("threads", [s["threads"] for s in samples], 1.0, 0)
    _flat("python threads", [s["py_threads"] for s in samples], 1.0, 0)
    _flat("open fds", [s["fds"] for s in samples], 1.0, FD_SLACK)
