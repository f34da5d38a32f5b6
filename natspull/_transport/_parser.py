"""nats-py's protocol parser, with a fast path for the messages of pull inboxes.

nats-py parses every ``MSG`` with a chain of regular expressions, awaits
``_process_msg``, builds a ``nats.aio.msg.Msg`` (a dataclass of ten fields)
and only then reaches the engine, which wraps it again. For the pull engines'
inboxes that was most of the loop thread's time (benchmarks/README.md). This
parser takes header-less ``MSG`` frames whose subscription id belongs to an
engine straight to that engine's ``deliver(subject, reply, payload, size)``;
every other frame (``HMSG``, status messages, ``PING``, ``INFO``, other
subscriptions) is handed, one whole frame at a time, to nats-py's own parser,
so the order of everything on the connection is unchanged.

``size`` is what the server charges a message against a pull request's
``max_bytes``: the bytes of subject, reply, header block and payload as they
are on the wire. nats-py hands a message over with its headers already parsed,
so for the frames it handles :attr:`FastParser.frame_size` holds that size
while nats-py processes the frame.

Loop thread only, like nats-py's parser.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from nats.errors import ProtocolError
from nats.protocol.parser import AWAITING_CONTROL_LINE, Parser

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient

__all__ = ["Deliver", "FastParser"]

#: An engine's entry point for one message: (subject, reply, payload, size as the server counts it).
Deliver = Callable[[str, str, bytes, int], None]

log = logging.getLogger("natspull")

_CRLF = b"\r\n"
_EMPTY = bytearray()


class FastParser(Parser):
    """A ``nats.protocol.parser.Parser`` whose ``routes`` map subscription ids to engines."""

    def __init__(self, nc: NatsClient) -> None:
        super().__init__(nc)
        self.routes: dict[int, Deliver] = {}
        #: callbacks to run once the current read is parsed (engines hand their burst over)
        self.after_read: list[Callable[[], None]] = []
        self.parsing = False  # True while parse() runs: after_read callbacks will run
        #: While nats-py's parser handles a MSG/HMSG frame (and calls the subscription's
        #: queue), the bytes of its subject + reply + header block + payload; else None.
        self.frame_size: int | None = None

    async def parse(self, data: bytes = b"") -> None:
        self.parsing = True
        try:
            await self._parse(data)
        finally:
            self.parsing = False
            after, self.after_read = self.after_read, []
            for callback in after:
                try:
                    callback()
                except Exception:
                    log.exception("natspull: failed to hand a burst over")

    async def _parse(self, data: bytes) -> None:
        buf = self.buf
        buf.extend(data)
        while buf and self.state == AWAITING_CONTROL_LINE:
            # The fast frames at the head of the buffer in one pass; they are cut off the
            # buffer together (one memmove per read, not one per message).
            pos = self._parse_fast(buf)
            if pos:
                del buf[:pos]
            if not buf:
                return
            end = buf.find(_CRLF)
            if end < 0:
                return  # a split control line: wait for more
            msg_size: int | None
            if buf.startswith(b"MSG "):
                args = buf[4:end].split()  # subject sid [reply] size: not a pull inbox's
                if not 3 <= len(args) <= 4:
                    raise ProtocolError("nats: malformed MSG")
                try:
                    size = int(args[-1])
                except ValueError:
                    raise ProtocolError("nats: malformed MSG") from None
                frame = end + 2 + size + 2
                if len(buf) < frame:
                    return  # the payload is still on its way
                # The server's count for max_bytes: subject + reply + payload (bytes on the wire).
                msg_size = len(args[0]) + (len(args[2]) if len(args) == 4 else 0) + size
            elif buf.startswith(b"HMSG "):
                args = buf[5:end].split()  # subject sid [reply] header-size total-size
                try:
                    total = int(args[-1])  # header block + payload
                except (ValueError, IndexError):
                    raise ProtocolError("nats: malformed HMSG") from None
                frame = end + 2 + total + 2
                if len(buf) < frame:
                    return
                msg_size = len(args[0]) + (len(args[2]) if len(args) == 5 else 0) + total
            else:
                frame = end + 2
                msg_size = None
            # Anything else: nats-py's parser takes exactly this one complete frame.
            rest = buf[frame:]
            del buf[frame:]
            self.frame_size = msg_size
            try:
                await super().parse()
            finally:
                self.frame_size = None
            if self.buf is not buf:  # reset() by a reconnect: the old connection's bytes are void
                return
            buf.extend(rest)

    def _parse_fast(self, buf: bytearray) -> int:
        """Hand the complete plain ``MSG`` frames of routed subscriptions at the head of *buf*
        to their engines; return where the first other (or incomplete) frame starts."""
        routes = self.routes
        stats = self.nc.stats
        length = len(buf)
        pos = count = nbytes = 0
        while pos < length:
            end = buf.find(_CRLF, pos)
            if end < 0 or not buf.startswith(b"MSG ", pos):
                break
            args = buf[pos + 4 : end].split()  # subject sid [reply] size
            if len(args) == 4:
                subject, sid, reply, size_token = args
            elif len(args) == 3:
                subject, sid, size_token = args
                reply = _EMPTY
            else:
                break  # (nats-py's turn: its error)
            try:
                deliver = routes.get(int(sid))
                size = int(size_token)
            except ValueError:
                break
            if deliver is None:
                break  # another subscription's: through nats-py
            start = end + 2
            frame = start + size + 2
            if length < frame:
                break  # the payload is still on its way
            try:
                subject_text, reply_text = subject.decode(), reply.decode()
            except UnicodeDecodeError:
                break  # (nats-py's turn)
            payload = bytes(buf[start : start + size])
            pos = frame
            count += 1
            nbytes += size
            try:
                # size as the server counts it for max_bytes: subject + reply + payload
                deliver(subject_text, reply_text, payload, len(subject) + len(reply) + size)
            except Exception:  # a bug there must not kill the connection's reader
                log.exception("natspull: failed to handle a message on a pull inbox")
        if count:
            stats["in_msgs"] += count
            stats["in_bytes"] += nbytes
        return pos
