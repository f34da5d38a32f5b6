"""No orphaned nats-server, no leftover temporary store dir, whatever kills the program.

Real processes and real signals: ``natspull server``, ``natspull demo`` and small scripts using
``natspull.testing.NatsServer`` run as subprocesses. The test finds their nats-server child in
``/proc``, signals the parent and waits (with a deadline) until the server is dead. A dead server
may stay a zombie when nobody reaps it (PID 1 of a container need not), so state ``Z`` counts as
dead; a start time that changed means the pid was reused, which also counts as dead.

Linux only: the guarantee rests on ``PR_SET_PDEATHSIG`` and the test on ``/proc``.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from conftest import wait_until

import natspull
from natspull.testing import NatsServer

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux only"
)

CLI = [sys.executable, "-m", "natspull"]
DEATH_TIMEOUT = 10.0  # the kernel signals the server as the parent exits; this is only a bound
EXIT_TIMEOUT = 30.0  # a signalled CLI drains, deletes its stream and stops the server first


class Stat(NamedTuple):
    comm: str
    state: str
    ppid: int
    start: int  # clock ticks after boot: tells a reused pid apart


def stat(pid: int) -> Stat | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    comm = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    return Stat(comm, fields[0], int(fields[1]), int(fields[19]))


class Server(NamedTuple):
    pid: int
    start: int

    def dead(self) -> bool:
        now = stat(self.pid)
        return now is None or now.state == "Z" or now.start != self.start


def server_children(parent: int) -> list[Server]:
    """The live nats-server processes whose parent is *parent*, from a scan of /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            now = stat(int(entry))
            if now is not None and now.ppid == parent and now.comm == "nats-server" and now.state != "Z":
                found.append(Server(int(entry), now.start))
    return found


def the_server_of(parent: int) -> Server:
    children = server_children(parent)
    assert len(children) == 1, f"nats-server children of {parent}: {children}"
    return children[0]


class Program(NamedTuple):
    argv: list[str]
    ready: str  # a line printed once the server is up and the program is in its steady state
    store: str  # a pattern whose group 1 is the temporary store dir
    cleans_up_on: tuple[int, ...]  # signals after which the program removes the store dir itself
    exit_code: int  # after such a signal


STOPS_IT = (signal.SIGHUP, signal.SIGTERM)

# Starts a server, prints its store dir, then waits to be signalled (no handler is installed:
# SIGTERM and SIGHUP kill it without atexit, like SIGKILL). With "thread" the server is started
# by a short-lived thread: PR_SET_PDEATHSIG fires when the thread that forked the child exits,
# so the script checks the server outlives that thread.
SCRIPT = textwrap.dedent(
    """\
    import os, sys, threading
    from natspull.testing import NatsServer

    server = NatsServer()
    if sys.argv[1] == "thread":
        starter = threading.Thread(target=server.start, name="starter")
        starter.start()
        starter.join(30)
        tid = starter.native_id
        while os.path.exists(f"/proc/self/task/{tid}"):  # the OS thread ends after join() returns
            threading.Event().wait(0.005)
        assert server.healthz()["status"] == "ok", "the server died with the thread that started it"
    else:
        server.start()
    print("store", server.store_dir, flush=True)
    print("ready", flush=True)
    threading.Event().wait(60)  # a bound: the test signals long before
    """
)

PROGRAMS = {
    "cli-server": Program(
        [*CLI, "server", "--port", "{port}"], r"stops it\.$", r"store dir\s+(\S+) \(temporary", STOPS_IT, 0
    ),
    # Signalled while it publishes (the drain window is covered below); exit 130: interrupted.
    "cli-demo": Program(
        [*CLI, "demo", "--messages", "2000000", "--size", "16"],
        r"^stream\s",
        r"embedded nats-server \S+, store (\S+)\)",
        STOPS_IT,
        130,
    ),
    "script": Program([sys.executable, "-c", SCRIPT, "main"], r"^ready$", r"^store (\S+)$", (), 0),
    "script-thread": Program([sys.executable, "-c", SCRIPT, "thread"], r"^ready$", r"^store (\S+)$", (), 0),
}


class Run:
    """A started program: its output lines, read on a helper thread, and what it left behind."""

    def __init__(self, argv: list[str]) -> None:
        # A temporary dir of its own: another natspull process (a parallel test run) sweeping
        # stale dirs in the shared one could otherwise remove what this program left behind.
        self.tmp = tempfile.mkdtemp(prefix="natspull-orphans-test-")
        env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
        env["TMPDIR"] = self.tmp
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()  # guards lines and _eof; leaf lock
        self._eof = False
        self._reader = threading.Thread(target=self._read, name="test-orphans-reader", daemon=True)
        self._reader.start()
        self.server: Server | None = None
        self.store: str | None = None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._changed:
                self.lines.append(raw.decode().rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def until(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """The first line (seen so far or to come) matching *pattern*."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if match := re.search(pattern, line):
                        return match
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    break
                self._changed.wait(remaining)
        raise AssertionError(f"no line matching {pattern!r}; output: {self.lines[-20:]}{self.err()}")

    def err(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return "\nstderr: " + self.proc.stderr.read().decode(errors="replace")[-3000:]

    def close(self) -> None:
        """Kill and reap what is left: the program, an orphaned server, a temporary store dir."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        if self.server is not None and not self.server.dead():
            os.kill(self.server.pid, signal.SIGKILL)
        if self.store is not None:
            shutil.rmtree(self.store, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        run.close()


def start(runs: list[Run], program: Program, timeout: float = 30.0) -> Run:
    """Start *program*, wait until it is ready, and find its server and store dir."""
    run = Run([arg.replace("{port}", str(free_port())) for arg in program.argv])
    runs.append(run)
    # The store dir is printed once the server is up; record both before anything can fail, so
    # close() cleans up after a program that is killed without doing so itself.
    run.store = run.until(program.store).group(1)
    run.server = the_server_of(run.proc.pid)
    assert os.path.isdir(run.store)
    run.until(program.ready, timeout)
    return run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def assert_dies(server: Server) -> None:
    wait_until(server.dead, DEATH_TIMEOUT, f"nats-server {server.pid} to die with its parent")


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
@pytest.mark.parametrize("name", list(PROGRAMS))
def test_server_dies_with_its_parent(
    runs: list[Run], name: str, signum: signal.Signals, monkeypatch: pytest.MonkeyPatch
) -> None:
    program = PROGRAMS[name]
    run = start(runs, program)
    assert run.server is not None and run.store is not None
    run.proc.send_signal(signum)
    code = run.proc.wait(EXIT_TIMEOUT)
    assert_dies(run.server)
    if signum in program.cleans_up_on:
        assert code == program.exit_code, f"{run.lines[-20:]}{run.err()}"
        assert not os.path.exists(run.store)
    else:
        assert code == -signum
        # The parent died before it could clean up; the next temporary server removes the dir,
        # because its owner and its server are both gone.
        assert os.path.isdir(run.store)
        monkeypatch.setattr(tempfile, "tempdir", run.tmp)  # where the program's dirs are
        with NatsServer():
            assert not os.path.exists(run.store)


@pytest.mark.parametrize("signum", STOPS_IT, ids=lambda s: s.name)
def test_demo_signalled_while_consuming_drains_and_stops_its_server(
    runs: list[Run], signum: signal.Signals
) -> None:
    # Inside the drain window the signal goes to shutdown_on_signals, not to KeyboardInterrupt.
    demo = [*CLI, "demo", "--messages", "100000", "--size", "16"]
    # Publishing 100,000 messages takes seconds (more on a loaded machine); consuming the 90% left
    # after the first progress line takes about as long, so the signal lands mid-consume.
    run = start(runs, PROGRAMS["cli-demo"]._replace(argv=demo, ready=r"^consume\s"), timeout=90)
    assert run.server is not None and run.store is not None
    run.proc.send_signal(signum)
    assert run.proc.wait(EXIT_TIMEOUT) == 130, f"{run.lines[-20:]}{run.err()}"
    assert_dies(run.server)
    assert not os.path.exists(run.store)
    assert any(re.match(r"interrupted: handled [\d,]+ of 100,000 messages$", line) for line in run.lines)


# A new session whose controlling terminal is the pty named by argv[1], then exec argv[2:]: the
# CLI as a shell would run it in a terminal window.
ON_TERMINAL = textwrap.dedent(
    """\
    import os, sys
    os.setsid()
    terminal = os.open(sys.argv[1], os.O_RDWR)  # a session leader's first tty becomes its own
    for fd in (0, 1, 2):
        os.dup2(terminal, fd)
    os.execv(sys.argv[2], sys.argv[2:])
    """
)


@pytest.mark.parametrize("name", ["cli-server", "cli-demo"])
def test_closing_the_terminal_stops_the_server_and_removes_the_store(name: str) -> None:
    import pty

    program = PROGRAMS[name]
    argv = [arg.replace("{port}", str(free_port())) for arg in program.argv]
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", ON_TERMINAL, os.ttyname(terminal), *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server: Server | None = None
    store: str | None = None
    output = ""
    try:
        deadline = time.monotonic() + 60
        while not (re.search(program.ready, output, re.M) and store):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"not ready in time; output: {output!r}"
            if select.select([controller], [], [], remaining)[0]:
                output += os.read(controller, 65536).decode(errors="replace").replace("\r\n", "\n")
            if store is None and (found := re.search(program.store, output, re.M)):
                store = found.group(1)
                server = the_server_of(proc.pid)
        assert server is not None
        os.close(controller)  # the terminal window closes: the kernel sends SIGHUP to the session
        controller = -1
        code = proc.wait(EXIT_TIMEOUT)
        # It ended by itself (its last lines meet a dead terminal: EIO), not by the SIGHUP.
        assert code >= 0
        assert_dies(server)
        assert not os.path.exists(store)
    finally:
        if controller >= 0:
            os.close(controller)
        os.close(terminal)
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if server is not None and not server.dead():
            os.kill(server.pid, signal.SIGKILL)
        if store is not None:
            shutil.rmtree(store, ignore_errors=True)


def sighup_bit(pid: int, field: str) -> bool:
    """Whether SIGHUP is in the ``SigIgn``/``SigCgt`` mask of /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_cli_under_nohup_keeps_running_after_sighup(runs: list[Run]) -> None:
    # nohup ignores SIGHUP and execs the program: the CLI must not install a handler over that.
    nohup = [
        sys.executable,
        "-c",
        "import os, signal, sys\n"
        "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
        "os.execv(sys.argv[1], sys.argv[1:])",
    ]
    program = PROGRAMS["cli-server"]
    run = start(runs, program._replace(argv=[*nohup, *program.argv]))
    assert run.server is not None and run.store is not None
    assert sighup_bit(run.proc.pid, "SigIgn") and not sighup_bit(run.proc.pid, "SigCgt")
    url = run.until(r"listening on (nats://\S+)").group(1)
    run.proc.send_signal(signal.SIGHUP)  # discarded by the kernel at once: it is ignored
    with natspull.connect(url) as client:
        client.flush(timeout=5)
    assert run.proc.poll() is None and not run.server.dead()
    run.proc.send_signal(signal.SIGTERM)
    assert run.proc.wait(EXIT_TIMEOUT) == 0
    assert_dies(run.server)
    assert not os.path.exists(run.store)


def test_server_started_by_a_short_lived_thread_outlives_it() -> None:
    # PR_SET_PDEATHSIG fires when the forking thread exits: such servers are started by a thread
    # that lives as long as they do, and that thread ends with the last of them (the autouse
    # no_thread_left fixture checks it).
    server = NatsServer()
    starter = threading.Thread(target=server.start, name="starter")
    starter.start()
    starter.join(30)
    assert not starter.is_alive()
    tid = starter.native_id
    wait_until(lambda: not os.path.exists(f"/proc/self/task/{tid}"), 5.0, "the starter's OS thread to end")
    try:
        assert server.healthz()["status"] == "ok"
        assert server.running
    finally:
        server.stop()


def test_only_dirs_whose_owner_and_server_are_both_gone_count_as_stale() -> None:
    # The owner file is what mark_owner() writes after every start in a temporary dir.
    from natspull.testing import _child

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, timeout=30
    )
    gone = int(dead.stdout)  # reaped: no such process now
    here = {"host": os.uname().nodename, "pid_ns": os.readlink("/proc/self/ns/pid")}
    alive = os.getppid()
    cases = {
        "both gone": ({"owner": gone, "server": gone, **here}, False),
        "server alive": ({"owner": gone, "server": alive, **here}, True),
        "owner alive": ({"owner": alive, "server": gone, **here}, True),
        # The pid is in use, but by a process started at another time: the owner is gone.
        "owner pid reused": ({"owner": alive, "owner_start": 0, "server": gone, **here}, False),
        "other pid namespace": ({"owner": gone, "server": gone, **here, "pid_ns": "pid:[1]"}, True),
        "damaged": ({"owner": "x", "server": gone, **here}, True),
        "no owner file": (None, True),
    }
    dirs = {}
    try:
        for case, (record, _) in cases.items():
            dirs[case] = tempfile.mkdtemp(prefix="natspull-")
            if record is not None:
                record = {"owner_start": None, "server_start": None, **record}  # None: not known
                Path(dirs[case], _child._OWNER_NAME).write_text(json.dumps(record))
        with NatsServer():
            kept = {case: os.path.isdir(path) for case, path in dirs.items()}
        assert kept == {case: keep for case, (_, keep) in cases.items()}
    finally:
        for path in dirs.values():
            shutil.rmtree(path, ignore_errors=True)
