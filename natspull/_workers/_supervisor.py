"""``run_workers()``: start N worker processes on one durable consumer, restart the ones that die,
and shut them all down on a signal.

The supervisor is the main thread of the calling process. It never forks: children are started
with the multiprocessing *spawn* context (a fresh interpreter each, so no inherited loop thread,
lock or socket), each with a duplex pipe (:mod:`natspull._workers._child` describes what goes
over it). The main thread polls the pipes and the process sentinels every TICK seconds; signal
handlers only count signals, the loop acts on them.

Shutdown::

    RUNNING --1st signal--> DRAINING --2nd signal--> STOPPING
       |                        |                        |
       |  (fatal start error,   |  every child gone      |  every child gone
       |   crash loop: drain)   v                        v
       +--------------------> exit 0 (or the error's)   exit EXIT_FORCED

    and in DRAINING or STOPPING, ``grace`` seconds after the first signal: SIGKILL to every
    child still alive, exit EXIT_FORCED.

A child that dies while RUNNING (a crash, SIGKILL, OOM kill, an exit the supervisor did not ask
for) is restarted after a backoff (0.5 s doubling to 10 s; back to 0.5 s once a child ran
STABLE seconds). CRASH_LIMIT unstable deaths in a row end the run with EXIT_CRASH_LOOP. A child
that reports a fatal error at the very first start of its slot (bad consume options, no such
consumer, no server, a refused login) ends the run with that error's code instead: restarting
would not help. So does a child whose init function raised, at any start (EXIT_INIT).
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection, wait
from types import FrameType
from typing import Any

from .._connect_options import check_worker_options
from .._validate import check_int
from ._child import child_main
from ._codes import EXIT_CRASH_LOOP, EXIT_ERROR, EXIT_FORCED, EXIT_INIT, EXIT_OK
from ._status import STATUS_MODES, Reporter, Row, make_reporter
from ._target import target_spec

__all__ = ["run_workers"]

log = logging.getLogger("natspull")

TICK = 0.1  # seconds between two looks at signals, pipes and restart times
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0
STABLE = 10.0  # a child that ran this long resets the backoff and the crash count
CRASH_LIMIT = 5

_RUNNING, _DRAINING, _STOPPING = "running", "draining", "stopping"
_FORBIDDEN_OPTIONS = ("handler", "workers", "stop_after")


class _Slot:
    """One worker position: its current process, pipe and counts. Main thread only."""

    def __init__(self, index: int) -> None:
        self.row = Row(index)
        self.process: Any = None  # multiprocessing's SpawnProcess (untyped in typeshed's context API)
        self.conn: Connection | None = None
        self.started = 0.0  # time.monotonic() of the current process's start
        self.ready = False
        self.fatal: tuple[int, str] | None = None  # what the current process reported before dying
        self.crashes = 0  # unstable deaths in a row
        self.restart_at: float | None = None  # when a dead process is due to be replaced

    @property
    def alive(self) -> bool:
        return self.process is not None


def run_workers(
    target: str | Callable[..., Any],
    *,
    stream: str,
    consumer: str,
    processes: int = 1,
    threads: int = 4,
    servers: str | list[str] | None = None,
    grace: float = 30.0,
    consume_options: Mapping[str, Any] | None = None,
    connect_options: Mapping[str, Any] | None = None,
    init: str | Callable[..., Any] | None = None,
    status: str = "auto",
    status_interval: float = 10.0,
) -> int:
    """Run ``consumer.consume(handler, workers=threads, **consume_options)`` in *processes*
    worker processes on the durable consumer *consumer* of *stream*, until a signal ends it.

    *target* is the handler: a ``"module:function"`` string or an importable top-level callable
    (each worker process imports it, then connects to *servers* on its own, with
    ``natspull.connect(servers, **connect_options)``: default servers are the context's url,
    else nats://127.0.0.1:4222). The handler acks, as with :meth:`natspull.Consumer.consume`;
    *consume_options* go to every ``consume()`` call unchanged (they must be picklable).
    *connect_options* are connect()'s keywords (``context``, ``user``, ``password``, ``token``,
    ``creds``, ``nkey``, ``tls_cert``, ``tls_key``, ``tls_ca``, ...), checked here at once:
    known keys, picklable values (``tls=`` an SSLContext is not: give the files), readable files.

    *init*, like *target*: called once in each worker process as ``init(client)`` with its
    connected :class:`natspull.Client`, before it consumes. If it raises, the process exits
    and the run stops (draining the others) with exit code 6; it is not restarted. Inside a
    worker process, :func:`natspull.worker_client` returns that client.

    SIGINT, SIGTERM and SIGHUP (unless ignored) drain every worker: started and buffered
    handlers finish and ack, then the processes exit. A second signal stops them at once
    (running handlers finish, buffered messages are NAKed back). Workers still alive *grace*
    seconds after the first signal are killed. A worker that dies unexpectedly is restarted
    with a backoff and a log line. Workers exit on their own when the supervisor is killed.

    *status*: ``"auto"`` (a live table on a terminal, else ``"lines"``), ``"live"``,
    ``"lines"`` (a line per process every *status_interval* seconds) or ``"off"``; on stdout.

    Returns the exit code: 0 every worker drained after a signal; 1 a worker could not start
    (another error), or ended with an error while draining; 2 a worker refused the target or
    the consume options; 3 no such stream or consumer; 4 cannot connect (2-4: at the first
    start of a worker); 5 a worker kept dying (5 restarts in a row that did not run 10 s);
    6 the init function raised in a worker; 130 forced: a second signal, or workers killed after *grace*.

    Each worker process is started with the multiprocessing *spawn* method, which imports the
    main module again in it: in a script, call ``run_workers()`` under
    ``if __name__ == "__main__":``. The processes are named ``natspull-worker-N``.

    Blocks until the run ends. Main thread only (signals). Raises ValueError or TypeError at
    once for a bad argument or a target that cannot be imported or is not callable (before any
    process starts), RuntimeError off the main thread.
    """
    spec = target_spec(target)
    init_spec = None if init is None else target_spec(init)
    connect_options = check_worker_options(connect_options or {})
    processes = check_int("processes", processes, maximum=1024)
    threads = check_int("threads", threads, maximum=1024)
    urls = [servers] if isinstance(servers, str) else servers
    if urls is not None and (
        not isinstance(urls, list) or not urls or not all(isinstance(url, str) and url for url in urls)
    ):
        raise TypeError(f"servers must be a URL string or a non-empty list of them, got {servers!r}")
    for name, value in (("stream", stream), ("consumer", consumer)):
        if not isinstance(value, str) or not value:
            raise TypeError(f"{name} must be a non-empty string, got {value!r}")
    for name, number in (("grace", grace), ("status_interval", status_interval)):
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not number > 0:
            raise ValueError(f"{name} must be a number of seconds > 0, got {number!r}")
    if status not in STATUS_MODES:
        raise ValueError(f"status must be one of {', '.join(STATUS_MODES)}, got {status!r}")
    options = dict(consume_options or {})
    for key in options:
        if not isinstance(key, str) or key in _FORBIDDEN_OPTIONS:
            raise ValueError(
                f"consume_options: {key!r} is not allowed (the handler is target=, the workers are "
                f"threads=, and the processes run until a signal)"
            )
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("run_workers() must be called from the main thread (it handles signals)")
    args = (spec, servers, stream, consumer, threads, options, float(grace), connect_options, init_spec)
    return _Supervisor(processes, args, float(grace), make_reporter(status, status_interval)).run()


class _Supervisor:
    """The run's state. Main thread only; the signal handler only increments ``_signals``."""

    def __init__(self, processes: int, args: tuple[Any, ...], grace: float, reporter: Reporter) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._slots = [_Slot(i + 1) for i in range(processes)]
        self._args = args
        self._grace = grace
        self._reporter = reporter
        self._signals = 0  # received so far (written by the handler, read by the loop)
        self._acted = 0  # signals acted on
        self._phase = _RUNNING
        self._deadline: float | None = None  # when DRAINING/STOPPING turns to SIGKILL
        self._code = EXIT_OK
        self._forced = False

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1

    def run(self) -> int:
        wanted = [signal.SIGINT, signal.SIGTERM]
        hangup = getattr(signal, "SIGHUP", None)
        if hangup is not None and signal.getsignal(hangup) is not signal.SIG_IGN:
            wanted.append(hangup)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in wanted}
        try:
            for slot in self._slots:
                self._start(slot)
            while self._step():
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._kill_all()  # only on an exception: a normal end has no child left
            self._reporter.close([slot.row for slot in self._slots])
        if self._forced and self._code == EXIT_OK:
            return EXIT_FORCED
        return self._code

    # ------------------------------------------------------------------ the loop

    def _step(self) -> bool:
        """One look at signals, pipes, deaths and restarts; False when the run is over."""
        self._act_on_signals()
        waitables: list[Any] = []
        for slot in self._slots:
            if slot.alive:
                waitables += [slot.conn, slot.process.sentinel]
        if waitables:
            ready = wait(waitables, TICK)
        else:  # every process is waiting for its restart: nothing to wait on but time
            ready = []
            time.sleep(TICK)
        now = time.monotonic()
        for slot in self._slots:
            if slot.alive and slot.conn in ready:
                self._read(slot)
        for slot in self._slots:
            if slot.alive and slot.process.sentinel in ready:
                self._read(slot)  # what it said just before it died
                self._reap(slot, now)
        if self._phase == _RUNNING:
            for slot in self._slots:
                if slot.restart_at is not None and now >= slot.restart_at:
                    self._start(slot)
        elif self._deadline is not None and now >= self._deadline:
            self._kill_all()
        self._reporter.show([slot.row for slot in self._slots])
        return self._phase == _RUNNING or any(slot.alive for slot in self._slots)

    def _act_on_signals(self) -> None:
        while self._acted < self._signals:
            self._acted += 1
            if self._phase == _RUNNING:
                self._reporter.event(f"signal: draining (grace {self._grace:g} s)")
                self._shutdown(_DRAINING)
            elif self._phase == _DRAINING:
                self._reporter.event("signal: stopping now")
                self._forced = True
                self._shutdown(_STOPPING)

    def _shutdown(self, phase: str) -> None:
        """Tell every child to drain (or stop); no restarts from now on."""
        self._phase = phase
        if self._deadline is None:
            self._deadline = time.monotonic() + self._grace
        command = "drain" if phase == _DRAINING else "stop"
        for slot in self._slots:
            slot.restart_at = None
            if slot.alive:
                slot.row.state = phase
                self._send(slot, command)
            elif slot.row.state != "exited":
                slot.row.state = "exited"

    # ------------------------------------------------------------------ one child

    def _start(self, slot: _Slot) -> None:
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=child_main, args=(child_end, *self._args), name=f"natspull-worker-{slot.row.index}"
        )
        process.start()
        child_end.close()  # the child's copy is its own: EOF reaches whichever side outlives the other
        slot.process, slot.conn = process, parent_end
        slot.started, slot.ready, slot.fatal, slot.restart_at = time.monotonic(), False, None, None
        slot.row.pid, slot.row.state = process.pid, "starting"
        slot.row.handled = slot.row.failed = slot.row.redelivered = 0

    def _send(self, slot: _Slot, command: str) -> None:
        try:
            assert slot.conn is not None
            slot.conn.send(command)
        except OSError:  # the child is dying; its sentinel will tell
            pass

    def _read(self, slot: _Slot) -> None:
        conn = slot.conn
        assert conn is not None
        try:
            while conn.poll():
                message = conn.recv()
                kind = message[0]
                if kind == "stats":
                    slot.row.handled, slot.row.failed, slot.row.redelivered = message[1:]
                elif kind == "ready":
                    slot.ready = True
                    if slot.row.state == "starting":
                        slot.row.state = "running"
                    self._reporter.event(f"worker {slot.row.index} pid {message[1]} consuming")
                elif kind == "fatal":
                    slot.fatal = (message[1], message[2])
        except (EOFError, OSError):  # the child is gone; its sentinel will tell
            pass

    def _reap(self, slot: _Slot, now: float) -> None:
        """The process of *slot* ended: account for it, and restart it or end the run."""
        process = slot.process
        process.join()
        code = process.exitcode
        assert slot.conn is not None
        slot.conn.close()
        slot.process = slot.conn = None
        index, pid = slot.row.index, slot.row.pid
        if self._phase != _RUNNING:
            slot.row.state = "exited"
            if code != 0:  # it did not drain (or stop) cleanly: not a clean end
                self._reporter.event(f"worker {index} pid {pid} ended with exit code {code}")
                if self._code == EXIT_OK:
                    self._code = EXIT_ERROR
            return
        how = f"exit code {code}" if code >= 0 else f"signal {-code}"
        reason = f": {slot.fatal[1]}" if slot.fatal else ""
        if slot.fatal is not None and slot.fatal[0] == EXIT_INIT:
            # The application refused to start this process: restarting it would refuse again.
            message = f"worker {index} pid {pid}: {slot.fatal[1]}; stopping every worker (no restart)"
            log.error("natspull: %s", message)
            self._reporter.event(message)
            slot.row.state = "exited"
            self._code = EXIT_INIT
            self._shutdown(_DRAINING)
            return
        if slot.fatal is not None and slot.row.restarts == 0 and not slot.ready:
            # The first start failed on its own terms (configuration, server): no restart helps.
            message = f"worker {index} pid {pid} could not start{reason}"
            log.error("natspull: %s", message)
            self._reporter.event(message)
            slot.row.state = "exited"
            self._code = slot.fatal[0]
            self._shutdown(_DRAINING)
            return
        stable = now - slot.started >= STABLE
        slot.crashes = 1 if stable else slot.crashes + 1
        if slot.crashes >= CRASH_LIMIT:
            message = (
                f"worker {index} pid {pid} died ({how}){reason}; {slot.crashes} times in a row: giving up"
            )
            log.error("natspull: %s", message)
            self._reporter.event(message)
            slot.row.state = "exited"
            self._code = EXIT_CRASH_LOOP
            self._shutdown(_DRAINING)
            return
        delay = min(BACKOFF_FIRST * 2 ** (slot.crashes - 1), BACKOFF_MAX)
        message = f"worker {index} pid {pid} died ({how}){reason}; restarting in {delay:g} s"
        log.warning("natspull: %s", message)
        self._reporter.event(message)
        slot.row.state = "restarting"
        slot.row.restarts += 1
        slot.restart_at = now + delay

    def _kill_all(self) -> None:
        """SIGKILL every child still alive and reap it (grace ran out, or the supervisor failed)."""
        for slot in self._slots:
            if slot.alive:
                self._forced = True
                self._reporter.event(f"worker {slot.row.index} pid {slot.row.pid} still running: killed")
                slot.process.kill()
                slot.process.join()
                assert slot.conn is not None
                slot.conn.close()
                slot.process = slot.conn = None
                slot.row.state = "killed"
