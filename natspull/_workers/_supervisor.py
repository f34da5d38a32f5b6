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

When a process dies, the messages that were in its handlers (``_handlers``) are NAKed at once
by the supervisor's own connection (``_supervisor_client``), and counted: one in a handler at
``poison_after`` deaths is terminated as poison, and the deaths it explains no longer count
toward the crash loop (``_poison``). With ``hard_timeout``, a process whose handler runs longer
is replaced: a new process is started in its slot, then the stuck one is SIGKILLed and its
messages NAKed (the stuck one counts a death toward poison; the replacement is no crash).
Optionally ``_http`` serves /livez, /readyz and /metrics from the snapshot each tick publishes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from types import FrameType
from typing import Any

from .._connect_options import check_worker_options
from .._validate import check_int
from ._child import DURATION_BUCKETS, child_main
from ._codes import EXIT_CRASH_LOOP, EXIT_ERROR, EXIT_FORCED, EXIT_INIT, EXIT_OK
from ._create import apply_consumer_config, load_consumer_config
from ._handlers import HandlerTable, Running, SuspectList
from ._http import HttpServer, parse_address
from ._metrics import Snapshot
from ._poison import DeathCounts
from ._status import STATUS_MODES, Reporter, Row, make_reporter
from ._supervisor_client import SupervisorClient
from ._target import key_function, target_spec

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
        # unstable deaths in a row, each with the stream sequences it is blamed on (_poison)
        self.crash_log: list[frozenset[int]] = []
        self.restart_at: float | None = None  # when a dead process is due to be replaced
        self.table: HandlerTable | None = None  # the current process's messages in handlers
        self.connected = False  # the current process's last report
        self.terminated = 0  # the current process's consume() terminations (term_after)
        self.buckets: tuple[int, ...] = (0,) * (len(DURATION_BUCKETS) + 1)
        self.duration_sum = 0.0

    @property
    def crashes(self) -> int:
        return len(self.crash_log)

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
    http: str | None = None,
    poison_after: int | None = 3,
    dead_letter: str | None = None,
    hard_timeout: float | None = None,
    create_consumer: str | os.PathLike[str] | None = None,
) -> int:
    """Run ``consumer.consume(handler, workers=threads, **consume_options)`` in *processes*
    worker processes on the durable consumer *consumer* of *stream*, until a signal ends it.

    *target* is the handler: a ``"module:function"`` string or an importable top-level callable
    (each worker process imports it, then connects to *servers* on its own, with
    ``natspull.connect(servers, **connect_options)``: default servers are the context's url,
    else nats://127.0.0.1:4222). The handler acks, as with :meth:`natspull.Consumer.consume`;
    *consume_options* go to every ``consume()`` call unchanged (they must be picklable), but
    a ``key`` given as a string: a key spec, ``"subject"`` or ``"header:NAME"``, made into the
    key function in each worker process (``natspull worker --key``).
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

    *http* ``"[HOST:]PORT"`` serves ``/livez``, ``/readyz`` and ``/metrics`` (Prometheus, with
    the ``metrics`` extra) from the supervisor (``":9464"``: every interface; port 0: any free
    port; the address is shown as an event line and logged). Raises ValueError when it cannot
    listen there.

    The messages in the handlers of a process that dies are NAKed at once by the supervisor (its
    own connection). One that was in a handler at *poison_after* deaths (None: never) is a
    poison message: terminated (``+TERM`` with a reason naming the deaths), logged, and first
    published to the subject *dead_letter* when given (with ``Natspull-Stream``,
    ``Natspull-Sequence``, ``Natspull-Consumer``, ``Natspull-Subject`` and ``Natspull-Reason``
    headers); the deaths it caused do not count toward the crash loop (so keep *poison_after*
    below 5, the crash-loop limit). With *hard_timeout* seconds, a process with a handler
    running longer is replaced (a new one started, the stuck one killed) and the stuck message
    is NAKed at once.

    *create_consumer*: a JSON file with the consumer's configuration (as ``nats consumer info
    --json`` prints its ``config``, durations in nanoseconds), applied once before any process
    starts: the consumer is created when missing, and updated when a field the file gives
    differs (fields it leaves out keep their values). A differing field the server never lets
    change (``deliver_policy``, ``opt_start_seq``, ``opt_start_time``, ``ack_policy``,
    ``replay_policy``, ``max_waiting``, ``mem_storage``, ...) raises ValueError naming it, and
    nothing is changed; a missing stream raises StreamNotFoundError.

    Returns the exit code: 0 every worker drained after a signal; 1 a worker could not start
    (another error), or ended with an error while draining; 2 a worker refused the target or
    the consume options; 3 no such stream or consumer; 4 cannot connect (2-4: at the first
    start of a worker); 5 a worker kept dying (5 restarts in a row that did not run 10 s, not
    counting the deaths of a message terminated as poison); 6 the init function raised in a
    worker; 130 forced: a second signal, or workers killed after *grace*.

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
    if isinstance(options.get("key"), str):
        key_function(options["key"])  # a bad key spec fails here, before any process starts
    address = None if http is None else parse_address(http)
    poison_after = check_int("poison_after", poison_after, allow_none=True)
    if dead_letter is not None and (not isinstance(dead_letter, str) or not dead_letter.strip()):
        raise TypeError(f"dead_letter must be a subject string or None, got {dead_letter!r}")
    if hard_timeout is not None and (
        isinstance(hard_timeout, bool) or not isinstance(hard_timeout, (int, float)) or not hard_timeout > 0
    ):
        raise ValueError(f"hard_timeout must be a number of seconds > 0 or None, got {hard_timeout!r}")
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("run_workers() must be called from the main thread (it handles signals)")
    if create_consumer is not None:
        wanted = load_consumer_config(create_consumer, consumer)
        done = apply_consumer_config(servers, connect_options, stream, consumer, wanted)
        if status != "off":
            print(f"consumer {consumer} of {stream}: {done} ({os.fspath(create_consumer)})", flush=True)
    args = (spec, servers, stream, consumer, threads, options, float(grace), connect_options, init_spec)
    client = SupervisorClient(servers, stream, consumer, dead_letter, connect_options)
    server = None
    try:
        if address is not None:
            try:
                server = HttpServer(address, stream, consumer, client.lag)
            except OSError as exc:
                raise ValueError(f"http: cannot listen on {http!r}: {exc}") from None
        supervisor = _Supervisor(
            processes,
            args,
            float(grace),
            make_reporter(status, status_interval),
            client=client,
            http=server,
            deaths=DeathCounts(poison_after),
            hard_timeout=None if hard_timeout is None else float(hard_timeout),
        )
        return supervisor.run()
    finally:
        if server is not None:
            server.close()
        client.close()


class _Supervisor:
    """The run's state. Main thread only; the signal handler only increments ``_signals``."""

    def __init__(
        self,
        processes: int,
        args: tuple[Any, ...],
        grace: float,
        reporter: Reporter,
        *,
        client: SupervisorClient,
        http: HttpServer | None,
        deaths: DeathCounts,
        hard_timeout: float | None,
    ) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._slots = [_Slot(i + 1) for i in range(processes)]
        self._args = args
        self._threads: int = args[4]
        self._client = client
        self._http = http
        self._deaths = deaths
        self._hard_timeout = hard_timeout
        self._suspects = SuspectList(self._context)  # shared with every child
        self._poison = 0  # messages terminated as poison
        # final counts of the processes that ended (a live process's are on its slot)
        self._done = Snapshot()
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
        if self._http is not None:
            log.info("natspull: worker: serving /livez /readyz /metrics on %s", self._http.url)
            self._reporter.event(f"http: serving /livez /readyz /metrics on {self._http.url}")
        try:
            for slot in self._slots:
                self._start(slot)
            while self._step():
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._kill_all()  # only on an exception: a normal end has no child left
            self._publish()
            self._reporter.close([slot.row for slot in self._slots], self._lag())
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
            if self._hard_timeout is not None:
                for slot in self._slots:
                    self._check_stuck(slot, now - self._hard_timeout)
        elif self._deadline is not None and now >= self._deadline:
            self._kill_all()
        self._publish()
        self._reporter.show([slot.row for slot in self._slots], self._lag())
        return self._phase == _RUNNING or any(slot.alive for slot in self._slots)

    def _act_on_signals(self) -> None:
        while self._acted < self._signals:
            self._acted += 1
            if self._phase == _RUNNING:
                self._shutdown(_DRAINING)
                self._reporter.event(f"signal: draining (grace {self._grace:g} s)")
            elif self._phase == _DRAINING:
                self._forced = True
                self._shutdown(_STOPPING)
                self._reporter.event("signal: stopping now")

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
        self._publish()  # /readyz says so before anything else does

    # ------------------------------------------------------------------ one child

    def _start(self, slot: _Slot) -> None:
        parent_end, child_end = self._context.Pipe(duplex=True)
        table = HandlerTable(self._context, self._threads)
        process = self._context.Process(
            target=child_main,
            args=(child_end, *self._args, table, self._suspects),
            name=f"natspull-worker-{slot.row.index}",
        )
        process.start()
        child_end.close()  # the child's copy is its own: EOF reaches whichever side outlives the other
        slot.process, slot.conn, slot.table, slot.connected = process, parent_end, table, False
        slot.started, slot.ready, slot.fatal, slot.restart_at = time.monotonic(), False, None, None
        slot.row.pid, slot.row.state = process.pid, "starting"
        self._retire_counts(slot)

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
                elif kind == "health":
                    slot.connected, slot.terminated, slot.buckets, slot.duration_sum = message[1:]
                elif kind == "ready":
                    slot.ready = slot.connected = True
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
        running = slot.table.snapshot() if slot.table is not None else []
        blamed = frozenset(r.seq for r in running)
        poison = self._settle(running, blamed, f"worker {index} pid {pid}")
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
        slot.crash_log = [blamed] if stable else [*slot.crash_log, blamed]
        if poison:  # the deaths these explain are explained, and the cause is gone
            for other in self._slots:
                other.crash_log = [death for death in other.crash_log if not death & poison]
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
        delay = min(BACKOFF_FIRST * 2 ** max(slot.crashes - 1, 0), BACKOFF_MAX)
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
                running = slot.table.snapshot() if slot.table is not None else []
                self._settle(running, frozenset(), f"worker {slot.row.index} pid {slot.row.pid}")

    # ------------------------------------------------------------------ messages in handlers

    def _settle(self, running: list[Running], blamed: frozenset[int], who: str) -> frozenset[int]:
        """What to do with the messages that were in the handlers of a process that is gone:
        count a death for each of *blamed*, terminate those that are now poison, NAK the rest at
        once. Returns the poison ones."""
        poison = frozenset(self._deaths.died(sorted(blamed)))
        for message in running:
            if message.seq in poison:
                continue
            self._suspects.add(message.seq)  # before the NAK: a redelivery runs alone
            if message.reply:
                self._client.nak(message.reply)
        for message in running:
            if message.seq in poison:
                deaths = self._deaths.poison_after
                reason = f"poison message: in a handler at {deaths} worker process deaths"
                text = (
                    f"stream sequence {message.seq} terminated as a poison message "
                    f"({who} was the last of {deaths} deaths)"
                )
                log.error("natspull: %s", text)
                self._reporter.event(text)
                self._poison += 1
                self._client.terminate(message.seq, message.reply, reason)
        return poison

    def _check_stuck(self, slot: _Slot, started_before: float) -> None:
        """Replace the process of *slot* when one of its handlers started before *started_before*:
        a new process first, then SIGKILL to the stuck one and its messages NAKed at once."""
        if not slot.alive or slot.table is None:
            return
        running = slot.table.snapshot()
        stuck = frozenset(r.seq for r in running if r.started < started_before)
        if not stuck:
            return
        process, conn, table, pid = slot.process, slot.conn, slot.table, slot.row.pid
        assert conn is not None
        text = (
            f"worker {slot.row.index} pid {pid}: a handler ran longer than {self._hard_timeout:g} s "
            f"(stream sequence {', '.join(map(str, sorted(stuck)))}): replacing the process"
        )
        log.warning("natspull: %s", text)
        self._reporter.event(text)
        slot.row.restarts += 1
        self._start(slot)  # the new process first: the slot keeps consuming
        process.kill()
        process.join()
        conn.close()
        self._settle(table.snapshot(), stuck, f"worker {slot.row.index} pid {pid}")

    def _retire_counts(self, slot: _Slot) -> None:
        """Add the counts the previous process of *slot* reported last to the totals of ended
        processes, and start the slot's at 0 (called when a new process takes the slot)."""
        done, row = self._done, slot.row
        buckets = tuple(a + b for a, b in zip(done.buckets, slot.buckets))
        self._done = replace(
            done,
            handled=done.handled + row.handled,
            failed=done.failed + row.failed,
            terminated=done.terminated + slot.terminated,
            buckets=buckets,
            duration_sum=done.duration_sum + slot.duration_sum,
        )
        row.handled = row.failed = row.redelivered = slot.terminated = 0
        slot.buckets, slot.duration_sum = (0,) * len(slot.buckets), 0.0

    # ------------------------------------------------------------------ what the endpoints show

    def _lag(self) -> tuple[int, int] | None:
        lag = self._client.lag()
        return None if lag is None else (lag.pending, lag.ack_pending)

    def _publish(self) -> None:
        """Hand the HTTP server a snapshot of this tick."""
        if self._http is None:
            return
        done, slots = self._done, self._slots
        alive = [slot for slot in slots if slot.alive]
        buckets = list(done.buckets)
        for slot in slots:  # a dead process's last counts stay on its slot until the next starts
            buckets = [a + b for a, b in zip(buckets, slot.buckets)]
        self._http.publish(
            Snapshot(
                live=self._code == EXIT_OK,
                ready=self._phase == _RUNNING
                and len(alive) == len(slots)
                and all(slot.ready and slot.connected for slot in slots),
                processes=len(alive),
                restarts=sum(slot.row.restarts for slot in slots),
                handled=done.handled + sum(slot.row.handled for slot in slots),
                failed=done.failed + sum(slot.row.failed for slot in slots),
                terminated=done.terminated + self._poison + sum(slot.terminated for slot in slots),
                poison=self._poison,
                in_flight=sum(len(slot.table.snapshot()) for slot in alive if slot.table is not None),
                buckets=tuple(buckets),
                duration_sum=done.duration_sum + sum(slot.duration_sum for slot in slots),
            )
        )
