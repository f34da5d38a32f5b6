"""The ``natspull`` command line: a demo, a message printer, a publisher and a dev server.

::

    natspull demo [--messages N] [--size BYTES] [--workers N] [--server URL]
    natspull consume STREAM CONSUMER [--server URL] [--count N] [--timeout S] [--no-ack] [--json]
    natspull publish SUBJECT [DATA|-] [--count N] [--server URL]
    natspull server [--port P] [--store-dir DIR]

Everything goes through the public API (``natspull``, ``natspull.testing``), as
an application would. Expected failures end with one line on stderr and an exit
code (``_EPILOG``); a traceback means a bug.

Signals belong to the main thread. SIGHUP (the terminal closed) is treated
like SIGTERM, unless it was ignored when the program started (``nohup``).
While messages flow, SIGINT/SIGTERM/SIGHUP go to ``natspull.shutdown_on_signals``
(first: drain, second: stop). Outside that window SIGTERM and SIGHUP raise
KeyboardInterrupt, like SIGINT, so all three end the same way: the embedded
nats-server is stopped and its temporary store dir removed. A nats-server the
CLI starts also dies when the CLI is killed (see ``natspull.testing``).

Progress goes to stdout: a ``rich`` bar on a terminal (the ``progress`` extra,
imported only then), plain lines otherwise.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol, TextIO
from urllib.parse import urlsplit

import natspull

from ._redact import redact

if TYPE_CHECKING:
    from natspull.testing import NatsServer

__all__ = ["main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_CONNECT = 4
EXIT_INTERRUPTED = 130

_DEFAULT_URL = "nats://127.0.0.1:4222"
_PUBLISH_CHUNK = 1000  # demo: messages per publish_many call, one progress step each
_POLL = 0.05  # seconds between progress refreshes while worker threads consume

_EPILOG = """\
exit codes:
  0    success; consume and server also exit 0 when SIGINT/SIGTERM/SIGHUP
       ends them (consume drains first: every printed message is acked)
  1    error (the server refused, nats-server missing or failing to start, ...)
  2    usage: bad arguments
  3    not found: stream or consumer (publish: no stream stores the subject)
  4    cannot connect to the server
  130  interrupted: a demo ended early by SIGINT/SIGTERM/SIGHUP (it drains
       and prints what it handled), or any command interrupted before it
       started its work

The default server is $NATS_URL, else nats://127.0.0.1:4222 (demo: an embedded
nats-server unless --server is given). Comma-separated URLs are a server list.
"""


class _CliError(Exception):
    """An expected failure: a one-line message for stderr and the exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    """Run the command line with *argv* (default: ``sys.argv[1:]``) and return the exit code.

    Never raises for an expected error: it prints one line on stderr and
    returns the code documented in ``natspull --help``. Main thread (signals).
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help or a usage error; argparse has printed it
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    run: Callable[[argparse.Namespace], int] = args.run
    with _logging(args.verbose):
        try:
            with _stop_signals_as_interrupt():
                return run(args)
        except _CliError as exc:
            return _fail(exc.code, str(exc))
        except KeyboardInterrupt:
            print("natspull: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except (
            natspull.StreamNotFoundError,
            natspull.ConsumerNotFoundError,
            natspull.ConsumerDeletedError,
        ) as exc:
            return _fail(EXIT_NOT_FOUND, str(exc))
        except natspull.ConnectError as exc:
            return _fail(EXIT_CONNECT, str(exc))
        except natspull.Error as exc:
            return _fail(EXIT_ERROR, str(exc))
        except ValueError as exc:  # natspull checks arguments late (e.g. payload > max_payload)
            return _fail(EXIT_USAGE, str(exc))
        except BrokenPipeError:  # the reader of stdout went away
            _silence_stdout()
            return _fail(EXIT_ERROR, "stdout was closed")


def _fail(code: int, message: str) -> int:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    print(f"natspull: error: {lines[0] if lines else 'failed'}", file=sys.stderr)
    return code


# ---------------------------------------------------------------- arguments


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="natspull",
        description="Blocking JetStream pull consumers on nats-py: demo, consume, publish, dev server.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"natspull {natspull.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="count", default=0, help="log natspull warnings (-vv: also info)"
    )
    default_url = os.environ.get("NATS_URL") or _DEFAULT_URL
    server_help = f"default: $NATS_URL, else {_DEFAULT_URL}"

    def command(
        name: str, help: str, run: Callable[[argparse.Namespace], int], more: str = ""
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help,
            description=f"{help}.\n\n{more}" if more else f"{help}.",
            parents=[common],
            epilog=_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(run=run)
        return sub

    demo = command(
        "demo",
        "publish N messages to a fresh stream, consume and ack them, show the throughput",
        _cmd_demo,
        "Creates a stream and a durable pull consumer (explicit ack), publishes with\n"
        "js.publish_many and consumes with a for-loop over consumer.messages() (or\n"
        "consumer.consume() with --workers). The first SIGINT/SIGTERM/SIGHUP drains: what is\n"
        "already delivered is still handled and acked, then the counts are printed and\n"
        "the exit code is 130. The stream is deleted at the end.",
    )
    demo.add_argument("--messages", type=_int_at_least(1), default=10_000, metavar="N", help="default 10000")
    demo.add_argument("--size", type=_int_at_least(0), default=128, metavar="BYTES", help="default 128")
    demo.add_argument(
        "--workers",
        type=_int_at_least(1),
        metavar="N",
        help="consume with consumer.consume(handler, workers=N) (default: a for-loop over messages())",
    )
    demo.add_argument(
        "--server",
        type=_server_urls,
        metavar="URL",
        help="use this server and remove the stream afterwards (default: an embedded nats-server)",
    )

    consume = command(
        "consume",
        "print the messages of a pull consumer and ack each one after printing it",
        _cmd_consume,
        "Each message is written and flushed before it is acked (unless --no-ack), so every\n"
        "printed message is acked and none is acked unprinted. The first SIGINT/SIGTERM/SIGHUP\n"
        "drains (stops pulling, prints and acks what was already delivered) and exits 0;\n"
        "a second one stops at once and hands the rest back to the server (NAK).",
    )
    consume.add_argument("stream")
    consume.add_argument("consumer")
    consume.add_argument("--server", type=_server_urls, default=default_url, metavar="URL", help=server_help)
    consume.add_argument("--count", type=_int_at_least(1), metavar="N", help="stop after N messages")
    consume.add_argument(
        "--timeout", type=_positive_seconds, metavar="S", help="exit when no message arrives for S seconds"
    )
    consume.add_argument("--no-ack", action="store_true", help="print without acking")
    consume.add_argument(
        "--json",
        action="store_true",
        help='one JSON object per line: {"subject", "stream_seq", "consumer_seq", "num_delivered", '
        '"headers", "data"}; "data" is the payload as text when it is valid UTF-8, otherwise the '
        'object has "data_b64" (base64) instead',
    )

    publish = command(
        "publish", "publish to a stream with acks and print the stream and last sequence", _cmd_publish
    )
    publish.add_argument("subject")
    publish.add_argument("data", nargs="?", default="", metavar="DATA|-", help="payload; - reads stdin")
    publish.add_argument("--count", type=_int_at_least(1), default=1, metavar="N", help="publish N copies")
    publish.add_argument("--server", type=_server_urls, default=default_url, metavar="URL", help=server_help)

    server = command(
        "server",
        "run a local nats-server with JetStream in the foreground until SIGINT/SIGTERM/SIGHUP",
        _cmd_server,
    )
    server.add_argument("--port", type=_port, default=4222, metavar="P", help="client port (default 4222)")
    server.add_argument(
        "--store-dir", metavar="DIR", help="JetStream store (default: a temporary dir, removed on exit)"
    )
    return parser


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def _port(text: str) -> int:
    value = _int_at_least(1)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port (1-65535), got {value}")
    return value


def _server_urls(text: str) -> list[str]:
    """``URL[,URL...]`` checked here: nats-py fails badly on a malformed port."""
    urls = [url.strip() for url in text.split(",") if url.strip()]
    if not urls:
        raise argparse.ArgumentTypeError("expected a server URL such as nats://127.0.0.1:4222")
    for url in urls:
        try:
            parts = urlsplit(url if "://" in url else f"nats://{url}")
            parts.port  # noqa: B018  # raises ValueError for a bad port
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid server URL {url!r}") from None
        if not parts.hostname:
            raise argparse.ArgumentTypeError(f"invalid server URL {url!r}: no host")
    return urls


# ------------------------------------------------------------ process setup


@contextlib.contextmanager
def _logging(verbosity: int) -> Iterator[None]:
    """Route natspull's log to stderr: errors only by default, warnings with -v, info with -vv.

    Warnings are hidden by default because they repeat what the exit message says.
    """
    logger = logging.getLogger("natspull")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    previous = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.ERROR if verbosity == 0 else logging.WARNING if verbosity == 1 else logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous[0])
        logger.propagate = previous[1]


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _stop_signals() -> tuple[signal.Signals, ...]:
    """The signals that end a command: SIGINT, SIGTERM and SIGHUP (a closed terminal).

    SIGHUP only when it is not ignored: ``nohup natspull server`` must survive the terminal.
    Main thread only (reads the current handler).
    """
    hangup = getattr(signal, "SIGHUP", None)  # not on Windows
    if hangup is None or signal.getsignal(hangup) is signal.SIG_IGN:
        return (signal.SIGINT, signal.SIGTERM)
    return (signal.SIGINT, signal.SIGTERM, hangup)


@contextlib.contextmanager
def _stop_signals_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt, so they end a command like Ctrl-C.

    Main thread only; elsewhere it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in _stop_signals() if sig != signal.SIGINT}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _silence_stdout() -> None:
    """After EPIPE: point stdout at /dev/null so the interpreter's final flush stays quiet."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _connect(servers: list[str]) -> natspull.Client:
    """Blocks until connected (at most 2 s); raises natspull.ConnectError."""
    return natspull.connect(servers, name="natspull-cli")


def _start_server(port: int | None = None, store_dir: str | None = None) -> NatsServer:
    """Start a local nats-server with JetStream; raise _CliError when it cannot start.

    The caller must ``stop()`` the returned server; on failure nothing is left behind.
    """
    from natspull.testing import NatsServer

    server = NatsServer(port=port, store_dir=store_dir)
    try:
        server.start()
    except FileNotFoundError as exc:
        server.stop()
        raise _CliError(str(exc)) from None
    except (RuntimeError, TimeoutError) as exc:
        server.stop()
        text = str(exc)
        if "address already in use" in text.lower():
            raise _CliError(f"cannot start nats-server: port {server.port} is already in use") from None
        raise _CliError(f"cannot start nats-server: {text}") from None
    except BaseException:
        server.stop()
        raise
    return server


# ------------------------------------------------------------------ consume


def _bind(js: natspull.JetStream, stream: str, name: str) -> natspull.Consumer:
    try:
        return js.consumer(stream, name)
    except natspull.StreamNotFoundError:
        raise _CliError(f"stream {stream!r} not found", EXIT_NOT_FOUND) from None
    except natspull.ConsumerNotFoundError:
        raise _CliError(f"consumer {name!r} not found on stream {stream!r}", EXIT_NOT_FOUND) from None


def _human_line(msg: natspull.Msg) -> str:
    meta = msg.metadata
    parts = [msg.subject, f"seq={meta.sequence.stream}"]
    if meta.num_delivered > 1:
        parts.append(f"delivered={meta.num_delivered}")
    if msg.headers:
        parts.append("headers=" + json.dumps(msg.headers, ensure_ascii=False))
    parts.append("data=" + msg.data.decode("utf-8", errors="replace"))
    return " ".join(parts) + "\n"


def _json_line(msg: natspull.Msg) -> str:
    meta = msg.metadata
    record: dict[str, Any] = {
        "subject": msg.subject,
        "stream_seq": meta.sequence.stream,
        "consumer_seq": meta.sequence.consumer,
        "num_delivered": meta.num_delivered,
        "headers": dict(msg.headers or {}),
    }
    try:
        record["data"] = msg.data.decode("utf-8")
    except UnicodeDecodeError:
        record["data_b64"] = base64.b64encode(msg.data).decode("ascii")
    return json.dumps(record) + "\n"


def _cmd_consume(args: argparse.Namespace) -> int:
    """Print, flush, then ack: a printed message is always acked, an acked one always printed."""
    out = sys.stdout
    if not args.json and isinstance(out, io.TextIOWrapper):
        out.reconfigure(errors="replace")  # payload text on a stdout that cannot encode it
    render = _json_line if args.json else _human_line
    printed = 0
    with _connect(args.server) as client:
        consumer = _bind(client.jetstream(), args.stream, args.consumer)
        with (
            consumer.messages(stop_after=args.count) as msgs,
            natspull.shutdown_on_signals(msgs, signals=_stop_signals()) as signals,
        ):
            while True:
                try:
                    msg = msgs.next(timeout=args.timeout)
                except natspull.IteratorClosedError:  # drained (signal) or --count reached
                    break
                except natspull.TimeoutError:  # --timeout: idle; NAK anything racing in, unprinted
                    msgs.stop()
                    break
                try:
                    out.write(render(msg))
                    out.flush()
                except BrokenPipeError:  # the reader left (`| head`): this one was not printed
                    msg.nak()
                    msgs.stop()
                    _silence_stdout()
                    break
                if not args.no_ack:
                    msg.ack()
                printed += 1
        interrupted = signals.received > 0
    # Leaving the client's block flushed every ack (Client.close).
    if interrupted:
        print(f"natspull: interrupted: drained after {printed} message(s)", file=sys.stderr)
    return EXIT_OK


# ------------------------------------------------------------------ publish


def _cmd_publish(args: argparse.Namespace) -> int:
    data = sys.stdin.buffer.read() if args.data == "-" else os.fsencode(args.data)
    subject: str = args.subject
    count: int = args.count
    with _connect(args.server) as client:
        js = client.jetstream()
        try:
            # publish_many pipelines the acks; one message needs no pipeline
            acks = [js.publish(subject, data)] if count == 1 else js.publish_many([(subject, data)] * count)
        except natspull.JetStreamAPIError as exc:
            if exc.code == 503:
                raise _CliError(f"no stream stores subject {subject!r}", EXIT_NOT_FOUND) from None
            raise
    noun = "message" if count == 1 else "messages"
    print(f"published {count} {noun} to stream {acks[-1].stream}, last seq {acks[-1].seq}")
    return EXIT_OK


# ------------------------------------------------------------------- server


def _cmd_server(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in _stop_signals()}
    try:
        server = _start_server(args.port, args.store_dir)
        try:
            temporary = "" if args.store_dir else " (temporary, removed on exit)"
            print(f"nats-server with JetStream listening on {server.url}")
            print(f"  monitoring  {server.monitor_url}")
            print(f"  store dir   {server.store_dir}{temporary}")
            print(f"  log         {server.log_path}")
            print("Ctrl-C or SIGTERM stops it.", flush=True)
            while not stop.wait(0.2):
                if not server.running:
                    raise _CliError(f"nats-server exited unexpectedly; see {server.log_path}")
        finally:
            server.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("nats-server stopped", flush=True)
    return EXIT_OK


# --------------------------------------------------------------------- demo


class _Progress(Protocol):
    def begin(self, label: str, total: int) -> None: ...

    def update(self, done: int) -> None: ...

    def end(self, done: int) -> None: ...

    def close(self) -> None: ...


class _PlainProgress:
    """A line per tenth of the work: readable in logs and pipes."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._label = ""
        self._total = 1
        self._shown = -1  # the last tenth printed

    def begin(self, label: str, total: int) -> None:
        self._label, self._total, self._shown = label, max(total, 1), 0

    def update(self, done: int) -> None:
        tenth = done * 10 // self._total
        if tenth > self._shown:
            self._shown = tenth
            self._line(done)

    def end(self, done: int) -> None:
        if done * 10 // self._total != self._shown or done < self._total:
            self._line(done)

    def close(self) -> None:
        return None

    def _line(self, done: int) -> None:
        percent = done * 100 // self._total
        print(f"{self._label:<8} {done:>10,}/{self._total:,} ({percent}%)", file=self._out, flush=True)


class _RichProgress:
    """A live bar per phase, redrawn at most 10 times a second."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            Task,
            TaskID,
            TaskProgressColumn,
            TimeElapsedColumn,
        )
        from rich.text import Text

        class RateColumn(ProgressColumn):
            def render(self, task: Task) -> Text:
                speed = task.finished_speed or task.speed
                return Text(f"{speed:,.0f} msgs/s" if speed else "", style="progress.data.speed")

        self._progress = Progress(
            "[progress.description]{task.description:<8}",
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            RateColumn(),
            TimeElapsedColumn(),
        )
        self._task: TaskID | None = None
        self._last = 0.0

    def begin(self, label: str, total: int) -> None:
        if self._task is None:
            self._progress.start()
        self._task = self._progress.add_task(label, total=total)

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self._last >= 0.05 and self._task is not None:
            self._last = now
            self._progress.update(self._task, completed=done)

    def end(self, done: int) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=done)
            self._progress.stop_task(self._task)

    def close(self) -> None:
        self._progress.stop()


def _make_progress() -> _Progress:
    if sys.stdout.isatty():
        try:
            return _RichProgress()
        except ImportError:  # the `progress` extra is not installed
            pass
    return _PlainProgress(sys.stdout)


def _rate(count: int, size: int, seconds: float) -> str:
    seconds = max(seconds, 1e-9)
    return (
        f"{count:,} msgs in {seconds:.2f} s: {count / seconds:,.0f} msgs/s, "
        f"{count * size / seconds / 1e6:,.2f} MB/s"
    )


class _Demo:
    """One run of ``natspull demo`` against a connected client."""

    def __init__(
        self, client: natspull.Client, args: argparse.Namespace, where: str, *, embedded: bool
    ) -> None:
        self._client = client
        self._embedded = embedded  # the whole server goes away after the run
        self._n: int = args.messages
        self._size: int = args.size
        self._workers: int | None = args.workers
        self._where = where
        self._progress = _make_progress()
        # Guards the four counters below: workers' handlers update them while the
        # main thread reads them. Leaf lock; held for a few additions only.
        self._lock = threading.Lock()
        self.published = 0
        self.consumed = 0
        self.acked = 0
        self.redelivered = 0
        self._publish_seconds = 0.0
        self._consume_seconds = 0.0

    def run(self) -> int:
        js = self._client.jetstream()
        suffix = uuid.uuid4().hex[:8]
        stream, subject = f"NATSPULL_DEMO_{suffix}", f"natspull.demo.{suffix}"
        mode = f"consume() with {self._workers} workers" if self._workers else "a for-loop over messages()"
        print(f"natspull demo: {self._n:,} messages of {self._size} bytes, {mode}")
        print(f"server   {self._where}")
        if self._size > self._client.max_payload:
            raise _CliError(
                f"--size {self._size} is larger than the server's max_payload "
                f"({self._client.max_payload} bytes)",
                EXIT_USAGE,
            )
        js.add_stream(name=stream, subjects=[subject])
        try:
            consumer = js.add_consumer(stream, durable_name="demo", ack_policy=natspull.AckPolicy.EXPLICIT)
            print(f"stream   {stream} (subject {subject}), durable pull consumer 'demo', explicit ack")
            started = time.monotonic()
            try:
                try:
                    self._publish(js, subject)
                    if self._workers:
                        self._consume_workers(consumer, self._workers)
                    else:
                        self._consume_loop(consumer)
                finally:
                    self._progress.close()
            except KeyboardInterrupt:  # outside the drain window (publishing, starting up)
                pass
            elapsed = time.monotonic() - started
        finally:
            self._delete_stream(js, stream)
        interrupted = self.consumed < self._n
        self._report(elapsed, interrupted)
        return EXIT_INTERRUPTED if interrupted else EXIT_OK

    def _publish(self, js: natspull.JetStream, subject: str) -> None:
        payload = (b"natspull " * (self._size // 9 + 1))[: self._size]
        self._progress.begin("publish", self._n)
        started = time.monotonic()
        try:
            while self.published < self._n:
                chunk = min(_PUBLISH_CHUNK, self._n - self.published)
                js.publish_many([(subject, payload)] * chunk)
                self.published += chunk
                self._progress.update(self.published)
        finally:
            self._publish_seconds = time.monotonic() - started
            self._progress.end(self.published)

    def _handle(self, msg: natspull.Msg) -> int:
        """Ack one message and count it; returns the new consumed count. Any thread."""
        redelivered = msg.metadata.num_delivered > 1
        msg.ack()
        with self._lock:
            self.consumed += 1
            self.acked += 1
            self.redelivered += redelivered
            return self.consumed

    def _consume_loop(self, consumer: natspull.Consumer) -> None:
        self._progress.begin("consume", self._n)
        started = time.monotonic()
        try:
            with (
                consumer.messages(stop_after=self._n) as msgs,
                natspull.shutdown_on_signals(msgs, signals=_stop_signals()),
            ):
                for msg in msgs:
                    self._progress.update(self._handle(msg))
        finally:
            self._consume_seconds = time.monotonic() - started
            self._progress.end(self.consumed)

    def _consume_workers(self, consumer: natspull.Consumer, workers: int) -> None:
        done = threading.Event()  # set by the handler that reaches N; the main thread drains

        def handler(msg: natspull.Msg) -> None:
            if self._handle(msg) >= self._n:
                done.set()

        self._progress.begin("consume", self._n)
        started = time.monotonic()
        try:
            ctx = consumer.consume(handler, workers=workers)
            with ctx, natspull.shutdown_on_signals(ctx, signals=_stop_signals()):
                while not ctx.wait(_POLL):
                    if done.is_set():
                        ctx.drain()
                    self._progress.update(self.consumed)
        finally:
            self._consume_seconds = time.monotonic() - started
            self._progress.end(self.consumed)

    def _delete_stream(self, js: natspull.JetStream, stream: str) -> None:
        try:
            js.delete_stream(stream)
        except natspull.Error as exc:
            if not self._embedded:
                print(f"natspull: warning: could not delete stream {stream}: {exc}", file=sys.stderr)

    def _report(self, elapsed: float, interrupted: bool) -> None:
        if self.published:
            print(f"publish  {_rate(self.published, self._size, self._publish_seconds)}")
        if self.consumed:
            print(f"consume  {_rate(self.consumed, self._size, self._consume_seconds)}")
        if interrupted:
            print(f"interrupted: handled {self.consumed:,} of {self._n:,} messages")
        print("summary")
        print(f"  published    {self.published:,}")
        print(f"  consumed     {self.consumed:,}")
        print(f"  acked        {self.acked:,}")
        print(f"  redelivered  {self.redelivered:,}")
        print(f"  elapsed      {elapsed:.2f} s", flush=True)


def _cmd_demo(args: argparse.Namespace) -> int:
    servers: list[str] | None = args.server
    if servers is not None:
        with _connect(servers) as client:
            version = client.server_info.get("version", "?")
            where = f"{', '.join(redact(s) for s in servers)} (nats-server {version})"
            return _Demo(client, args, where, embedded=False).run()
    server = _start_server()
    try:
        with _connect([server.url]) as client:
            version = client.server_info.get("version", "?")
            where = f"{server.url} (embedded nats-server {version}, store {server.store_dir})"
            return _Demo(client, args, where, embedded=True).run()
    finally:
        server.stop()
