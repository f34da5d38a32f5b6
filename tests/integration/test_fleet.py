"""``natspull worker`` as a fleet: /livez, /readyz and /metrics over HTTP, poison messages,
stuck handlers. Real supervisors (``python -m natspull worker``), real worker processes, a real
server; the handlers are tests/integration/worker_targets.py's, their ledger says what happened.
"""

from __future__ import annotations

import collections
import re
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import fill, wait_until
from test_workers_runner import Worker, alive, durable, info
from test_workers_runner import start_worker as start_worker  # a fixture

import natspull
from natspull._workers import EXIT_OK
from natspull.testing import NatsServer

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="checks processes in /proc")

HTTP = ("--http", "127.0.0.1:0")


def base_url(worker: Worker) -> str:
    """The address the supervisor printed (it listens on a free port)."""
    found: list[str] = []

    def printed() -> bool:
        found[:] = re.findall(r"on (http://127\.0\.0\.1:\d+)", worker.stdout())
        return bool(found) or worker.proc.poll() is not None

    wait_until(printed, 30, "the supervisor to print its address")
    assert found, worker.stdout() + worker.stderr()
    return found[0]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metrics(url: str) -> dict[str, float]:
    """``name{le="..."}`` or ``name`` -> value, for the samples of /metrics (labels checked)."""
    code, text = get(url + "/metrics")
    assert code == 200, text
    found = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        match = re.fullmatch(r"(\w+)\{([^}]*)\} (\S+)", line)
        assert match, line
        name, labels, value = match.groups()
        assert 'stream="' in labels and 'consumer="work"' in labels, line
        le = re.search(r'le="([^"]+)"', labels)
        found[f'{name}{{le="{le.group(1)}"}}' if le else name] = float(value)
    return found


def lag_matches(url: str, js: natspull.JetStream, stream: str, pending: int, ack_pending: int) -> bool:
    current = info(js, stream)
    if (current.num_pending, current.num_ack_pending) != (pending, ack_pending):
        return False
    found = metrics(url)
    return (
        found.get("natspull_consumer_pending_messages") == pending
        and found.get("natspull_consumer_ack_pending_messages") == ack_pending
    )


def publish(js: natspull.JetStream, stream: str, payloads: list[bytes]) -> None:
    js.publish_many((f"{stream}.m", data) for data in payloads)


@pytest.mark.timeout(120)
def test_metrics_match_the_server_and_the_ledger(
    nats_server: NatsServer,
    js: natspull.JetStream,
    stream: str,
    start_worker: Callable[..., Worker],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    n, buffered = 50, 10
    fill(js, stream, n)
    consumer = durable(js, stream)
    monkeypatch.setenv("NATSPULL_TEST_HOLD", str(tmp_path / "go"))
    worker = start_worker(
        nats_server.url, "worker_targets:slow", stream, consumer, "--threads", "2",
        "--max-messages", str(buffered), *HTTP,
    )  # fmt: skip
    url = base_url(worker)
    # The process is held in its start-up: alive, not ready.
    assert get(url + "/livez")[0] == 200
    assert get(url + "/readyz") == (503, "not ready\n")
    wait_until(lambda: lag_matches(url, js, stream, n, 0), 20, "the lag before any delivery")
    (tmp_path / "go").touch()
    wait_until(lambda: get(url + "/readyz")[0] == 200, 30, "ready")
    # Two handlers blocked, ten messages delivered (buffered or in handlers), forty not yet.
    wait_until(lambda: len(worker.ledger.started()) == 2, 30, "two handlers running")
    wait_until(lambda: lag_matches(url, js, stream, n - buffered, buffered), 20, "the lag while held")
    # The lag is read by the supervisor's client thread, the rest published by its main loop at
    # its next tick (0.1 s): the two may be a tick apart.
    wait_until(lambda: metrics(url)["natspull_messages_in_flight"] == 2, 10, "two messages in flight")
    found = metrics(url)
    assert found["natspull_worker_processes"] == 1
    assert found["natspull_messages_handled_total"] == 0
    wait_until(lambda: "consumer: pending 40 ack pending 10" in worker.stdout(), 10, "the status line")
    worker.release()
    wait_until(lambda: len(worker.ledger.acked()) == n, 60, "every message acked")
    wait_until(lambda: lag_matches(url, js, stream, 0, 0), 20, "no lag")
    wait_until(lambda: metrics(url)["natspull_messages_handled_total"] == n, 10, "every handler counted")
    found = metrics(url)
    assert found["natspull_messages_failed_total"] == 0
    assert found["natspull_messages_terminated_total"] == 0
    assert found["natspull_poison_messages_total"] == 0
    assert found["natspull_worker_restarts_total"] == 0
    assert found["natspull_messages_in_flight"] == 0
    assert found['natspull_handler_duration_seconds_bucket{le="+Inf"}'] == n
    assert found["natspull_handler_duration_seconds_count"] == n
    assert found["natspull_handler_duration_seconds_sum"] > 0
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait() == EXIT_OK, worker.stderr()


@pytest.mark.timeout(120)
def test_readyz_turns_503_while_draining_and_metrics_need_the_extra(
    nats_server: NatsServer,
    js: natspull.JetStream,
    stream: str,
    start_worker: Callable[..., Worker],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fill(js, stream, 4)
    consumer = durable(js, stream)
    hidden = tmp_path / "no_prometheus"  # an importable prometheus_client that is not there
    (hidden / "prometheus_client").mkdir(parents=True)
    (hidden / "prometheus_client" / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    monkeypatch.setenv("PYTHONPATH", str(hidden))
    worker = start_worker(nats_server.url, "worker_targets:slow", stream, consumer, "--threads", "1", *HTTP)
    url = base_url(worker)
    wait_until(lambda: get(url + "/readyz")[0] == 200, 30, "ready")
    assert get(url + "/livez") == (200, "ok\n")
    code, text = get(url + "/metrics")
    assert code == 501 and "pip install 'natspull[metrics]'" in text, text
    assert get(url + "/nope")[0] == 404
    wait_until(lambda: len(worker.ledger.started()) == 1, 30, "a handler running")
    worker.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "draining" in worker.stdout(), 10, "the drain")
    assert get(url + "/readyz")[0] == 503  # published before the line is printed
    assert get(url + "/livez")[0] == 200  # draining is not dead
    worker.release()
    assert worker.wait() == EXIT_OK, worker.stderr()
    with pytest.raises(urllib.error.URLError):  # the server stopped with the supervisor
        urllib.request.urlopen(url + "/livez", timeout=5)


@pytest.mark.timeout(180)
def test_a_poison_message_is_terminated_and_the_fleet_runs_on(
    nats_server: NatsServer,
    js: natspull.JetStream,
    stream: str,
    start_worker: Callable[..., Worker],
) -> None:
    n, bad = 40, 17
    publish(js, stream, [b"poison" if i == bad else b"ok %d" % i for i in range(1, n + 1)])
    js.add_stream(name="DLQ", subjects=["dead.letters"])
    # ack_wait: what a killed process had buffered (not in a handler) comes back after 2 s.
    consumer = durable(js, stream, ack_wait=2.0)
    worker = start_worker(
        nats_server.url, "worker_targets:poison", stream, consumer, "--processes", "2", "--threads", "2",
        "--max-messages", "5", "--dead-letter", "dead.letters", *HTTP,
    )  # fmt: skip
    url = base_url(worker)
    others = set(range(1, n + 1)) - {bad}
    wait_until(
        lambda: worker.ledger.handled() == others, 90, lambda: f"the others handled: {worker.stdout()}"
    )
    wait_until(lambda: info(js, stream).ack_floor.stream_seq == n, 30, "the poison message terminated")
    current = info(js, stream)
    assert (current.num_pending, current.num_ack_pending) == (0, 0)
    deaths = [line for line in worker.ledger.lines() if line[0] == "poison"]
    assert [int(line[2]) for line in deaths] == [bad] * 3  # three deaths, then never delivered again
    assert worker.proc.poll() is None  # no crash loop: the fleet runs on
    out = worker.stdout()
    assert f"stream sequence {bad} terminated as a poison message" in out, out
    found = metrics(url)
    assert found["natspull_poison_messages_total"] == 1
    assert found["natspull_messages_terminated_total"] == 1
    assert found["natspull_worker_restarts_total"] == 3
    wait_until(lambda: metrics(url)["natspull_worker_processes"] == 2, 30, "both processes back")
    # The dead-letter subject got the message, with its origin in the headers.
    dlq = js.add_consumer("DLQ", durable_name="read", ack_policy=natspull.AckPolicy.EXPLICIT)
    (letter,) = dlq.fetch(1, max_wait=10)
    assert letter.data == b"poison"
    assert letter.headers is not None
    assert letter.headers["Natspull-Stream"] == stream
    assert letter.headers["Natspull-Sequence"] == str(bad)
    assert letter.headers["Natspull-Consumer"] == consumer
    assert letter.headers["Natspull-Subject"] == f"{stream}.m"
    assert "3 worker process deaths" in letter.headers["Natspull-Reason"]
    assert js.stream_info("DLQ").state.messages == 1
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait() == EXIT_OK, worker.stderr()
    assert worker.ledger.handled() == others and set(worker.ledger.acked()) <= others
    assert not any(alive(pid) for pid in worker.ledger.worker_pids())


@pytest.mark.timeout(120)
def test_a_stuck_handler_is_replaced_and_its_message_redelivered(
    nats_server: NatsServer,
    js: natspull.JetStream,
    stream: str,
    start_worker: Callable[..., Worker],
) -> None:
    n, bad, limit = 20, 5, 2.0
    publish(js, stream, [b"stuck" if i == bad else b"ok %d" % i for i in range(1, n + 1)])
    consumer = durable(js, stream)  # ack_wait 30 s (and the lease kept alive): only a NAK is fast
    worker = start_worker(
        nats_server.url, "worker_targets:stuck", stream, consumer, "--processes", "2", "--threads", "2",
        "--max-messages", "2", "--hard-timeout", str(limit), *HTTP,
    )  # fmt: skip
    url = base_url(worker)
    wait_until(lambda: any(line[0] == "stuck" for line in worker.ledger.lines()), 60, "the stuck handler")
    (stuck_pid,) = {int(line[1]) for line in worker.ledger.lines() if line[0] == "stuck"}
    wait_until(lambda: not alive(stuck_pid), limit + 10, "the stuck process killed")
    wait_until(
        lambda: bad in worker.ledger.acked(), 15, lambda: f"the stuck message redelivered: {worker.stdout()}"
    )
    ackers = {int(line[1]) for line in worker.ledger.lines() if line[0] == "ack" and int(line[2]) == bad}
    assert stuck_pid not in ackers
    wait_until(lambda: len(worker.ledger.handled()) == n, 60, "every message handled")
    out = worker.stdout()
    assert f"pid {stuck_pid}: a handler ran longer than 2 s (stream sequence {bad}): replacing" in out, out
    found = metrics(url)
    assert found["natspull_worker_restarts_total"] == 1
    assert found["natspull_poison_messages_total"] == 0
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait() == EXIT_OK, worker.stderr()
    assert worker.ledger.handled() == set(range(1, n + 1))
    # Acked twice only if the killed process had acked it (an ack still in its outbox is lost
    # with it, and the server redelivers): at least once, never more where nothing was killed.
    twice = {seq for seq, count in worker.ledger.acked().items() if count > 1}
    killed_acks = {int(f[2]) for f in worker.ledger.lines() if f[0] == "ack" and int(f[1]) == stuck_pid}
    assert twice <= killed_acks, (twice, killed_acks)


@pytest.mark.timeout(180)
def test_poison_deaths_do_not_count_toward_the_crash_loop(
    nats_server: NatsServer,
    js: natspull.JetStream,
    stream: str,
    start_worker: Callable[..., Worker],
) -> None:
    """Two poison messages kill the one process six times: without the deaths they explain
    forgotten once each is terminated, the fifth death in a row would end the run (exit 5)."""
    n, bad = 10, {3, 7}
    publish(js, stream, [b"poison" if i in bad else b"ok %d" % i for i in range(1, n + 1)])
    consumer = durable(js, stream, ack_wait=2.0)
    worker = start_worker(
        nats_server.url, "worker_targets:poison", stream, consumer, "--threads", "1", "--max-messages", "1",
        *HTTP,
    )  # fmt: skip
    url = base_url(worker)
    others = set(range(1, n + 1)) - bad
    wait_until(lambda: set(worker.ledger.acked()) == others, 120, lambda: f"the others: {worker.stdout()}")
    wait_until(lambda: info(js, stream).ack_floor.stream_seq == n, 30, "both poison messages terminated")
    deaths = collections.Counter(int(line[2]) for line in worker.ledger.lines() if line[0] == "poison")
    assert deaths == {3: 3, 7: 3}
    assert worker.proc.poll() is None, worker.stdout()
    assert "giving up" not in worker.stdout()
    assert get(url + "/livez")[0] == 200
    wait_until(lambda: get(url + "/readyz")[0] == 200, 30, "ready again")
    assert metrics(url)["natspull_poison_messages_total"] == 2
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait() == EXIT_OK, worker.stderr()


@pytest.mark.timeout(120)
def test_readyz_is_503_while_the_processes_are_disconnected(
    nats_server: NatsServer,
    js: natspull.JetStream,
    stream: str,
    start_worker: Callable[..., Worker],
) -> None:
    consumer = durable(js, stream)
    worker = start_worker(
        nats_server.url, "worker_targets:record", stream, consumer, "--processes", "2", *HTTP
    )
    url = base_url(worker)
    wait_until(lambda: get(url + "/readyz")[0] == 200, 30, "ready")
    wait_until(lambda: "natspull_consumer_pending_messages" in get(url + "/metrics")[1], 10, "the lag")
    nats_server.kill()  # every connection drops; the store stays
    wait_until(lambda: get(url + "/readyz")[0] == 503, 10, "not ready while disconnected")
    assert get(url + "/livez")[0] == 200
    # No fresh consumer info: the lag is absent, not stale.
    wait_until(lambda: "natspull_consumer_pending_messages" not in get(url + "/metrics")[1], 10, "no lag")
    nats_server.restart()
    wait_until(lambda: get(url + "/readyz")[0] == 200, 30, "ready again after the reconnect")
    fill(js, stream, 10)
    wait_until(lambda: len(worker.ledger.acked()) == 10, 30, "messages handled after the reconnect")
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait() == EXIT_OK, worker.stderr()
    assert "restarting" not in worker.stdout()  # disconnected is not dead
