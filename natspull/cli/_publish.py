"""``natspull publish``: publish a payload (an argument or stdin) with JetStream acks.

Publishes N copies (pipelined with ``publish_many`` when N > 1) and prints the stream and the
last sequence. A subject that no stream stores exits with code 3. Main thread.
"""

from __future__ import annotations

import argparse
import os
import sys

import natspull

from ._common import EXIT_NOT_FOUND, EXIT_OK, CliError, connect

__all__ = ["cmd_publish"]


def cmd_publish(args: argparse.Namespace) -> int:
    data = sys.stdin.buffer.read() if args.data == "-" else os.fsencode(args.data)
    subject: str = args.subject
    count: int = args.count
    with connect(args) as client:
        js = client.jetstream()
        try:
            # publish_many pipelines the acks; one message needs no pipeline
            acks = [js.publish(subject, data)] if count == 1 else js.publish_many([(subject, data)] * count)
        except natspull.JetStreamAPIError as exc:
            if exc.code == 503:
                raise CliError(f"no stream stores subject {subject!r}", EXIT_NOT_FOUND) from None
            raise
    noun = "message" if count == 1 else "messages"
    print(f"published {count} {noun} to stream {acks[-1].stream}, last seq {acks[-1].seq}")
    return EXIT_OK
