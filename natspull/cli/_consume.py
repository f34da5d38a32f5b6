"""``natspull consume``: print the messages of a pull consumer, each flushed before it is acked.

Owns the human and ``--json`` line formats and the print-flush-ack order that makes every
printed message acked and no message acked unprinted. With ``--ordered`` it reads the stream
through an ordered consumer instead (nothing to ack; the consumer is deleted on exit), with a
progress bar on stderr when stdout is not a terminal. SIGINT/SIGTERM/SIGHUP go to
``natspull.shutdown_on_signals`` (first: drain, second: stop). Main thread.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import io
import json
import sys
from typing import Any

import natspull

from ._common import EXIT_NOT_FOUND, EXIT_OK, CliError, connect, silence_stdout, stop_signals
from ._progress import Progress, make_progress

__all__ = ["cmd_consume"]


def _bind(js: natspull.JetStream, stream: str, name: str) -> natspull.Consumer:
    try:
        return js.consumer(stream, name)
    except natspull.StreamNotFoundError:
        raise CliError(f"stream {stream!r} not found", EXIT_NOT_FOUND) from None
    except natspull.ConsumerNotFoundError:
        raise CliError(f"consumer {name!r} not found on stream {stream!r}", EXIT_NOT_FOUND) from None


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


def cmd_consume(args: argparse.Namespace) -> int:
    """Print, flush, then ack: a printed message is always acked, an acked one always printed."""
    out = sys.stdout
    if not args.json and isinstance(out, io.TextIOWrapper):
        out.reconfigure(errors="replace")  # payload text on a stdout that cannot encode it
    if args.ordered:
        return _consume_ordered(args)
    render = _json_line if args.json else _human_line
    printed = 0
    with connect(args) as client:
        consumer = _bind(client.jetstream(), args.stream, args.consumer)
        with (
            consumer.messages(stop_after=args.count, group=args.group, min_pending=args.min_pending) as msgs,
            natspull.shutdown_on_signals(msgs, signals=stop_signals()) as signals,
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
                    silence_stdout()
                    break
                if not args.no_ack:
                    msg.ack()
                printed += 1
        interrupted = signals.received > 0
    # Leaving the client's block flushed every ack (Client.close).
    if interrupted:
        print(f"natspull: interrupted: drained after {printed} message(s)", file=sys.stderr)
    return EXIT_OK


def _ordered_messages(ordered: natspull.OrderedConsumer, count: int | None) -> natspull.OrderedMessages:
    try:
        return ordered.messages(stop_after=count)
    except natspull.StreamNotFoundError:
        raise CliError(f"stream {ordered.stream!r} not found", EXIT_NOT_FOUND) from None


def _consume_ordered(args: argparse.Namespace) -> int:
    """``--ordered``: print the stream's messages in order; the ordered consumer is deleted on exit.

    There is nothing to ack (ack policy none). Progress goes to stderr when stdout is a file
    or a pipe, so stdout carries the messages only.
    """
    since = args.since  # None, a stream sequence or an aware datetime (checked by the parser)
    progress = None if sys.stdout.isatty() else make_progress(sys.stderr)
    with connect(args) as client:
        ordered = client.jetstream().ordered_consumer(
            args.stream,
            filter_subjects=args.subject,
            opt_start_seq=since if isinstance(since, int) else None,
            opt_start_time=since if isinstance(since, datetime.datetime) else None,
        )
        # Leaving this block deletes the ordered consumer on the server (ordered.close()).
        with ordered, _ordered_messages(ordered, args.count) as msgs:
            with natspull.shutdown_on_signals(msgs, signals=stop_signals()) as signals:
                try:
                    printed = _print_ordered(msgs, args, progress)
                finally:
                    if progress is not None:
                        progress.close()
            interrupted = signals.received > 0
    if interrupted:
        print(f"natspull: interrupted: drained after {printed} message(s)", file=sys.stderr)
    return EXIT_OK


def _print_ordered(msgs: natspull.Messages, args: argparse.Namespace, progress: Progress | None) -> int:
    """Print until --count, --timeout (idle), a drain (signal) or a closed stdout; return the count."""
    out = sys.stdout
    render = _json_line if args.json else _human_line
    printed = 0
    while True:
        try:
            msg = msgs.next(timeout=args.timeout)
        except (natspull.IteratorClosedError, natspull.TimeoutError):  # drained, --count, --timeout
            break
        try:
            out.write(render(msg))
            out.flush()
        except BrokenPipeError:  # the reader left (`| head`)
            silence_stdout()
            break
        printed += 1
        if progress is not None:
            # What is left that matches the filters, as the server counts it for this message.
            total = printed + msg.metadata.num_pending
            if args.count is not None:
                total = min(total, args.count)
            if printed == 1:
                progress.begin("consume", total)
            progress.update(printed, total)
    if progress is not None and printed:
        progress.end(printed)
    return printed
