"""``natspull worker`` / ``natspull.run_workers``: real worker processes on a real server.

The supervisor runs as ``python -m natspull worker`` (a real process receiving real signals);
its children import tests/integration/worker_targets.py, whose handlers append ``ack <pid> <seq>`` lines to
a ledger file. Linux only: the checks that no process is left read ``/proc``.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import appended_lines, fill, wait_until

import natspull
from natspull._workers import EXIT_CRASH_LOOP, EXIT_ERROR, EXIT_FORCED, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from natspull.testing import NatsServer

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="checks processes in /proc")

TESTS = str(Path(__file__).parent)
EXIT_TIMEOUT = 60.0


def alive(pid: int) -> bool:
    """Whether *pid* runs (a zombie no one reaped yet counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                found.add(int(entry.name))
    return found


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self) -> list[list[str]]:
        return [line.split() for line in appended_lines(self.path)]

    def acked(self) -> collections.Counter[int]:
        return collections.Counter(int(f[2]) for f in self.lines() if f[0] == "ack")

    def handled(self) -> set[int]:
        """Sequences whose ack was at least sent for: with a process killed, an ``ack`` line may
        be missing for a message the server has as acked (SIGKILL after the ack, before the line)."""
        return {int(f[2]) for f in self.lines() if f[0] == "acking"}

    def started(self) -> collections.Counter[int]:
        return collections.Counter(int(f[2]) for f in self.lines() if f[0] == "start")

    def worker_pids(self) -> set[int]:
        """Pids of the worker processes that imported the target (not the supervisor)."""
        return {int(f[1]) for f in self.lines() if f[0] == "load" and f[2] != "MainProcess"}

    def failed(self) -> dict[int, list[tuple[int, float]]]:
        """Stream sequence -> [(num_delivered, monotonic time)] of each failed handler call."""
        found: dict[int, list[tuple[int, float]]] = {}
        for f in self.lines():
            if f[0] == "fail":
                found.setdefault(int(f[2]), []).append((int(f[3]), float(f[4])))
        return found

    def ack_pids(self) -> set[int]:
        return {int(f[1]) for f in self.lines() if f[0] == "ack"}


def final_rows(out: str, processes: int) -> list[dict[str, int]]:
    """The status rows printed last (one line per process when the supervisor ends)."""
    rows = re.findall(
        r"worker (\d+) pid \d+ \w+: handled ([\d,]+) failed ([\d,]+) redelivered ([\d,]+) restarts (\d+)", out
    )
    assert len(rows) >= processes, out
    keys = ("worker", "handled", "failed", "redelivered", "restarts")
    return [{k: int(v.replace(",", "")) for k, v in zip(keys, row)} for row in rows[-processes:]]


class Worker:
    """``python -m natspull worker`` as a subprocess; stdout/stderr go to files."""

    def __init__(self, tmp: Path, url: str, target: str, stream: str, consumer: str, *extra: str) -> None:
        self.ledger = Ledger(tmp / "ledger")
        self.out, self.err = tmp / "stdout", tmp / "stderr"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]),
            "NATSPULL_TEST_LEDGER": str(self.ledger.path),
            "NATSPULL_TEST_RELEASE": str(tmp / "release"),
        }
        self.release_path = tmp / "release"
        argv = [sys.executable, "-m", "natspull", "worker", target, "--stream", stream]
        argv += ["--consumer", consumer, "--server", url, "--status", "lines", "--status-interval", "0.5"]
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen([*argv, *extra], stdout=out, stderr=err, env=env)

    def release(self) -> None:
        self.release_path.touch()

    def wait(self, timeout: float = EXIT_TIMEOUT) -> int:
        return self.proc.wait(timeout)

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """``start_worker(url, target, stream, consumer, *extra)``: a supervisor, closed (with every
    child it started) at the end of the test."""
    started: list[Worker] = []

    def start(url: str, target: str, stream: str, consumer: str, *extra: str) -> Worker:
        worker = Worker(tmp_path, url, target, stream, consumer, *extra)
        started.append(worker)
        return worker

    yield start
    pids = set()
    for worker in started:
        pids |= worker.ledger.worker_pids()
        worker.close()
    for pid in pids:  # never leave a child behind, even when a test failed
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def durable(js: natspull.JetStream, stream: str, **config: object) -> str:
    js.add_consumer(stream, durable_name="work", ack_policy=natspull.AckPolicy.EXPLICIT, **config)
    return "work"


def progress(worker: Worker, js: natspull.JetStream, stream: str, n: int) -> str:
    """What a test that timed out waiting for every message to be acked reports."""
    current = info(js, stream)
    tail = worker.stdout().splitlines()[-6:]
    return (
        f"every message handled: of {n}, {len(worker.ledger.handled())} handled and "
        f"{len(worker.ledger.acked())} acked; consumer: pending "
        f"{current.num_pending}, ack pending {current.num_ack_pending}, redelivered "
        f"{current.num_redelivered}, waiting {current.num_waiting}; stdout ends: {tail}; stderr: "
        f"{worker.stderr()[-2000:]}"
    )


def info(js: natspull.JetStream, stream: str) -> natspull.ConsumerInfo:
    return js.consumer(stream, "work").info()


def drained(js: natspull.JetStream, stream: str) -> bool:
    current = info(js, stream)
    return current.num_ack_pending == 0 and current.num_pending == 0


@pytest.mark.timeout(120)
def test_two_processes_handle_every_message_once(
    nats_server: NatsServer, js: natspull.JetStream, stream: str, start_worker: Callable[..., Worker]
) -> None:
    n = 20_000
    fill(js, stream, n)
    consumer = durable(js, stream)
    worker = start_worker(nats_server.url, "worker_targets:record", stream, consumer, "--processes", "2")
    wait_until(lambda: len(worker.ledger.acked()) == n, 90, "every message acked")
    wait_until(lambda: drained(js, stream), 10, "no ack pending")
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait() == EXIT_OK, worker.stderr()
    acked = worker.ledger.acked()
    assert sorted(acked) == list(range(1, n + 1))
    assert set(acked.values()) == {1}  # nothing acked twice
    pids = worker.ledger.worker_pids()
    assert len(pids) == 2 and worker.ledger.ack_pids() <= pids
    assert not any(alive(pid) for pid in pids)
    assert "draining" in worker.stdout()
    assert info(js, stream).num_redelivered == 0
    rows = final_rows(worker.stdout(), 2)
    assert [r["worker"] for r in rows] == [1, 2]
    assert sum(r["handled"] for r in rows) == n
    assert [(r["failed"], r["redelivered"], r["restarts"]) for r in rows] == [(0, 0, 0)] * 2


@pytest.mark.timeout(120)
def test_a_killed_child_is_restarted_and_nothing_is_lost(
    nats_server: NatsServer, js: natspull.JetStream, stream: str, start_worker: Callable[..., Worker]
) -> None:
    n = 4000
    fill(js, stream, n)
    consumer = durable(js, stream, ack_wait=2.0)  # what the killed child held comes back after 2 s
    # A buffer that drains well within ack_wait (50 messages, about 0.1 s): with the default 500
    # a loaded machine can take longer than 2 s to drain it, and the server redelivers messages
    # still buffered (more work, duplicates): the likely cause of the one run (of a full suite)
    # that went past the 60 s below.
    worker = start_worker(
        nats_server.url,
        "worker_targets:paced",
        stream,
        consumer,
        "--processes",
        "2",
        "--threads",
        "2",
        "--max-messages",
        "50",
    )
    wait_until(lambda: len(worker.ledger.ack_pids()) == 2, 60, "both children acking")
    victim = next(iter(worker.ledger.ack_pids()))
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(worker.ledger.worker_pids()) == 3, 30, "a new child")
    new = worker.ledger.worker_pids() - {victim}
    # Nothing unacked on the server and every sequence handled: at least once.
    wait_until(lambda: len(worker.ledger.handled()) == n, 60, lambda: progress(worker, js, stream, n))
    wait_until(lambda: drained(js, stream), 30, "nothing pending or unacked")
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait() == EXIT_OK, worker.stderr()
    assert sorted(worker.ledger.handled()) == list(range(1, n + 1))
    out = worker.stdout()
    assert f"pid {victim} died (signal 9); restarting in 0.5 s" in out, out
    rows = final_rows(out, 2)
    assert sorted(r["restarts"] for r in rows) == [0, 1]
    # What the killed child held came back after ack_wait: handled again with num_delivered 2.
    assert sum(r["redelivered"] for r in rows) >= 1
    assert all(pid in out for pid in map(str, new))
    assert not any(alive(pid) for pid in worker.ledger.worker_pids())


@pytest.mark.timeout(120)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_drains_running_handlers(
    signum: signal.Signals,
    nats_server: NatsServer,
    js: natspull.JetStream,
    stream: str,
    start_worker: Callable[..., Worker],
) -> None:
    n = 20
    fill(js, stream, n)
    consumer = durable(js, stream)
    worker = start_worker(
        nats_server.url,
        "worker_targets:slow",
        stream,
        consumer,
        "--processes",
        "2",
        "--threads",
        "2",
    )
    # Whichever child pulled first may hold all 20 messages (buffered): at least its two threads
    # are blocked in handlers.
    wait_until(lambda: len(worker.ledger.started()) >= 2, 60, "handlers running")
    wait_until(lambda: worker.stdout().count("consuming") == 2, 30, "both children consuming")
    pids = worker.ledger.worker_pids()
    everyone = children(worker.proc.pid)  # the workers and multiprocessing's resource tracker
    assert len(pids) == 2 and pids < everyone
    worker.proc.send_signal(signum)
    wait_until(lambda: "draining" in worker.stdout(), 10, "the supervisor to relay the drain")
    assert worker.proc.poll() is None and all(alive(pid) for pid in pids)  # waiting for the handlers
    worker.release()
    assert worker.wait() == EXIT_OK, worker.stderr()
    started, acked = worker.ledger.started(), worker.ledger.acked()
    assert len(started) >= 2 and set(started) == set(acked)  # every started handler acked
    assert set(acked.values()) == {1}
    current = info(js, stream)
    assert current.num_ack_pending == 0
    assert current.num_pending == n - len(acked)  # the rest was never delivered, or NAKed back
    assert not any(alive(pid) for pid in pids)
    wait_until(lambda: not any(alive(pid) for pid in everyone), 10, "the resource tracker to exit")


@pytest.mark.timeout(120)
def test_a_child_killed_during_the_drain_is_an_error(
    nats_server: NatsServer, js: natspull.JetStream, stream: str, start_worker: Callable[..., Worker]
) -> None:
    fill(js, stream, 20)
    consumer = durable(js, stream)
    worker = start_worker(nats_server.url, "worker_targets:slow", stream, consumer, "--threads", "2")
    wait_until(lambda: len(worker.ledger.started()) == 2, 60, "two handlers running")
    (pid,) = worker.ledger.worker_pids()
    worker.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "draining" in worker.stdout(), 10, "the drain")
    os.kill(pid, signal.SIGKILL)
    assert worker.wait() == EXIT_ERROR, worker.stderr()
    assert f"worker 1 pid {pid} ended with exit code -9" in worker.stdout()
    assert "restarting" not in worker.stdout()


@pytest.mark.timeout(120)
def test_second_signal_forces_the_stop(
    nats_server: NatsServer, js: natspull.JetStream, stream: str, start_worker: Callable[..., Worker]
) -> None:
    fill(js, stream, 20)
    consumer = durable(js, stream)
    worker = start_worker(
        nats_server.url, "worker_targets:slow", stream, consumer, "--threads", "2", "--grace", "3"
    )
    wait_until(lambda: len(worker.ledger.started()) == 2, 60, "two handlers running")
    pids = worker.ledger.worker_pids()
    worker.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "draining" in worker.stdout(), 10, "the drain")
    worker.proc.send_signal(signal.SIGINT)
    wait_until(lambda: "stopping now" in worker.stdout(), 10, "the stop")
    # The handlers never finish by themselves: the grace period ends them.
    assert worker.wait() == EXIT_FORCED, worker.stderr()
    assert "still running: killed" in worker.stdout()
    assert not any(alive(pid) for pid in pids)
    assert worker.ledger.acked() == collections.Counter()


@pytest.mark.timeout(60)
def test_children_exit_when_the_supervisor_is_killed(
    nats_server: NatsServer, js: natspull.JetStream, stream: str, start_worker: Callable[..., Worker]
) -> None:
    consumer = durable(js, stream)
    worker = start_worker(nats_server.url, "worker_targets:record", stream, consumer, "--processes", "2")
    wait_until(lambda: worker.stdout().count("consuming") == 2, 30, "two children consuming")
    pids = worker.ledger.worker_pids()
    everyone = children(worker.proc.pid)  # the workers and multiprocessing's resource tracker
    assert len(pids) == 2 and pids < everyone and len(everyone) == 3
    worker.proc.kill()
    worker.proc.wait(10)
    wait_until(lambda: not any(alive(pid) for pid in everyone), 10, "the orphaned children to exit")


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module_xyz:handle", "cannot import module 'no_such_module_xyz'"),
        ("worker_targets:missing", "module 'worker_targets' has no attribute 'missing'"),
        ("worker_targets:not_callable", "'worker_targets:not_callable' is not callable"),
        ("worker_targets", "target must look like 'module:function'"),
    ],
)
def test_bad_target_fails_at_once(
    target: str, message: str, stream: str, start_worker: Callable[..., Worker]
) -> None:
    worker = start_worker("nats://127.0.0.1:1", target, stream, "work")
    start = time.monotonic()
    assert worker.wait(20) == EXIT_USAGE
    assert time.monotonic() - start < 10
    assert message in worker.stderr(), worker.stderr()
    assert worker.ledger.worker_pids() == set()  # no child started


@pytest.mark.timeout(60)
def test_missing_consumer_fails_without_restarts(
    nats_server: NatsServer, stream: str, start_worker: Callable[..., Worker]
) -> None:
    worker = start_worker(nats_server.url, "worker_targets:record", stream, "nope", "--processes", "2")
    assert worker.wait() == EXIT_NOT_FOUND, worker.stderr()
    assert "could not start" in worker.stdout()
    assert "restarting" not in worker.stdout()


@pytest.mark.timeout(90)
def test_a_crash_loop_ends_the_run(
    nats_server: NatsServer, js: natspull.JetStream, stream: str, start_worker: Callable[..., Worker]
) -> None:
    fill(js, stream, 10)
    consumer = durable(js, stream, ack_wait=1.0)  # each new child gets the crashing messages again
    # Every message crashes its process: no message is poison, the handler is (--poison-after none
    # keeps the deaths counting toward the crash loop; tests/integration/test_fleet.py has the rest).
    worker = start_worker(nats_server.url, "worker_targets:crash", stream, consumer, "--poison-after", "none")
    assert worker.wait() == EXIT_CRASH_LOOP, worker.stderr()
    out = worker.stdout()
    assert [f"restarting in {d} s" in out for d in ("0.5", "1", "2", "4")] == [True] * 4
    assert "5 times in a row: giving up" in out
    assert len(worker.ledger.worker_pids()) == 5


# ------------------------------------------------------------------ the Python API, in this process


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"target": lambda msg: None}, TypeError, "a lambda, closure or instance cannot be imported"),
        ({"target": 42}, TypeError, "target must be a 'module:function' string or a callable, got int"),
        ({"target": "__main__:handle"}, TypeError, "defined in __main__"),
        ({"processes": 0}, ValueError, "processes"),
        ({"threads": 0}, ValueError, "threads"),
        ({"stream": ""}, TypeError, "stream must be a non-empty string"),
        ({"servers": []}, TypeError, "servers must be a URL string or a non-empty list of them, got []"),
        ({"grace": 0}, ValueError, "grace must be a number of seconds > 0, got 0"),
        ({"status": "fancy"}, ValueError, "status must be one of auto, live, lines, off, got 'fancy'"),
        ({"consume_options": {"workers": 2}}, ValueError, "consume_options: 'workers' is not allowed"),
        ({"http": "host"}, ValueError, "http must look like '[HOST:]PORT'"),
        ({"poison_after": 0}, ValueError, "poison_after"),
        ({"hard_timeout": 0}, ValueError, "hard_timeout must be a number of seconds > 0 or None, got 0"),
        ({"dead_letter": ""}, TypeError, "dead_letter must be a subject string or None"),
    ],
)
def test_run_workers_checks_its_arguments_at_once(
    kwargs: dict[str, object], error: type, message: str
) -> None:
    import worker_targets

    arguments: dict[str, object] = {"target": worker_targets.record, "stream": "S", "consumer": "C"}
    arguments.update(kwargs)
    with pytest.raises(error, match=re.escape(message)):
        natspull.run_workers(**arguments)  # type: ignore[arg-type]


@pytest.mark.timeout(120)
def test_run_workers_in_process_with_a_callable(
    nats_server: NatsServer,
    js: natspull.JetStream,
    stream: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """run_workers() itself, with a function object as the target and consume options; a SIGTERM
    to this process drains."""
    import worker_targets

    n = 300
    fill(js, stream, n)
    consumer = durable(js, stream)
    ledger = Ledger(tmp_path / "ledger")
    monkeypatch.setattr(worker_targets, "LEDGER", str(ledger.path))  # for the supervisor's own import
    monkeypatch.setenv("NATSPULL_TEST_LEDGER", str(ledger.path))  # for the children's
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))
    returned = threading.Event()

    def signal_when_done() -> None:
        try:
            wait_until(lambda: len(ledger.acked()) == n or returned.is_set(), 90, "every message acked")
            wait_until(lambda: drained(js, stream) or returned.is_set(), 10, "no ack pending")
        finally:
            if not returned.is_set():  # only run_workers() may receive it
                os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=signal_when_done)
    thread.start()
    try:
        code = natspull.run_workers(
            worker_targets.record,
            stream=stream,
            consumer=consumer,
            processes=2,
            threads=2,
            servers=nats_server.url,
            consume_options={"max_messages": 10},
            status="off",
        )
    finally:
        returned.set()
        thread.join(100)
    assert code == EXIT_OK
    assert sorted(ledger.acked()) == list(range(1, n + 1))
    assert len(ledger.worker_pids()) == 2
    assert not any(alive(pid) for pid in ledger.worker_pids())


@pytest.mark.timeout(60)
def test_consume_options_reach_every_consume_call(
    nats_server: NatsServer, js: natspull.JetStream, stream: str, tmp_path: Path
) -> None:
    """An option consume() refuses is refused in the child, at the first start: exit 2, no restart."""
    consumer = durable(js, stream)
    ledger = Ledger(tmp_path / "ledger")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}
    env["NATSPULL_TEST_LEDGER"] = str(ledger.path)
    script = (
        "import sys, natspull; sys.exit(natspull.run_workers('worker_targets:record', stream=sys.argv[1], "
        "consumer=sys.argv[2], servers=sys.argv[3], consume_options={'max_messages': 0}, status='lines'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, stream, consumer, nats_server.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert result.returncode == EXIT_USAGE, result.stderr
    assert "could not start: consume options: max_messages" in result.stdout, result.stdout
    assert "restarting" not in result.stdout
    assert len(ledger.worker_pids()) == 1


# ------------------------------------------------------------------ consume() options as flags


@pytest.mark.timeout(90)
def test_max_messages_flag_bounds_what_a_process_holds(
    nats_server: NatsServer, js: natspull.JetStream, stream: str, start_worker: Callable[..., Worker]
) -> None:
    """--max-messages 1 with 2 threads: one message requested, so one handler runs and the
    server holds the rest (the default, 500, would deliver all 5 at once)."""
    fill(js, stream, 5)
    consumer = durable(js, stream)
    worker = start_worker(
        nats_server.url, "worker_targets:slow", stream, consumer, "--threads", "2", "--max-messages", "1"
    )
    wait_until(lambda: len(worker.ledger.started()) == 1, 60, "a handler running")
    current = info(js, stream)
    assert (current.num_ack_pending, current.num_pending) == (1, 4)
    assert len(worker.ledger.started()) == 1
    worker.release()
    wait_until(lambda: drained(js, stream), 30, "every message acked")
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait() == EXIT_OK, worker.stderr()
    assert sorted(worker.ledger.acked()) == [1, 2, 3, 4, 5]


@pytest.mark.timeout(90)
def test_retry_and_term_after_flags(
    nats_server: NatsServer, js: natspull.JetStream, stream: str, start_worker: Callable[..., Worker]
) -> None:
    """--retry 2:2 --term-after 2 with a handler that always fails: each message is delivered
    twice, at least 1.6 s apart (2 s - 20 % jitter; the default retry waits about 1 s), then
    terminated."""
    fill(js, stream, 2)
    consumer = durable(js, stream, ack_wait=30)
    worker = start_worker(
        nats_server.url,
        "worker_targets:fail",
        stream,
        consumer,
        "--threads",
        "2",
        "--retry",
        "2:2",
        "--term-after",
        "2",
    )
    wait_until(lambda: sum(map(len, worker.ledger.failed().values())) == 4, 60, "4 failed deliveries")
    wait_until(lambda: info(js, stream).num_ack_pending == 0, 10, "both messages terminated")
    current = info(js, stream)
    assert (current.delivered.consumer_seq, current.num_pending) == (4, 0)  # nothing more to come
    failed = worker.ledger.failed()
    assert sorted(failed) == [1, 2]
    for calls in failed.values():
        assert [delivered for delivered, _ in calls] == [1, 2]
        assert calls[1][1] - calls[0][1] >= 1.6, calls
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait() == EXIT_OK, worker.stderr()
    (row,) = final_rows(worker.stdout(), 1)
    assert (row["handled"], row["failed"]) == (0, 4)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("lease", ["default", "0"])
def test_max_lease_flag(
    lease: str,
    nats_server: NatsServer,
    js: natspull.JetStream,
    stream: str,
    start_worker: Callable[..., Worker],
) -> None:
    """A handler running 3 x ack_wait: with leases (the default) the server never redelivers
    its message; --max-lease 0 turns them off and it is redelivered."""
    fill(js, stream, 1)
    consumer = durable(js, stream, ack_wait=1.0)
    extra = [] if lease == "default" else ["--max-lease", lease]
    worker = start_worker(nats_server.url, "worker_targets:slow", stream, consumer, "--threads", "1", *extra)
    wait_until(lambda: len(worker.ledger.started()) == 1, 60, "the handler running")
    if lease == "0":
        wait_until(lambda: info(js, stream).num_redelivered == 1, 10, "the redelivery")
    else:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:  # the +WPI every 0.5 s keeps it from coming back
            assert info(js, stream).num_redelivered == 0
            time.sleep(0.1)
    worker.release()
    wait_until(lambda: drained(js, stream), 30, "the message acked")
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait() == EXIT_OK, worker.stderr()


# ---------------------------------------------------------------- consume() flags


@pytest.mark.timeout(90)
def test_auto_ack_flag(
    nats_server: NatsServer, js: natspull.JetStream, stream: str, start_worker: Callable[..., Worker]
) -> None:
    """--auto-ack: a handler that never acks leaves nothing ack-pending."""
    n = 50
    fill(js, stream, n)
    consumer = durable(js, stream, ack_wait=30.0)
    worker = start_worker(nats_server.url, "worker_targets:noack", stream, consumer, "--auto-ack")
    wait_until(lambda: drained(js, stream), 60, lambda: progress(worker, js, stream, n))
    seen = collections.Counter(int(f[2]) for f in worker.ledger.lines() if f[0] == "seen")
    assert sorted(seen) == list(range(1, n + 1)) and set(seen.values()) == {1}
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait() == EXIT_OK, worker.stderr()


@pytest.mark.timeout(90)
def test_batch_flag(
    nats_server: NatsServer, js: natspull.JetStream, stream: str, start_worker: Callable[..., Worker]
) -> None:
    """--batch 10 (--batch-wait 0.2): the handler gets lists of 1 to 10 messages."""
    n = 200
    fill(js, stream, n)
    consumer = durable(js, stream)
    worker = start_worker(
        nats_server.url, "worker_targets:batch", stream, consumer, "--batch", "10", "--batch-wait", "0.2"
    )
    wait_until(lambda: drained(js, stream), 60, lambda: progress(worker, js, stream, n))
    sizes = [int(f[2]) for f in worker.ledger.lines() if f[0] == "batch"]
    assert sum(sizes) == n and all(1 <= size <= 10 for size in sizes), sizes
    assert max(sizes) > 1  # the messages were there: batches, not single calls
    assert sorted(worker.ledger.acked()) == list(range(1, n + 1))
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait() == EXIT_OK, worker.stderr()
    (row,) = final_rows(worker.stdout(), 1)
    assert (row["handled"], row["failed"]) == (n, 0)


@pytest.mark.timeout(90)
def test_key_flag_keeps_per_subject_order(
    nats_server: NatsServer, js: natspull.JetStream, stream: str, start_worker: Callable[..., Worker]
) -> None:
    """--key subject with 2 threads: each subject's messages are handled in stream order."""
    n = 300
    js.publish_many((f"{stream}.k{i % 5}", b"%d" % i) for i in range(n))
    consumer = durable(js, stream)
    worker = start_worker(
        nats_server.url, "worker_targets:keyed", stream, consumer, "--key", "subject", "--threads", "2"
    )
    wait_until(lambda: drained(js, stream), 60, lambda: progress(worker, js, stream, n))
    by_subject: dict[str, list[int]] = collections.defaultdict(list)
    for f in worker.ledger.lines():
        if f[0] == "keyed":
            by_subject[f[2]].append(int(f[3]))
    assert sorted(by_subject) == [f"{stream}.k{i}" for i in range(5)]
    for seqs in by_subject.values():
        assert seqs == sorted(seqs) and len(seqs) == n // 5
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait() == EXIT_OK, worker.stderr()


@pytest.mark.timeout(90)
def test_key_flag_header_and_bad_specs(
    nats_server: NatsServer, js: natspull.JetStream, stream: str, start_worker: Callable[..., Worker]
) -> None:
    """--key header:NAME keys by the header; a malformed spec is a usage error."""
    for i in range(20):
        js.publish(f"{stream}.m", b"%d" % i, headers={"Account": f"a{i % 2}"})
    consumer = durable(js, stream)
    bad = start_worker(nats_server.url, "worker_targets:keyed", stream, consumer, "--key", "header:")
    assert bad.wait() == EXIT_USAGE
    worker = start_worker(
        nats_server.url, "worker_targets:keyed", stream, consumer, "--key", "header:Account", "--threads", "2"
    )
    wait_until(lambda: drained(js, stream), 60, lambda: progress(worker, js, stream, 20))
    seqs = [int(f[3]) for f in worker.ledger.lines() if f[0] == "keyed"]
    assert sorted(seqs) == list(range(1, 21))
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait() == EXIT_OK, worker.stderr()


@pytest.mark.timeout(90)
def test_handler_timeout_flag(
    nats_server: NatsServer, js: natspull.JetStream, stream: str, start_worker: Callable[..., Worker]
) -> None:
    """--handler-timeout 1: a stuck handler's message is NAKed and handled again by another thread."""
    js.publish(f"{stream}.m", b"stuck")
    fill(js, stream, 5)
    consumer = durable(js, stream, ack_wait=30.0)
    worker = start_worker(
        nats_server.url, "worker_targets:stuck", stream, consumer, "--handler-timeout", "1",
        "--threads", "2", "--retry", "none",
    )  # fmt: skip
    wait_until(lambda: drained(js, stream), 30, lambda: progress(worker, js, stream, 6))
    assert sorted(worker.ledger.acked()) == list(range(1, 7))
    assert [f[2] for f in worker.ledger.lines() if f[0] == "stuck"] == ["1"]
