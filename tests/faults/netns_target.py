"""The handler of tests/faults/test_netns.py's worker hosts (imported by spawned processes).

Each handled message appends ``<stream seq> <num_delivered> <pid>`` to $NATSPULL_NETNS_LEDGER
with one O_APPEND write (atomic for a line this short), then acks. $NATSPULL_NETNS_DELAY
seconds of "work" per message keep the run long enough for the faults to land mid-run.
"""

from __future__ import annotations

import os
import time

import natspull

LEDGER = os.environ.get("NATSPULL_NETNS_LEDGER", "")
DELAY = float(os.environ.get("NATSPULL_NETNS_DELAY", "0.005"))


def handle(msg: natspull.Msg) -> None:
    time.sleep(DELAY)
    meta = msg.metadata
    line = f"{meta.sequence.stream} {meta.num_delivered} {os.getpid()}\n"
    fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    msg.ack()
