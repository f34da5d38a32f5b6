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
        self._cut = False  # see _parse_fast

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
        pos = 0
        if buf and self.state == AWAITING_CONTROL_LINE:
            # The buffer holds the start of one frame (everything complete was parsed): complete
            # it from the read, and take the rest of the read without copying it into the buffer.
            pos = _complete(buf, data)
            if pos < 0:
                return  # still incomplete: the whole read is in the buffer
            await self._parse_buffer(buf)
            if self.buf is not buf or buf:  # a reconnect's reset(); or (defensive) not whole
                self.buf.extend(memoryview(data)[pos:])
                await self._parse_buffer(self.buf)
                return
        if self.state == AWAITING_CONTROL_LINE:
            # The read's fast frames are taken from the read itself; only the rest is copied.
            pos = self._parse_fast(data, pos)
            if self._cut:  # the rest is the start of one frame: nothing more to parse yet
                buf.extend(memoryview(data)[pos:])
                return
        if pos < len(data):
            buf.extend(memoryview(data)[pos:])
            await self._parse_buffer(buf)

    async def _parse_buffer(self, buf: bytearray) -> None:
        """Parse the complete frames in *buf* (``self.buf``); an incomplete one stays."""
        while buf and self.state == AWAITING_CONTROL_LINE:
            # The fast frames at the head of the buffer in one pass; they are cut off the
            # buffer together (one memmove, not one per message).
            pos = self._parse_fast(buf)
            if pos:
                del buf[:pos]
            if not buf or self._cut:
                return
            head = _frame(buf)
            if head is None or len(buf) < head[0]:
                return  # a split control line, or the payload is still on its way
            # Anything else: nats-py's parser takes exactly this one complete frame.
            frame, self.frame_size = head
            rest = buf[frame:]
            del buf[frame:]
            try:
                await super().parse()
            finally:
                self.frame_size = None
            if self.buf is not buf:  # reset() by a reconnect: the old connection's bytes are void
                return
            buf.extend(rest)

    def _parse_fast(self, buf: bytes | bytearray, pos: int = 0) -> int:
        """Hand the complete plain ``MSG`` frames of routed subscriptions from *pos* in *buf*
        to their engines; return where the first other (or incomplete) frame starts.

        Sets ``_cut`` when it stopped at an incomplete frame (a split control line, or a routed
        frame whose payload is still on its way): nothing after *pos* can be parsed yet."""
        if type(buf) is bytes:  # a slice of bytes is a copy, and bytes() of it is that copy
            return self._parse_fast_frames(buf, buf, pos)
        with memoryview(buf) as view:  # payloads copied once (a bytearray slice is a copy too)
            return self._parse_fast_frames(buf, view, pos)

    def _parse_fast_frames(self, buf: bytes | bytearray, view: memoryview | bytes, pos: int) -> int:
        routes = self.routes
        length = len(buf)
        count = nbytes = 0
        cut = False
        while pos < length:
            end = buf.find(_CRLF, pos)
            if end < 0:
                cut = True  # a split control line
                break
            if not buf.startswith(b"MSG ", pos):
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
                cut = True  # the payload is still on its way
                break
            try:
                subject_text, reply_text = subject.decode(), reply.decode()
            except UnicodeDecodeError:
                break  # (nats-py's turn)
            payload = bytes(view[start : start + size])
            pos = frame
            count += 1
            nbytes += size
            try:
                # size as the server counts it for max_bytes: subject + reply + payload
                deliver(subject_text, reply_text, payload, len(subject) + len(reply) + size)
            except Exception:  # a bug there must not kill the connection's reader
                log.exception("natspull: failed to handle a message on a pull inbox")
        self._cut = cut
        if count:
            stats = self.nc.stats
            stats["in_msgs"] += count
            stats["in_bytes"] += nbytes
        return pos


def _complete(buf: bytearray, data: bytes) -> int:
    """Extend *buf*, which holds the start of one frame, with the start of *data* up to that
    frame's end; return where in *data* the frame ended, or -1 when all of *data* went into
    *buf* and the frame is still incomplete. Raises ProtocolError."""
    pos = 0
    head = _frame(buf)
    if head is None:  # the control line is split: complete it first
        pos = data.find(b"\n") + 1
        buf.extend(memoryview(data)[:pos] if pos else data)
        head = _frame(buf)
        if head is None:
            if pos:  # (not a CRLF: left to nats-py, with the rest of the read)
                buf.extend(memoryview(data)[pos:])
                return len(data)
            return -1
    missing = head[0] - len(buf)
    if missing > len(data) - pos:
        buf.extend(memoryview(data)[pos:])
        return -1
    if missing > 0:
        buf.extend(memoryview(data)[pos : pos + missing])
        pos += missing
    return pos


def _frame(buf: bytearray) -> tuple[int, int | None] | None:
    """The length of the frame at the head of *buf* (complete or not) and, for ``MSG`` and
    ``HMSG``, its size as the server counts it for ``max_bytes`` (subject + reply + header
    block + payload); None while its control line is incomplete. Raises ProtocolError."""
    end = buf.find(_CRLF)
    if end < 0:
        return None
    if buf.startswith(b"MSG "):
        args = buf[4:end].split()  # subject sid [reply] size
        if not 3 <= len(args) <= 4:
            raise ProtocolError("nats: malformed MSG")
        try:
            size = int(args[-1])
        except ValueError:
            raise ProtocolError("nats: malformed MSG") from None
        return end + 2 + size + 2, len(args[0]) + (len(args[2]) if len(args) == 4 else 0) + size
    if buf.startswith(b"HMSG "):
        args = buf[5:end].split()  # subject sid [reply] header-size total-size
        try:
            total = int(args[-1])  # header block + payload
        except (ValueError, IndexError):
            raise ProtocolError("nats: malformed HMSG") from None
        return end + 2 + total + 2, len(args[0]) + (len(args[2]) if len(args) == 5 else 0) + total
    return end + 2, None
