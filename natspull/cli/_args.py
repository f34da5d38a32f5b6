"""The argument parser: the commands, their options, the checks on their values and the help text.

:func:`build_parser` is all :func:`natspull.cli.main` needs from here: each sub-command stores
its ``cmd_*`` function as ``args.run``. A bad value fails in argparse with a usage error (exit
code 2) before anything connects. The ``--help`` epilog documents the exit codes of
:mod:`natspull.cli._common`.
"""

from __future__ import annotations

import argparse
import datetime
import math
import re
from collections.abc import Callable, Sequence

import natspull
from natspull._publish import check_ttl
from natspull._workers import STATUS_MODES, parse_address

from ._common import CONNECTION_ENV, server_urls
from ._consume import cmd_consume
from ._demo import cmd_demo
from ._publish import cmd_publish
from ._server import cmd_server
from ._worker import cmd_worker

__all__ = ["build_parser"]

_DEFAULT_URL = "nats://127.0.0.1:4222"

_EPILOG = """\
exit codes:
  0    success; consume, worker and server also exit 0 when SIGINT/SIGTERM/SIGHUP
       ends them (consume and worker drain first: every handled message is acked)
  1    error (the server refused, nats-server missing or failing to start, ...)
  2    usage: bad arguments
  3    not found: stream or consumer (publish: no stream stores the subject)
  4    cannot connect to the server, or it refused the login (authorization
       violation, bad credentials, TLS failed); the message names the server
  5    worker: a worker process kept dying (5 restarts in a row, none ran 10 s;
       deaths explained by a terminated poison message do not count)
  6    worker: the --init function raised in a worker process (every process
       stops; none is restarted)
  130  interrupted: a demo ended early by SIGINT/SIGTERM/SIGHUP (it drains
       and prints what it handled), or any command interrupted before it
       started its work; worker: forced stop (a second signal, or workers
       killed after --grace)

Connecting: each connection flag (--server, --context, --creds, --nkey, --user,
--password, --token, --tlscert, --tlskey, --tlsca, --tlsfirst) beats its environment
variable ($NATS_URL, $NATS_CONTEXT, $NATS_CREDS, $NATS_NKEY, $NATS_USER, $NATS_PASSWORD,
$NATS_TOKEN, $NATS_CERT, $NATS_KEY, $NATS_CA), which beats the named context (--context
or $NATS_CONTEXT), which beats the selected context (~/.config/nats/context.txt); the
default server is nats://127.0.0.1:4222 (demo: an embedded nats-server unless --server
is given). Comma-separated URLs are a server list. Secrets are never printed.
"""


class _Parser(argparse.ArgumentParser):
    """Runs a command's check of how its options combine (its ``check`` default) once parsed,
    so that a bad combination is a usage error of that command, with its usage line."""

    def parse_known_args(  # type: ignore[override]  # (typeshed's overloads)
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, rest = super().parse_known_args(args, namespace)
        check: Callable[[argparse.ArgumentParser, argparse.Namespace], None] | None = getattr(
            parsed, "check", None
        )
        if check is not None:
            del parsed.check  # the command's own parser checks; its parent need not again
            check(self, parsed)
        return parsed, rest


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="natspull",
        description="Blocking JetStream pull consumers on nats-py: demo, consume, publish, dev server.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"natspull {natspull.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _Parser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="count", default=0, help="log natspull warnings (-vv: also info)"
    )
    server_help = f"default: $NATS_URL, else the context's url, else {_DEFAULT_URL}"

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
        cmd_demo,
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
    demo.set_defaults(check=_check_demo)
    _add_connection_options(
        demo, "use this server and remove the stream afterwards (default: an embedded nats-server)"
    )

    consume = command(
        "consume",
        "print the messages of a pull consumer and ack each one after printing it",
        cmd_consume,
        "Each message is written and flushed before it is acked (unless --no-ack), so every\n"
        "printed message is acked and none is acked unprinted. The first SIGINT/SIGTERM/SIGHUP\n"
        "drains (stops pulling, prints and acks what was already delivered) and exits 0;\n"
        "a second one stops at once and hands the rest back to the server (NAK).\n\n"
        "--ordered reads STREAM in order through an ordered consumer instead (no CONSUMER,\n"
        "nothing to ack; it is deleted on exit), e.g. a dump from a point in time:\n"
        "  natspull consume ORDERS --ordered --since 2026-12-01T00:00:00Z --json > dump\n"
        "When stdout is not a terminal, a progress bar goes to stderr.",
    )
    consume.set_defaults(check=_check_consume)
    consume.add_argument("stream")
    consume.add_argument(
        "consumer", nargs="?", metavar="CONSUMER", help="a durable pull consumer (not with --ordered)"
    )
    consume.add_argument(
        "--ordered",
        action="store_true",
        help="read the stream in order with an ephemeral ordered consumer (ack none)",
    )
    consume.add_argument(
        "--subject",
        action="append",
        metavar="S",
        help="--ordered: only messages on subject S (wildcards allowed; repeat for more)",
    )
    consume.add_argument(
        "--since",
        type=_since,
        metavar="SEQ|TIME",
        help="--ordered: start at stream sequence SEQ (>= 1) or at the first message stored at or "
        "after TIME (RFC 3339 with an offset or Z, e.g. 2026-12-01T00:00:00Z); default: the first",
    )
    _add_connection_options(consume, server_help)
    consume.add_argument("--count", type=_int_at_least(1), metavar="N", help="stop after N messages")
    consume.add_argument(
        "--timeout", type=_positive_seconds, metavar="S", help="exit when no message arrives for S seconds"
    )
    consume.add_argument("--no-ack", action="store_true", help="print without acking")
    consume.add_argument(
        "--group", metavar="G", help="pull in priority group G (required for a consumer with priority groups)"
    )
    consume.add_argument(
        "--min-pending",
        type=_int_at_least(1),
        metavar="N",
        help="overflow policy: be served only while the consumer has at least N messages pending",
    )
    consume.add_argument(
        "--json",
        action="store_true",
        help='one JSON object per line: {"subject", "stream_seq", "consumer_seq", "num_delivered", '
        '"headers", "data"}; "data" is the payload as text when it is valid UTF-8, otherwise the '
        'object has "data_b64" (base64) instead (--ordered: consumer_seq counts within the '
        "current ephemeral consumer and starts again at 1 after natspull recreates it)",
    )

    publish = command(
        "publish", "publish to a stream with acks and print the stream and last sequence", cmd_publish
    )
    publish.add_argument("subject")
    publish.add_argument("data", nargs="?", default="", metavar="DATA|-", help="payload; - reads stdin")
    publish.set_defaults(check=_check_publish)
    publish.add_argument("--count", type=_int_at_least(1), default=1, metavar="N", help="publish N copies")
    publish.add_argument(
        "--header",
        action="append",
        type=_header,
        default=[],
        metavar="K:V",
        help="a header (repeatable)",
    )
    publish.add_argument("--msg-id", metavar="ID", help="Nats-Msg-Id: the stream stores it once")
    publish.add_argument(
        "--ttl", type=_ttl, metavar="SECONDS", help='the message\'s time to live (>= 1, or "never")'
    )
    publish.add_argument(
        "--expect-last-seq",
        type=_int_at_least(0),
        metavar="N",
        help="store only if the stream's last sequence is N (0: empty)",
    )
    _add_connection_options(publish, server_help)

    worker = command(
        "worker",
        "run a handler in worker processes on a durable pull consumer until SIGINT/SIGTERM/SIGHUP",
        cmd_worker,
        "Each of --processes processes imports MODULE:FUNCTION (the current directory is on the\n"
        "import path), connects on its own and runs consumer.consume(FUNCTION, workers=--threads).\n"
        "FUNCTION(msg) acks each message; an exception NAKs it. A process that dies is restarted\n"
        "(backoff 0.5 s doubling to 10 s). The first SIGINT/SIGTERM/SIGHUP drains every process\n"
        "(started and buffered messages are handled and acked) and exits 0; a second one stops at\n"
        "once (buffered messages are NAKed back) and exits 130, as does a drain that takes longer\n"
        "than --grace (the processes are killed). On a terminal a live table shows each process.",
    )
    worker.add_argument("target", metavar="MODULE:FUNCTION", help="the handler, e.g. myapp.jobs:handle")
    worker.add_argument(
        "--init",
        metavar="MODULE:FUNCTION",
        help="called once in each process as FUNCTION(client) with its connected natspull.Client "
        "before it consumes (natspull.worker_client() returns that client in handlers too); if it "
        "raises, every process stops and the exit code is 6 (never restarted)",
    )
    worker.add_argument("--stream", required=True, metavar="S", help="the stream")
    worker.add_argument("--consumer", required=True, metavar="C", help="a durable pull consumer on it")
    worker.add_argument("--processes", type=_int_at_least(1), default=1, metavar="N", help="default 1")
    worker.add_argument(
        "--threads",
        type=_int_at_least(1),
        default=4,
        metavar="M",
        help="handler threads per process (default 4)",
    )
    _add_connection_options(worker, server_help)
    worker.add_argument(
        "--grace",
        type=_positive_seconds,
        default=30.0,
        metavar="SECONDS",
        help="after the first signal, kill processes still running after this long (default 30)",
    )
    worker.add_argument(
        "--status",
        choices=STATUS_MODES,
        default="auto",
        help="live: a table on the terminal; lines: a line per process every --status-interval "
        "seconds; auto (default): live on a terminal, else lines",
    )
    worker.add_argument(
        "--status-interval", type=_positive_seconds, default=10.0, metavar="SECONDS", help="default 10"
    )
    # consume() options: only the ones given reach consume() (its defaults otherwise)
    worker.add_argument(
        "--max-messages",
        type=_int_at_least(1),
        default=argparse.SUPPRESS,
        metavar="N",
        help="messages buffered or in handlers, per process (default 500)",
    )
    worker.add_argument(
        "--max-lease",
        type=_seconds_or_zero,
        default=argparse.SUPPRESS,
        metavar="SECONDS",
        help="keep a running handler's message from being redelivered (+WPI every half ack_wait) "
        "for at most this long; 0: never (default 3600)",
    )
    worker.add_argument(
        "--retry",
        type=_retry,
        default=argparse.SUPPRESS,
        metavar="INITIAL:MAXIMUM|none",
        help="delay the NAK of a failed message: INITIAL seconds, doubling up to MAXIMUM (+/- 20 %%; "
        "default 1:60); none: NAK at once",
    )
    worker.add_argument(
        "--term-after",
        type=_int_at_least(1),
        default=argparse.SUPPRESS,
        metavar="N",
        help="terminate a message whose N-th delivery fails (default: never)",
    )
    worker.add_argument(
        "--auto-ack",
        action="store_true",
        default=argparse.SUPPRESS,
        help="ack what the handler leaves unsettled when it returns (it is NAKed when it raises)",
    )
    worker.add_argument(
        "--batch",
        type=_int_at_least(1),
        default=argparse.SUPPRESS,
        metavar="N",
        help="call the handler with a list of 1 to N messages (those already buffered, or "
        "gathered for --batch-wait)",
    )
    worker.add_argument(
        "--batch-wait",
        type=_seconds_or_zero,
        default=argparse.SUPPRESS,
        metavar="SECONDS",
        help="with --batch: wait this long after the first message for the batch to fill (default 0)",
    )
    worker.add_argument(
        "--key",
        type=_key_spec,
        default=argparse.SUPPRESS,
        metavar="header:NAME|subject",
        help="handle the messages of one key (the value of header NAME, or the subject) one at a "
        "time in stream order, different keys in parallel (per process)",
    )
    worker.add_argument(
        "--handler-timeout",
        type=_positive_seconds,
        default=argparse.SUPPRESS,
        metavar="SECONDS",
        help="NAK (for redelivery) the messages of a handler call running longer than this",
    )
    # the fleet: health, metrics, poison messages, stuck handlers (docs/guides/workers.md)
    worker.add_argument(
        "--http",
        type=_http_address,
        metavar="[HOST:]PORT",
        help="serve /livez, /readyz and /metrics (Prometheus; the metrics extra) on this address "
        "(:9464: every interface; port 0: a free one, printed at start)",
    )
    worker.add_argument(
        "--poison-after",
        type=_poison_after,
        default=3,
        metavar="N|none",
        help="terminate a message that was in a handler at N process deaths (it no longer counts "
        "toward the crash loop); the messages in a dead process's handlers are NAKed at once "
        "(default 3; none: never terminate)",
    )
    worker.add_argument(
        "--dead-letter",
        metavar="SUBJECT",
        help="publish a poison message here before terminating it, with Natspull-Stream, "
        "-Sequence, -Consumer, -Subject and -Reason headers",
    )
    worker.add_argument(
        "--hard-timeout",
        type=_positive_seconds,
        metavar="SECONDS",
        help="replace a process whose handler runs longer (a new process, then SIGKILL to the "
        "stuck one) and NAK its message at once (default: never)",
    )

    worker.add_argument(
        "--create-consumer",
        metavar="FILE.json",
        help="the consumer's configuration as JSON (as `nats consumer info --json` prints its "
        "config): created when missing, updated when a field differs, before any process starts; "
        "a field that cannot change (deliver_policy, ack_policy, ...) differing exits 2 naming it",
    )

    server = command(
        "server",
        "run a local nats-server with JetStream in the foreground until SIGINT/SIGTERM/SIGHUP",
        cmd_server,
    )
    server.add_argument("--port", type=_port, default=4222, metavar="P", help="client port (default 4222)")
    server.add_argument(
        "--store-dir", metavar="DIR", help="JetStream store (default: a temporary dir, removed on exit)"
    )
    return parser


def _check_demo(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``demo`` connects with the connection flags only to the --server given."""
    if args.server is None:
        for dest in [*CONNECTION_ENV, "tlsfirst"]:
            if getattr(args, dest, None) is not None:
                parser.error(f"--{dest} needs --server (without it the demo runs an embedded nats-server)")


def _check_consume(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``consume`` reads either a durable CONSUMER or, with --ordered, the stream itself."""
    if args.ordered and args.consumer is not None:
        parser.error(f"give either CONSUMER ({args.consumer!r}) or --ordered, not both")
    if not args.ordered:
        if args.consumer is None:
            parser.error("give a CONSUMER (a durable pull consumer's name), or --ordered to read the stream")
        for name, value in (("--subject", args.subject), ("--since", args.since)):
            if value is not None:
                parser.error(f"{name} needs --ordered (a durable consumer's filter and start are its config)")


# RFC 3339 date-time: the offset (or Z) is required; the seconds' fraction is any length.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


def _since(text: str) -> int | datetime.datetime:
    """``--since``: a stream sequence (int >= 1) or an aware datetime (RFC 3339)."""
    if re.fullmatch("[0-9]+", text):
        if int(text) >= 1:
            return int(text)
    else:
        match = _RFC3339.fullmatch(text)
        if match:
            year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
            try:
                offset = datetime.timedelta(hours=int(off_h or 0), minutes=int(off_m or 0))
                if zulu is None and sign == "-":
                    offset = -offset
                return datetime.datetime(
                    int(year),
                    int(month),
                    int(day),
                    int(hour),
                    int(minute),
                    int(second),
                    # microseconds, truncated: the start is never after the time given
                    int((fraction or "0")[:6].ljust(6, "0")),
                    tzinfo=datetime.timezone(offset),
                )
            except ValueError:  # e.g. month 13, February 30, a leap second, an offset >= 24 h
                pass
    raise argparse.ArgumentTypeError(
        f"expected a stream sequence (an integer >= 1) or an RFC 3339 time with an offset or Z "
        f"(e.g. 2026-12-01T00:00:00Z), got {text!r}"
    )


def _check_publish(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``publish``'s --msg-id and --expect-last-seq hold for one message, not --count copies."""
    if args.count > 1:
        for option, value in (("--msg-id", args.msg_id), ("--expect-last-seq", args.expect_last_seq)):
            if value is not None:
                parser.error(f"{option} applies to one message: not with --count {args.count}")


def _header(text: str) -> tuple[str, str]:
    """``K:V`` (spaces around either part are dropped); the name is checked when published."""
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME:VALUE, got {text!r}")
    return name.strip(), value.strip()


def _ttl(text: str) -> float | str:
    """Seconds >= 1 or "never" (natspull's check, as an argument error)."""
    try:
        value: float | str = text if text == "never" else float(text)
        check_ttl(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected seconds >= 1 or "never", got {text!r}') from None
    return value


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


def _key_spec(text: str) -> str:
    kind, _, name = text.partition(":")
    if text == "subject" or (kind == "header" and name.strip()):
        return text
    raise argparse.ArgumentTypeError(f"expected header:NAME or subject, got {text!r}")


def _positive_seconds(text: str) -> float:
    return _seconds(text, allow_zero=False)


def _seconds_or_zero(text: str) -> float:
    return _seconds(text, allow_zero=True)


def _seconds(text: str, *, allow_zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise argparse.ArgumentTypeError(f"must be a number of seconds {bound}, got {text!r}")
    return value


def _retry(text: str) -> natspull.Backoff | None:
    """``--retry``: ``INITIAL:MAXIMUM`` seconds (a Backoff doubling between them) or ``none``."""
    if text.strip().lower() == "none":
        return None
    initial, sep, maximum = text.partition(":")
    try:
        if not sep:
            raise ValueError("expected INITIAL:MAXIMUM")
        return natspull.Backoff(initial=float(initial), maximum=float(maximum))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected INITIAL:MAXIMUM seconds or none, got {text!r}: {exc}"
        ) from None


def _http_address(text: str) -> str:
    try:
        parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _poison_after(text: str) -> int | None:
    if text.strip().lower() == "none":
        return None
    return _int_at_least(1)(text)


def _port(text: str) -> int:
    value = _int_at_least(1)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port (1-65535), got {value}")
    return value


def _server_urls(text: str) -> list[str]:
    try:
        return server_urls(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_connection_options(parser: argparse.ArgumentParser, server_help: str) -> None:
    """The connection flags of every command that connects (see ``_common.connect_options``)."""
    group = parser.add_argument_group(
        "connection",
        "Each flag falls back to the variable the nats CLI reads ($NATS_URL, $NATS_CONTEXT, $NATS_USER,\n"
        "$NATS_PASSWORD, $NATS_TOKEN, $NATS_CREDS, $NATS_NKEY, $NATS_CERT, $NATS_KEY, $NATS_CA), then to\n"
        "the named context (--context), then to the selected one (nats context select).",
    )
    group.add_argument("--server", type=_server_urls, metavar="URL[,URL]", help=server_help)
    group.add_argument(
        "--context",
        metavar="NAME|FILE",
        help="a nats CLI context: a name (~/.config/nats/context/NAME.json) or the path of its file",
    )
    group.add_argument("--creds", metavar="FILE", help="a credentials file (user JWT and seed)")
    group.add_argument("--nkey", metavar="FILE", help="a user nkey seed file")
    group.add_argument("--user", metavar="USER", help="user name (with --password)")
    group.add_argument(
        "--password", metavar="PASSWORD", help="password (prefer $NATS_PASSWORD: argv is public)"
    )
    group.add_argument("--token", metavar="TOKEN", help="authentication token (prefer $NATS_TOKEN)")
    group.add_argument("--tlscert", metavar="FILE", help="TLS client certificate (PEM)")
    group.add_argument("--tlskey", metavar="FILE", help="TLS client key (PEM)")
    group.add_argument("--tlsca", metavar="FILE", help="CA certificate(s) that signed the server's (PEM)")
    group.add_argument(
        "--tlsfirst", action="store_true", default=None, help="TLS handshake before the server's INFO"
    )
