"""The ``natspull`` command line: a demo, a message printer, a publisher and a dev server.

::

    natspull demo [--messages N] [--size BYTES] [--workers N] [--server URL [CONNECTION]]
    natspull consume STREAM CONSUMER [CONNECTION] [--count N] [--timeout S] [--no-ack] [--json]
                     [--group G [--min-pending N]]
    natspull consume STREAM --ordered [--subject S]... [--since SEQ|TIME] [--count N] [--timeout S] [--json]
    natspull publish SUBJECT [DATA|-] [--count N] [CONNECTION]
    natspull worker MODULE:FUNCTION --stream S --consumer C [--init MODULE:FUNCTION] [CONNECTION] ...
    natspull server [--port P] [--store-dir DIR]

CONNECTION is --server, --context, --creds, --nkey, --user, --password, --token, --tlscert,
--tlskey, --tlsca, --tlsfirst, each falling back to the nats CLI's variable, then to the named
context, then to the selected one (``_common.connect_options``).

Everything goes through the public API (``natspull``, ``natspull.testing``), as
an application would, except that server URLs are printed through the client's
own credential redaction (``natspull._redact``). Expected failures end with one line on stderr and an exit
code (``natspull --help`` lists them); a traceback means a bug.

Signals belong to the main thread. SIGHUP (the terminal closed) is treated
like SIGTERM, unless it was ignored when the program started (``nohup``).
While messages flow (the demo publishing, or consuming), SIGINT/SIGTERM/SIGHUP go to
``natspull.shutdown_on_signals`` (first: drain, second: stop). Outside that window SIGTERM and SIGHUP raise
KeyboardInterrupt, like SIGINT, so all three end the same way: the embedded
nats-server is stopped and its temporary store dir removed. A nats-server the
CLI starts also dies when the CLI is killed (see ``natspull.testing``).

Progress goes to stdout (``demo``) or, for ``consume --ordered`` when its stdout is not a
terminal, to stderr: a ``rich`` bar on a terminal (the ``progress`` extra, imported only
then), plain lines otherwise.
"""

from __future__ import annotations

from ._main import main

__all__ = ["main"]
