"""The ``natspull`` command line, run as a subprocess (``python -m natspull``) against real servers.

Every subprocess call has a timeout; the output of processes started with Popen is read
through :class:`LineReader` (a thread and a queue) or ``select()``, so no read can block a
test forever.
"""

from __future__ import annotations

import base64
import datetime
import itertools
import json
import os
import queue
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from conftest import wait_until

import natspull
from natspull.testing import NatsServer

_ids = itertools.count(1)
CLI = [sys.executable, "-m", "natspull"]
TIMEOUT = 60.0  # an upper bound for any single CLI run; they take a few seconds


def env(**extra: str) -> dict[str, str]:
    """The test environment without NATS_* variables and NATS contexts (so defaults are
    predictable), plus *extra*."""
    result = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    result["XDG_CONFIG_HOME"] = os.path.join(os.sep, "nonexistent", "natspull-test-config")
    result.update(extra)
    return result


def run(*args: str, stdin: bytes = b"", timeout: float = TIMEOUT, **extra_env: str) -> Result:
    proc = subprocess.run(
        [*CLI, *args], input=stdin, capture_output=True, timeout=timeout, env=env(**extra_env)
    )
    return Result(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"<Result code={self.code}\n--- stdout\n{self.out[-3000:]}\n--- stderr\n{self.err[-3000:]}>"


def assert_one_line_error(result: Result, code: int, *words: str) -> None:
    assert result.code == code, result
    assert "Traceback" not in result.err, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result
    for word in words:
        assert word in lines[0], result


class LineReader:
    """Reads a process's stdout on a helper thread, so the test can wait with a deadline.

    With ``bound``, at most that many lines wait unread: a process that writes more then
    blocks on the full pipe, as it would behind a slow reader.
    """

    def __init__(self, proc: subprocess.Popen[bytes], bound: int = 0) -> None:
        assert proc.stdout is not None
        self._stdout = proc.stdout
        self._lines: queue.Queue[str | None] = queue.Queue(bound)
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._read, name="test-cli-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for raw in self._stdout:
            self._lines.put(raw.decode())
        self._lines.put(None)

    def next(self, timeout: float = 10.0) -> str:
        """The next line; AssertionError on EOF or when none arrives in time."""
        line = self._get(timeout)
        if line is None:
            raise AssertionError(f"the process closed stdout; seen: {self.seen[-10:]}")
        return line

    def until(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.next(max(deadline - time.monotonic(), 0.01)))
            if match:
                return match

    def rest(self, timeout: float = 10.0) -> list[str]:
        """Every remaining line, up to EOF; joins the reader thread."""
        deadline = time.monotonic() + timeout
        lines = []
        while (line := self._get(max(deadline - time.monotonic(), 0.01))) is not None:
            lines.append(line)
        self._thread.join(max(deadline - time.monotonic(), 0.01))
        assert not self._thread.is_alive()
        return lines

    def _get(self, timeout: float) -> str | None:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output within {timeout:.1f} s; seen: {self.seen[-10:]}") from None
        if line is not None:
            self.seen.append(line)
        return line


@pytest.fixture
def popen() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes started by a test; any still running at the end are killed and reaped."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def start(
    procs: list[subprocess.Popen[bytes]], *args: str, bound: int = 0
) -> tuple[subprocess.Popen[bytes], LineReader]:
    proc = subprocess.Popen(
        [*CLI, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env()
    )
    procs.append(proc)
    return proc, LineReader(proc, bound)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def summary(out: str) -> dict[str, str]:
    """The ``summary`` block of a demo run: {"published": "2,000", ...}."""
    block = out.split("\nsummary\n", 1)[1]
    return dict(line.split(None, 1) for line in block.strip().splitlines())


class Setup(NamedTuple):
    js: natspull.JetStream
    stream: str  # stores "<stream>.>"
    consumer: str  # durable, explicit ack
    url: str


@pytest.fixture
def setup(nats_server: NatsServer) -> Iterator[Setup]:
    """A connected JetStream, a fresh stream and a durable explicit-ack pull consumer "c"."""
    with natspull.connect(nats_server.url) as client:
        js = client.jetstream()
        stream = f"CLI{next(_ids)}"
        js.add_stream(name=stream, subjects=[f"{stream}.>"])
        js.add_consumer(stream, durable_name="c", ack_policy=natspull.AckPolicy.EXPLICIT)
        yield Setup(js, stream, "c", nats_server.url)


def wait_for_info(js: natspull.JetStream, stream: str, **expected: int) -> natspull.ConsumerInfo:
    """Poll consumer info until its fields (ack_floor -> ack_floor.stream_seq) have the values."""

    def values(info: natspull.ConsumerInfo) -> dict[str, Any]:
        return {
            name: info.ack_floor.stream_seq if name == "ack_floor" and info.ack_floor else getattr(info, name)
            for name in expected
        }

    state: dict[str, natspull.ConsumerInfo] = {}

    def matches() -> bool:
        state["info"] = js.consumer_info(stream, "c")
        return values(state["info"]) == expected

    try:
        wait_until(matches, 5.0, f"consumer info {expected}")
    except AssertionError:
        raise AssertionError(f"consumer info: {values(state['info'])}, expected {expected}") from None
    return state["info"]


# ------------------------------------------------------------------- help


def test_help_documents_exit_codes() -> None:
    result = run("--help", timeout=20)
    assert result.code == 0, result
    for text in ("exit codes", "130", "not found", "cannot connect", "demo", "consume", "publish", "server"):
        assert text in result.out


def test_consume_help_documents_json_format() -> None:
    result = run("consume", "--help", timeout=20)
    assert result.code == 0, result
    assert "data_b64" in result.out and "stream_seq" in result.out


# ------------------------------------------------------------------- demo


@pytest.mark.parametrize("workers", [None, 4])
def test_demo_with_embedded_server(workers: int | None) -> None:
    result = run(
        "demo", "--messages", "2000", "--size", "64", *(["--workers", str(workers)] if workers else [])
    )
    assert result.code == 0, result
    assert "embedded nats-server" in result.out
    assert re.search(r"^consume\s+2,000/2,000 \(100%\)$", result.out, re.M), result
    assert re.search(r"^consume\s+2,000 msgs in [\d.]+ s: [\d,]+ msgs/s, [\d.,]+ MB/s$", result.out, re.M)
    assert re.search(r"^publish\s+2,000 msgs in [\d.]+ s: [\d,]+ msgs/s", result.out, re.M)
    numbers = summary(result.out)
    assert numbers["published"] == numbers["consumed"] == numbers["acked"] == "2,000", result
    assert numbers["redelivered"] == "0"
    assert re.fullmatch(r"[\d.]+ s", numbers["elapsed"])
    assert result.err == ""


def test_demo_with_server_removes_its_stream(nats_server: NatsServer) -> None:
    result = run("demo", "--messages", "300", "--server", nats_server.url)
    assert result.code == 0, result
    assert summary(result.out)["acked"] == "300"
    assert nats_server.jsz()["streams"] == 0


def test_demo_never_prints_credentials(nats_server: NatsServer) -> None:
    # No scheme: the URL is still read as nats://, and its password must not be printed.
    url = f"alice:s3cret@127.0.0.1:{nats_server.port}"
    result = run("demo", "--messages", "10", "--server", url)
    assert result.code == 0, result
    assert f"server   nats://***@127.0.0.1:{nats_server.port} (nats-server " in result.out, result
    assert "s3cret" not in result.out + result.err, result


def test_demo_sigint_drains_and_reports(popen: list[subprocess.Popen[bytes]]) -> None:
    proc, lines = start(popen, "demo", "--messages", "30000", "--size", "16")
    lines.until(r"^consume\s+[\d,]+/30,000", timeout=30)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 130
    lines.rest()
    out = "".join(lines.seen)
    handled = re.search(r"^interrupted: handled ([\d,]+) of 30,000 messages$", out, re.M)
    assert handled, out
    numbers = summary(out)
    assert numbers["consumed"] == numbers["acked"] == handled.group(1)
    assert numbers["published"] == "30,000"
    assert proc.stderr is not None and b"Traceback" not in proc.stderr.read()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_demo_signal_while_publishing_stops_between_chunks(
    popen: list[subprocess.Popen[bytes]], signum: signal.Signals
) -> None:
    # Signalled at the first tenth: the other nine (seconds of publishing) leave no doubt that
    # the signal lands while it publishes.
    proc, lines = start(popen, "demo", "--messages", "200000", "--size", "16")
    lines.until(r"^publish\s+20,000/200,000", timeout=60)
    proc.send_signal(signum)
    assert proc.wait(20) == 130
    lines.rest()
    out = "".join(lines.seen)
    assert re.search(r"^interrupted: handled 0 of 200,000 messages$", out, re.M), out
    numbers = summary(out)
    published = int(numbers["published"].replace(",", ""))
    assert 20_000 <= published < 200_000 and published % 1000 == 0, out  # whole chunks
    assert numbers["consumed"] == numbers["acked"] == "0", out
    assert proc.stderr is not None and b"Traceback" not in proc.stderr.read()


def test_python_m_natspull_exits_with_its_code_after_an_interrupt_inside_exec(tmp_path: Path) -> None:
    """A KeyboardInterrupt caught by main() after it passed through exec() of a string (a
    dataclass being created in a lazy import) must not turn `python -m natspull`'s exit into
    a death by SIGINT: CPython keeps a flag for it, which __main__ clears."""
    (tmp_path / "sitecustomize.py").write_text(
        "import natspull.cli._args as args\n"
        "def interrupted_in_exec(namespace):\n"
        "    exec('raise KeyboardInterrupt')\n"
        "args.cmd_demo = interrupted_in_exec\n"
    )
    result = run("demo", "--messages", "10", PYTHONPATH=str(tmp_path))
    assert result.code == 130, result
    assert result.err == "natspull: interrupted\n", result


def run_on_terminal(*args: str, **extra_env: str) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal; return (exit code, output)."""
    import pty

    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [*CLI, *args],
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
        env=env(COLUMNS="100", TERM="xterm", **extra_env),
    )
    os.close(terminal)
    output = b""
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # EIO: the process closed its end
                    break
                if not chunk:
                    break
                output += chunk
        return proc.wait(10), output.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(controller)


def test_demo_on_a_terminal_draws_a_rich_bar() -> None:
    pytest.importorskip("rich")
    code, text = run_on_terminal("demo", "--messages", "500")
    assert code == 0, text
    assert "━" in text  # rich's bar, not the plain lines
    assert "(100%)" not in text
    assert "acked        500" in text


def test_demo_on_a_terminal_without_rich_prints_plain_lines(tmp_path: Path) -> None:
    (tmp_path / "rich.py").write_text("raise ImportError('rich is not installed')\n")
    code, text = run_on_terminal("demo", "--messages", "500", PYTHONPATH=str(tmp_path))
    assert code == 0, text
    assert "━" not in text
    assert re.search(r"^consume\s+500/500 \(100%\)\r?$", text, re.M), text
    assert "acked        500" in text


def test_demo_size_above_max_payload(nats_server: NatsServer) -> None:
    result = run("demo", "--messages", "10", "--size", "2000000", "--server", nats_server.url)
    assert_one_line_error(result, 2, "max_payload")
    assert nats_server.jsz()["streams"] == 0


def test_demo_without_nats_server_binary() -> None:
    result = run("demo", "--messages", "10", NATSPULL_SERVER_BIN="/nonexistent/nats-server")
    assert_one_line_error(result, 1, "nats-server")


# ----------------------------------------------------------------- consume


def test_consume_json_matches_published(setup: Setup) -> None:
    js, stream, consumer, url = setup
    payloads = [f"message {i} ü".encode() for i in range(40)] + [b"\xff\xfe\x00binary"]
    js.publish_many((f"{stream}.m.{i}", data) for i, data in enumerate(payloads))
    js.publish(f"{stream}.h", b"with headers", headers={"Trace": "abc", "X-N": "1"})

    result = run("consume", stream, consumer, "--json", "--count", "42", "--server", url)
    assert result.code == 0, result
    records = [json.loads(line) for line in result.out.splitlines()]
    assert len(records) == 42
    for i, (record, data) in enumerate(zip(records, payloads)):
        assert record["subject"] == f"{stream}.m.{i}"
        assert record["stream_seq"] == record["consumer_seq"] == i + 1
        assert record["num_delivered"] == 1
        if "data" in record:
            assert record["data"].encode() == data
        else:
            assert base64.b64decode(record["data_b64"]) == data == payloads[-1]
    assert set(records[40]) == {
        "subject",
        "stream_seq",
        "consumer_seq",
        "num_delivered",
        "headers",
        "data_b64",
    }
    assert records[41]["headers"] == {"Trace": "abc", "X-N": "1"}
    assert records[41]["data"] == "with headers"
    wait_for_info(js, stream, num_ack_pending=0, num_pending=0, ack_floor=42)


def test_consume_human_format(setup: Setup) -> None:
    js, stream, consumer, url = setup
    js.publish(f"{stream}.a", b"hello world", headers={"K": "v"})
    js.publish(f"{stream}.b", b"caf\xe9")
    result = run("consume", stream, consumer, "--count", "2", "--server", url)
    assert result.code == 0, result
    first, second = result.out.splitlines()
    assert first == f'{stream}.a seq=1 headers={{"K": "v"}} data=hello world'
    assert second == f"{stream}.b seq=2 data=caf\N{REPLACEMENT CHARACTER}"


def test_consume_timeout_exits_when_idle(setup: Setup) -> None:
    js, stream, consumer, url = setup
    js.publish_many((f"{stream}.m", b"x") for _ in range(3))
    began = time.monotonic()
    result = run("consume", stream, consumer, "--timeout", "0.5", "--server", url)
    assert result.code == 0, result
    assert len(result.out.splitlines()) == 3
    assert time.monotonic() - began < 15
    wait_for_info(js, stream, num_ack_pending=0, num_pending=0, ack_floor=3)


def test_consume_no_ack_leaves_messages_pending(setup: Setup) -> None:
    js, stream, consumer, url = setup
    js.publish_many((f"{stream}.m", b"x") for _ in range(5))
    result = run("consume", stream, consumer, "--count", "3", "--no-ack", "--server", url)
    assert result.code == 0, result
    assert len(result.out.splitlines()) == 3
    wait_for_info(js, stream, num_ack_pending=3, num_pending=2)


def test_consume_uses_nats_url(setup: Setup) -> None:
    js, stream, consumer, url = setup
    js.publish(f"{stream}.m", b"x")
    result = run("consume", stream, consumer, "--count", "1", NATS_URL=url)
    assert result.code == 0, result
    assert "data=x" in result.out


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_consume_signal_while_waiting_drains_and_acks_everything_printed(
    setup: Setup, popen: list[subprocess.Popen[bytes]], signum: int
) -> None:
    js, stream, consumer, url = setup
    js.publish_many((f"{stream}.m", b"%d" % i) for i in range(20))
    proc, lines = start(popen, "consume", stream, consumer, "--json", "--server", url)
    printed = [json.loads(lines.next())["stream_seq"] for _ in range(20)]
    wait_for_info(js, stream, num_pending=0, num_ack_pending=0)  # it is now waiting for more
    proc.send_signal(signum)
    began = time.monotonic()
    assert proc.wait(5) == 0
    assert time.monotonic() - began < 2.0
    assert lines.rest() == []
    assert printed == list(range(1, 21))
    wait_for_info(js, stream, num_ack_pending=0, num_pending=0, ack_floor=20)
    assert proc.stderr is not None
    assert b"Traceback" not in proc.stderr.read()


def test_consume_sigint_mid_stream_acks_exactly_what_was_printed(
    setup: Setup, popen: list[subprocess.Popen[bytes]]
) -> None:
    js, stream, consumer, url = setup
    total = 5000
    js.publish_many((f"{stream}.m", b"%d" % i) for i in range(total))
    # A slow reader: the CLI blocks on the full pipe with messages buffered behind it.
    proc, lines = start(popen, "consume", stream, consumer, "--json", "--server", url, bound=1)
    for _ in range(5):
        lines.next()
    proc.send_signal(signal.SIGINT)
    lines.rest(TIMEOUT)
    assert proc.wait(10) == 0
    printed = [json.loads(line)["stream_seq"] for line in lines.seen]
    last = printed[-1]
    assert printed == list(range(1, last + 1))  # in order, each once
    assert last < total  # it stopped pulling: a drain, not a read to the end
    assert proc.stderr is not None
    stderr = proc.stderr.read().decode(errors="replace")
    try:
        info = wait_for_info(js, stream, ack_floor=last)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the CLI's stderr: {stderr!r}") from None
    # Stragglers: messages nats-server routed to the pull while the drain unsubscribed its inbox
    # never reach the CLI; the server redelivers them after ack_wait (docs/reliability.md, seen
    # once in ~9 full runs under load: 57 of the first 500). They sit right above the ack floor,
    # within one pull (max_messages 500), and nothing else is outstanding.
    assert info.delivered.stream_seq - info.num_ack_pending == last, (info, stderr)
    assert info.num_ack_pending <= 500, (info, stderr)
    assert info.num_pending == total - info.delivered.stream_seq, (info, stderr)


def test_consume_into_a_closed_pipe_exits_quietly(setup: Setup, popen: list[subprocess.Popen[bytes]]) -> None:
    js, stream, consumer, url = setup
    js.publish_many((f"{stream}.m", b"x" * 100) for _ in range(3000))
    proc = subprocess.Popen(
        [*CLI, "consume", stream, consumer, "--server", url],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env(),
    )
    popen.append(proc)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 10)
    assert ready and os.read(proc.stdout.fileno(), 100).startswith(f"{stream}.m seq=1 ".encode())
    proc.stdout.close()  # the reader goes away, like `natspull consume ... | head -n 1`
    assert proc.wait(15) == 0
    assert proc.stderr is not None and proc.stderr.read() == b""
    info = js.consumer_info(stream, consumer)
    assert info.ack_floor is not None and 1 <= info.ack_floor.stream_seq < 3000


# -------------------------------------------------------- consume --ordered


def ordered_record(stream_seq: int, consumer_seq: int, subject: str, data: str) -> str:
    """The exact ``--json`` line of a message read by ``consume --ordered``."""
    record = {
        "subject": subject,
        "stream_seq": stream_seq,
        "consumer_seq": consumer_seq,
        "num_delivered": 1,
        "headers": {},
        "data": data,
    }
    return json.dumps(record)


def consumers_left(js: natspull.JetStream, stream: str) -> list[str]:
    return sorted(js.consumer_names(stream))


def publish_rounds(js: natspull.JetStream, stream: str, first: int, count: int) -> None:
    """Messages first..first+count-1 on subjects a, b, c in turn; the payload is the number."""
    js.publish_many((f"{stream}.{'abc'[i % 3]}", b"%d" % i) for i in range(first, first + count))


def test_consume_ordered_since_seq_filtered_dump(setup: Setup) -> None:
    js, stream, _, url = setup
    publish_rounds(js, stream, 0, 30)  # stream sequence n + 1 holds payload n
    result = run(
        "consume", stream, "--ordered", "--subject", f"{stream}.a", "--subject", f"{stream}.c",
        "--since", "8", "--json", "--timeout", "1", "--server", url,
    )  # fmt: skip
    assert result.code == 0, result
    wanted = [n for n in range(7, 30) if n % 3 != 1]  # sequences 8..30 on a or c
    assert result.out.splitlines() == [
        ordered_record(n + 1, i + 1, f"{stream}.{'abc'[n % 3]}", str(n)) for i, n in enumerate(wanted)
    ], result
    assert consumers_left(js, stream) == ["c"]  # the durable one; the ordered one is gone


@pytest.mark.parametrize("offset", ["Z", "+05:30"])
def test_consume_ordered_since_time_starts_right_after(setup: Setup, offset: str) -> None:
    js, stream, _, url = setup
    publish_rounds(js, stream, 0, 10)
    # The server's clock is this machine's: the first 10 were stored before this, the rest after.
    noted = datetime.datetime.now(datetime.timezone.utc)
    publish_rounds(js, stream, 10, 12)
    if offset == "Z":
        since = noted.strftime("%Y-%m-%dT%H:%M:%S.%f999Z")  # nanoseconds: truncated to microseconds
    else:
        zone = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
        since = noted.astimezone(zone).isoformat()
        assert since.endswith("+05:30")
    result = run(
        "consume", stream, "--ordered", "--subject", f"{stream}.b", "--since", since,
        "--json", "--timeout", "1", "--server", url,
    )  # fmt: skip
    assert result.code == 0, result
    wanted = [n for n in range(10, 22) if n % 3 == 1]  # published after the noted time, on b
    assert result.out.splitlines() == [
        ordered_record(n + 1, i + 1, f"{stream}.b", str(n)) for i, n in enumerate(wanted)
    ], result
    assert consumers_left(js, stream) == ["c"]


def test_consume_ordered_count(setup: Setup) -> None:
    js, stream, _, url = setup
    publish_rounds(js, stream, 0, 20)
    result = run("consume", stream, "--ordered", "--count", "4", "--server", url)
    assert result.code == 0, result
    assert result.out.splitlines() == [f"{stream}.{'abc'[n % 3]} seq={n + 1} data={n}" for n in range(4)]
    assert consumers_left(js, stream) == ["c"]


def test_consume_ordered_timeout_on_an_idle_stream(setup: Setup) -> None:
    js, stream, _, url = setup
    began = time.monotonic()
    result = run("consume", stream, "--ordered", "--timeout", "0.5", "--json", "--server", url)
    assert result.code == 0, result
    assert result.out == "" and result.err == "", result  # no message: no progress either
    assert time.monotonic() - began < 15
    assert consumers_left(js, stream) == ["c"]


def test_consume_ordered_progress_on_stderr_when_stdout_is_a_file(setup: Setup, tmp_path: Path) -> None:
    js, stream, _, url = setup
    js.publish_many((f"{stream}.m", b"%d" % i) for i in range(1000))
    dump = tmp_path / "dump"
    with dump.open("wb") as out:
        proc = subprocess.run(
            [*CLI, "consume", stream, "--ordered", "--json", "--timeout", "1", "--server", url],
            stdout=out, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=TIMEOUT, env=env(),
        )  # fmt: skip
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    records = [json.loads(line) for line in dump.read_text().splitlines()]
    assert [r["stream_seq"] for r in records] == list(range(1, 1001))
    assert [r["data"] for r in records] == [str(i) for i in range(1000)]
    lines = err.splitlines()
    assert lines[-1] == "consume       1,000/1,000 (100%)", err
    assert all(re.fullmatch(r"consume\s+[\d,]+/1,000 \(\d+%\)", line) for line in lines), err
    assert len(lines) >= 2, err  # a line per tenth, not only the last one


def test_consume_ordered_no_progress_when_stdout_is_a_terminal(setup: Setup) -> None:
    import pty

    js, stream, _, url = setup
    js.publish_many((f"{stream}.m", b"x") for _ in range(50))
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.run(
            [*CLI, "consume", stream, "--ordered", "--timeout", "1", "--server", url],
            stdout=terminal, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=TIMEOUT, env=env(),
        )  # fmt: skip
        shown = b""
        while select.select([controller], [], [], 0)[0]:
            shown += os.read(controller, 65536)
    finally:
        os.close(terminal)
        os.close(controller)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b""
    assert shown.decode().splitlines()[-1] == f"{stream}.m seq=50 data=x"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP])
def test_consume_ordered_signal_drains_and_deletes_the_consumer(
    setup: Setup, popen: list[subprocess.Popen[bytes]], signum: int
) -> None:
    js, stream, _, url = setup
    publish_rounds(js, stream, 0, 20)
    proc, lines = start(popen, "consume", stream, "--ordered", "--json", "--server", url)
    printed = [json.loads(lines.next())["stream_seq"] for _ in range(20)]
    assert printed == list(range(1, 21))
    assert len(consumers_left(js, stream)) == 2  # "c" and the ordered one, following the stream
    proc.send_signal(signum)
    assert proc.wait(5) == 0
    assert lines.rest() == []
    assert consumers_left(js, stream) == ["c"]
    assert proc.stderr is not None
    assert (
        proc.stderr.read().decode().splitlines()[-1] == "natspull: interrupted: drained after 20 message(s)"
    )


def test_consume_ordered_missing_stream(setup: Setup) -> None:
    result = run("consume", "NOPE", "--ordered", "--server", setup.url)
    assert_one_line_error(result, 3, "stream 'NOPE' not found")


@pytest.mark.parametrize(
    "value", ["0", "-3", "1.5", "yesterday", "2026-12-01", "2026-12-01T00:00:00", "2026-02-30T00:00:00Z"]
)
def test_consume_ordered_bad_since(value: str) -> None:
    result = run("consume", "S", "--ordered", "--since", value, timeout=20)
    assert result.code == 2, result
    assert "usage:" in result.err and "Traceback" not in result.err
    assert "argument --since: expected a stream sequence (an integer >= 1) or an RFC 3339 time" in result.err
    assert f"got {value!r}" in result.err, result


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["S"], "give a CONSUMER (a durable pull consumer's name), or --ordered to read the stream"),
        (["S", "C", "--ordered"], "give either CONSUMER ('C') or --ordered, not both"),
        (["S", "C", "--subject", "x"], "--subject needs --ordered"),
        (["S", "C", "--since", "3"], "--since needs --ordered"),
    ],
)
def test_consume_consumer_or_ordered(args: list[str], error: str) -> None:
    result = run("consume", *args, timeout=20)
    assert result.code == 2, result
    assert "usage: natspull consume" in result.err and "Traceback" not in result.err
    assert result.err.splitlines()[-1].startswith(f"natspull consume: error: {error}"), result


# ------------------------------------------------------------------ errors


def test_unreachable_server() -> None:
    result = run("consume", "S", "C", "--server", f"nats://127.0.0.1:{free_port()}")
    assert_one_line_error(result, 4, "could not connect")


def test_missing_stream(setup: Setup) -> None:
    url = setup.url
    result = run("consume", "NOPE", "c", "--server", url)
    assert_one_line_error(result, 3, "stream 'NOPE' not found")


def test_missing_consumer(setup: Setup) -> None:
    _, stream, _, url = setup
    result = run("consume", stream, "nope", "--server", url)
    assert_one_line_error(result, 3, "consumer 'nope' not found")


def test_publish_without_a_stream(setup: Setup) -> None:
    url = setup.url
    result = run("publish", "no.stream.here", "x", "--server", url)
    assert_one_line_error(result, 3, "no stream stores subject")


@pytest.mark.parametrize(
    "args",
    [
        ["consume"],
        ["consume", "S"],
        ["demo", "--messages", "0"],
        ["demo", "--workers", "many"],
        ["consume", "S", "C", "--timeout", "-1"],
        ["consume", "S", "C", "--count", "0"],
        ["consume", "S", "C", "--server", "nats://127.0.0.1:notaport"],
        ["publish"],
        ["server", "--port", "70000"],
        ["frobnicate"],
        [],
    ],
)
def test_bad_arguments(args: list[str]) -> None:
    result = run(*args, timeout=20)
    assert result.code == 2, result
    assert "Traceback" not in result.err
    assert "usage:" in result.err


def test_invalid_stream_name_is_a_usage_error(nats_server: NatsServer) -> None:
    result = run("consume", "a.b", "c", "--server", nats_server.url)
    assert_one_line_error(result, 2, "stream")


# ----------------------------------------------------------------- publish


def test_publish_reads_stdin(setup: Setup) -> None:
    js, stream, _, url = setup
    data = b"\x00\xffraw bytes\nfrom stdin"
    result = run("publish", f"{stream}.in", "-", "--server", url, stdin=data)
    assert result.code == 0, result
    assert result.out.strip() == f"published 1 message to stream {stream}, last seq 1"
    result = run("publish", f"{stream}.in", "-", "--count", "4", "--server", url, stdin=b"again")
    assert result.code == 0, result
    assert result.out.strip() == f"published 4 messages to stream {stream}, last seq 5"
    info = js.stream_info(stream)
    assert info.state.messages == 5
    consumer = js.add_consumer(stream, durable_name="check", ack_policy=natspull.AckPolicy.EXPLICIT)
    msgs = consumer.fetch(5, max_wait=5)
    assert [m.data for m in msgs] == [data] + [b"again"] * 4


def test_publish_argument_data(setup: Setup) -> None:
    js, stream, consumer, url = setup
    result = run("publish", f"{stream}.arg", "héllo", "--server", url)
    assert result.code == 0, result
    msgs = js.consumer(stream, consumer).fetch(1, max_wait=5)
    assert msgs[0].data == "héllo".encode()


# ------------------------------------------------------------------ server


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_server_runs_until_signalled(popen: list[subprocess.Popen[bytes]], signum: int) -> None:
    port = free_port()
    proc, lines = start(popen, "server", "--port", str(port))
    url = lines.until(r"listening on (nats://\S+)", timeout=20).group(1)
    assert url == f"nats://127.0.0.1:{port}"
    lines.until(r"monitoring\s+http://127\.0\.0\.1:\d+")
    store = lines.until(r"store dir\s+(\S+) \(temporary").group(1)
    with natspull.connect(url) as client:
        js = client.jetstream()
        js.add_stream(name="UP", subjects=["up"])
        assert js.publish("up", b"x").seq == 1
    proc.send_signal(signum)
    assert proc.wait(15) == 0
    assert "nats-server stopped\n" in lines.rest()
    assert not os.path.exists(store)
    with pytest.raises(natspull.ConnectError):
        natspull.connect(url, connect_timeout=0.5)


def test_server_port_in_use(nats_server: NatsServer) -> None:
    result = run("server", "--port", str(nats_server.port))
    assert_one_line_error(result, 1, "already in use")


def test_consume_in_a_priority_group_with_min_pending(setup: Setup) -> None:
    js, stream, _, url = setup
    js.add_consumer(
        stream,
        durable_name="over",
        priority_groups=["jobs"],
        priority_policy=natspull.PriorityPolicy.OVERFLOW,
    )
    js.publish_many((f"{stream}.m", b"x") for _ in range(5))
    # 5 pending < min 10: nothing is served before the idle timeout
    result = run(
        "consume",
        stream,
        "over",
        "--group",
        "jobs",
        "--min-pending",
        "10",
        "--timeout",
        "1.5",
        "--server",
        url,
    )
    assert (result.code, result.out) == (0, ""), result
    js.publish_many((f"{stream}.m", b"x") for _ in range(10))
    # 15 pending: served while at least 10 are pending -> 6 messages
    result = run(
        "consume",
        stream,
        "over",
        "--group",
        "jobs",
        "--min-pending",
        "10",
        "--timeout",
        "1.5",
        "--server",
        url,
    )
    assert result.code == 0, result
    assert len(result.out.splitlines()) == 6


def test_consume_priority_group_errors(setup: Setup) -> None:
    js, stream, _, url = setup
    js.add_consumer(
        stream,
        durable_name="pin",
        priority_groups=["jobs"],
        priority_policy=natspull.PriorityPolicy.PINNED_CLIENT,
    )
    assert_one_line_error(run("consume", stream, "pin", "--server", url), 2, "pass group=")
    assert_one_line_error(
        run("consume", stream, "pin", "--group", "x", "--server", url), 2, "not a priority group"
    )
    result = run("consume", stream, "pin", "--group", "jobs", "--min-pending", "3", "--server", url)
    assert_one_line_error(result, 2, "min_pending needs priority_policy 'overflow'")
    result = run("consume", stream, "pin", "--group", "jobs", "--min-pending", "0", "--server", url)
    assert result.code == 2 and "--min-pending" in result.err, result
