"""``natspull demo``: publish N messages to a fresh stream, consume and ack them, show the throughput.

Owns one run: the stream and its durable consumer (deleted at the end), publishing in chunks,
consuming with a for-loop over ``messages()`` or with ``consume()`` and worker threads, the
counters those threads update, the report, and the embedded nats-server when no ``--server``
is given. The first stop signal drains; an interrupted run exits with code 130.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid

import natspull

from .._redact import redact
from ._common import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CliError, connect, start_server, stop_signals
from ._progress import make_progress

__all__ = ["cmd_demo"]

_PUBLISH_CHUNK = 1000  # demo: messages per publish_many call, one progress step each
_POLL = 0.05  # seconds between progress refreshes while worker threads consume


def _rate(count: int, size: int, seconds: float) -> str:
    seconds = max(seconds, 1e-9)
    return (
        f"{count:,} msgs in {seconds:.2f} s: {count / seconds:,.0f} msgs/s, "
        f"{count * size / seconds / 1e6:,.2f} MB/s"
    )


class _StopFlag:
    """A :func:`natspull.shutdown_on_signals` target that only records the signal (no lock:
    the handler runs on the main thread, which reads the flag between chunks)."""

    def __init__(self) -> None:
        self.stopped = False

    def drain(self) -> None:
        self.stopped = True

    def stop(self) -> None:
        self.stopped = True


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
        self._progress = make_progress()
        # Guards ``consumed`` while consume()'s workers add to it. Leaf lock; held for an
        # addition only.
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
            raise CliError(
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
                    if self._publish(js, subject):
                        if self._workers:
                            self._consume_workers(consumer, self._workers)
                        else:
                            self._consume_loop(consumer)
                finally:
                    self._progress.close()
            except KeyboardInterrupt:  # a third signal while publishing; Ctrl-C elsewhere
                pass
            elapsed = time.monotonic() - started
        finally:
            self._delete_stream(js, stream)
        interrupted = self.consumed < self._n
        self._report(elapsed, interrupted)
        return EXIT_INTERRUPTED if interrupted else EXIT_OK

    def _publish(self, js: natspull.JetStream, subject: str) -> bool:
        """Publish the messages in chunks; False when a stop signal ended it early.

        A signal here only sets a flag that the loop reads between chunks: a KeyboardInterrupt
        raised wherever the main thread happens to be could land in a lazy import (CPython
        then exits by SIGINT, whatever code main() returns) or inside the publish machinery.
        """
        payload = (b"natspull " * (self._size // 9 + 1))[: self._size]
        self._progress.begin("publish", self._n)
        started = time.monotonic()
        stop = _StopFlag()
        try:
            with natspull.shutdown_on_signals(stop, signals=stop_signals()):
                while self.published < self._n and not stop.stopped:
                    chunk = min(_PUBLISH_CHUNK, self._n - self.published)
                    js.publish_many([(subject, payload)] * chunk)
                    self.published += chunk
                    self._progress.update(self.published)
        finally:
            self._publish_seconds = time.monotonic() - started
            self._progress.end(self.published)
        return not stop.stopped

    def _consume_loop(self, consumer: natspull.Consumer) -> None:
        # What a user's loop would do, nothing more: the redelivered and acked counts come
        # from the iterator's stats at the end, not from parsing each message's metadata.
        self._progress.begin("consume", self._n)
        started = time.monotonic()
        msgs = consumer.messages(stop_after=self._n)
        try:
            with msgs, natspull.shutdown_on_signals(msgs, signals=stop_signals()):
                for msg in msgs:
                    msg.ack()
                    self.consumed += 1
                    self._progress.update(self.consumed)
        finally:
            self._consume_seconds = time.monotonic() - started
            self._count(msgs.stats())
            self._progress.end(self.consumed)

    def _consume_workers(self, consumer: natspull.Consumer, workers: int) -> None:
        done = threading.Event()  # set by the handler that reaches N; the main thread drains

        def handler(msg: natspull.Msg) -> None:
            msg.ack()
            with self._lock:
                self.consumed += 1
                if self.consumed >= self._n:
                    done.set()

        self._progress.begin("consume", self._n)
        started = time.monotonic()
        ctx = consumer.consume(handler, workers=workers)
        try:
            with ctx, natspull.shutdown_on_signals(ctx, signals=stop_signals()):
                while not ctx.wait(_POLL):
                    if done.is_set():
                        ctx.drain()
                    self._progress.update(self.consumed)
        finally:
            self._consume_seconds = time.monotonic() - started
            self._count(ctx.stats())
            self._progress.end(self.consumed)

    def _count(self, stats: natspull.MessagesStats) -> None:
        self.acked, self.redelivered = stats.acked, stats.redelivered

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


def cmd_demo(args: argparse.Namespace) -> int:
    servers: list[str] | None = args.server
    if servers is not None:
        with connect(args) as client:
            version = client.server_info.get("version", "?")
            where = f"{', '.join(redact(s) for s in servers)} (nats-server {version})"
            return _Demo(client, args, where, embedded=False).run()
    server = start_server()
    try:
        with natspull.connect(server.url, name="natspull-cli") as client:
            version = client.server_info.get("version", "?")
            where = f"{server.url} (embedded nats-server {version}, store {server.store_dir})"
            return _Demo(client, args, where, embedded=True).run()
    finally:
        server.stop()
