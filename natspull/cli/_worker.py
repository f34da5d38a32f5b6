"""``natspull worker MODULE:FUNCTION``: worker processes on a durable consumer (natspull.run_workers).

The current directory is put on ``sys.path`` first (as ``python -m`` does), so a handler in
``./jobs.py`` is found as ``jobs:handle`` also through the ``natspull`` script. A target that
cannot be imported or called is a usage error (exit 2) before any process starts; the other
exit codes are :func:`natspull.run_workers`'s. Main thread (signals).
"""

from __future__ import annotations

import argparse
import os
import sys

import natspull

from ._common import EXIT_USAGE, CliError, connect_options

__all__ = ["cmd_worker"]

#: consume() options the command has flags for (each reaches consume() only when given).
_CONSUME_FLAGS = (
    "max_messages",
    "max_lease",
    "retry",
    "term_after",
    "auto_ack",
    "batch",
    "batch_wait",
    "key",
    "handler_timeout",
)


def cmd_worker(args: argparse.Namespace) -> int:
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    servers, options = connect_options(args)
    try:
        return natspull.run_workers(
            args.target,
            stream=args.stream,
            consumer=args.consumer,
            processes=args.processes,
            threads=args.threads,
            servers=servers,
            connect_options=options,
            init=args.init,
            grace=args.grace,
            status=args.status,
            status_interval=args.status_interval,
            consume_options={key: getattr(args, key) for key in _CONSUME_FLAGS if hasattr(args, key)},
            http=args.http,
            poison_after=args.poison_after,
            dead_letter=args.dead_letter,
            hard_timeout=args.hard_timeout,
            create_consumer=args.create_consumer,
        )
    except (ValueError, TypeError) as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
