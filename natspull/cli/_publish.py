"""``natspull publish``: publish a payload (an argument or stdin) with JetStream acks.

Publishes N copies (pipelined with ``publish_many`` when N > 1) and prints the stream and the
last sequence. Options: ``--header K:V`` (repeatable), ``--msg-id`` (deduplication; a
duplicate is reported, not an error), ``--ttl`` (seconds or "never"), ``--expect-last-seq``
(a wrong one is refused by the server: exit 1, nothing stored). A subject that no stream
stores exits with code 3. Main thread.
"""

from __future__ import annotations

import argparse
import os
import sys

import natspull

from ._common import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, CliError, connect

__all__ = ["cmd_publish"]


def cmd_publish(args: argparse.Namespace) -> int:
    data = sys.stdin.buffer.read() if args.data == "-" else os.fsencode(args.data)
    subject: str = args.subject
    count: int = args.count
    headers = dict(args.header) or None
    with connect(args) as client:
        js = client.jetstream()
        try:
            if count == 1:
                acks = [
                    js.publish(
                        subject,
                        data,
                        headers,
                        msg_id=args.msg_id,
                        ttl=args.ttl,
                        expected_last_sequence=args.expect_last_seq,
                    )
                ]
            else:  # publish_many pipelines the acks
                acks = js.publish_many([natspull.Publish(subject, data, headers, ttl=args.ttl)] * count)
        except natspull.JetStreamAPIError as exc:
            if exc.code == 503:
                raise CliError(f"no stream stores subject {subject!r}", EXIT_NOT_FOUND) from None
            raise
        except (TypeError, ValueError) as exc:  # a header the server would refuse, a payload too large
            raise CliError(str(exc), EXIT_USAGE) from None
    noun = "message" if count == 1 else "messages"
    duplicate = " (a duplicate: already stored)" if acks[-1].duplicate else ""
    print(f"published {count} {noun} to stream {acks[-1].stream}, last seq {acks[-1].seq}{duplicate}")
    return EXIT_OK
