"""A worker process for tests/integration/test_priority.py: ``consume()`` on a priority group, with a ledger.

Usage: ``python priority_worker.py URL STREAM CONSUMER GROUP``. Prints ``ready`` once pulling,
``event <kind> <pin_id>`` for each ConsumerEvent, and ``msg <stream seq> <num_delivered>`` for each
message *before* acking it synchronously (so a killed worker may have printed a message it did
not ack - the server redelivers that one - but never acked one it did not print). A line
``drain`` on stdin drains and exits (printing ``done``).
"""

from __future__ import annotations

import sys

import natspull


def main() -> None:
    url, stream, name, group = sys.argv[1:5]

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def handler(msg: natspull.Msg) -> None:
        meta = msg.metadata
        say(f"msg {meta.sequence.stream} {meta.num_delivered}")
        msg.ack_sync(timeout=5)

    def on_event(event: natspull.ConsumerEvent) -> None:
        say(f"event {event.kind} {event.pin_id}")

    with natspull.connect(url) as client:
        consumer = client.jetstream().consumer(stream, name)
        ctx = consumer.consume(handler, group=group, on_event=on_event, max_messages=10)
        say("ready")
        for line in sys.stdin:
            if line.strip() == "drain":
                break
        ctx.drain()
        ctx.wait(timeout=10)
        say("done")


if __name__ == "__main__":
    main()
