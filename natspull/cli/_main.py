"""The entry point: parse the arguments, run one command, map expected failures to exit codes.

:func:`main` owns what every command shares while it runs: natspull's log routed to stderr
(``-v``), SIGTERM and SIGHUP raising KeyboardInterrupt outside a drain window, and the mapping
of natspull's errors (and :class:`CliError`) to one line on stderr and the exit codes documented
in ``natspull --help``. Main thread (signals).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable, Iterator

import natspull

from ._args import build_parser
from ._common import (
    EXIT_CONNECT,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    CliError,
    silence_stdout,
    stop_signals_as_interrupt,
)

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run the command line with *argv* (default: ``sys.argv[1:]``) and return the exit code.

    Never raises for an expected error: it prints one line on stderr and
    returns the code documented in ``natspull --help``. Main thread (signals).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help or a usage error; argparse has printed it
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    run: Callable[[argparse.Namespace], int] = args.run
    with _logging(args.verbose):
        try:
            with stop_signals_as_interrupt():
                return run(args)
        except CliError as exc:
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
            silence_stdout()
            return _fail(EXIT_ERROR, "stdout was closed")


def _fail(code: int, message: str) -> int:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    print(f"natspull: error: {lines[0] if lines else 'failed'}", file=sys.stderr)
    return code


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
