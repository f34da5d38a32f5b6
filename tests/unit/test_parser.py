"""The parser's fast path sees the same wire as nats-py's own parser: same events, same order.

Unit level on purpose: every split of the byte stream (a frame cut anywhere, many frames in
one read) is hard to provoke with a real server; tests/integration/test_messages.py covers the real wire.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.errors import ProtocolError
from nats.protocol.parser import Parser

from natspull._transport._parser import FastParser

ROUTED = 7  # the sid of a pull inbox

Event = tuple[Any, ...]


class Recorder:
    """Stands in for nats-py's client on the parser's upcalls and records them in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.stats = {"in_msgs": 0, "in_bytes": 0}

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, hdr: bytes | None
    ) -> None:
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        self.events.append(("msg", sid, bytes(subject).decode(), bytes(reply).decode(), data, hdr))

    async def _process_ping(self) -> None:
        self.events.append(("ping",))

    async def _process_pong(self) -> None:
        self.events.append(("pong",))

    async def _process_info(self, info: dict[str, Any]) -> None:
        self.events.append(("info", info))

    async def _process_err(self, err: str) -> None:
        self.events.append(("err", err))


def _msg(sid: int, subject: str, reply: str, payload: bytes) -> bytes:
    line = f"MSG {subject} {sid} {reply} {len(payload)}" if reply else f"MSG {subject} {sid} {len(payload)}"
    return line.encode() + b"\r\n" + payload + b"\r\n"


def _hmsg(sid: int, subject: str, reply: str, headers: bytes, payload: bytes) -> bytes:
    sizes = f"{len(headers)} {len(headers) + len(payload)}"
    line = f"HMSG {subject} {sid} {reply} {sizes}" if reply else f"HMSG {subject} {sid} {sizes}"
    return line.encode() + b"\r\n" + headers + payload + b"\r\n"


payloads = st.binary(max_size=40)  # may hold CRLF: payloads are length-delimited
replies = st.sampled_from(["", "$JS.ACK.S.c.1.2.3.4.0", "_INBOX.x"])
frames = st.one_of(
    st.builds(_msg, st.sampled_from([ROUTED, 3]), st.sampled_from(["s", "a.b"]), replies, payloads),
    st.builds(
        _hmsg,
        st.sampled_from([ROUTED, 3]),
        st.just("s"),
        replies,
        st.sampled_from([b"NATS/1.0 408 Request Timeout\r\n\r\n", b"NATS/1.0\r\nK: v\r\n\r\n"]),
        payloads,
    ),
    st.sampled_from([b"PING\r\n", b"PONG\r\n", b"+OK\r\n", b'INFO {"x":1}\r\n', b"-ERR 'oops'\r\n"]),
)


def _feed(parser: Parser, wire: bytes, cuts: list[int]) -> None:
    async def run() -> None:
        last = 0
        for cut in [*sorted(cuts), len(wire)]:
            await parser.parse(wire[last:cut])
            last = cut

    asyncio.run(run())


@settings(max_examples=300, deadline=None)
@given(st.lists(frames, max_size=12), st.lists(st.integers(0, 10_000), max_size=6))
def test_fast_path_events_match_nats_py(wire_frames: list[bytes], cut_points: list[int]) -> None:
    wire = b"".join(wire_frames)
    cuts = [c % (len(wire) + 1) for c in cut_points]

    plain = Recorder()
    _feed(Parser(plain), wire, cuts)

    fast = Recorder()
    parser = FastParser(fast)  # type: ignore[arg-type]
    parser.routes[ROUTED] = lambda subject, reply, data, size: fast.events.append(
        ("msg", ROUTED, subject, reply, data, None)
    )
    _feed(parser, wire, cuts)

    assert fast.events == plain.events
    assert fast.stats == plain.stats
    assert not parser.buf  # every frame was complete


@pytest.mark.parametrize(
    "wire",
    [b"MSG s\r\n", b"MSG s x 3\r\nabc\r\n", b"MSG s 7 r r 3\r\nabc\r\n", b"HMSG s 7 x\r\n", b"NOPE\r\n"],
)
def test_malformed_frames_raise_protocol_error(wire: bytes) -> None:
    parser = FastParser(Recorder())  # type: ignore[arg-type]
    parser.routes[ROUTED] = lambda *args: None
    with pytest.raises(ProtocolError):
        _feed(parser, wire, [])


@pytest.mark.parametrize("cut", [3, 9, 12])
def test_malformed_control_line_split_across_reads_raises(cut: int) -> None:
    """A control line ended by a bare LF, its start in the buffer when the rest arrives."""
    parser = FastParser(Recorder())  # type: ignore[arg-type]
    parser.routes[ROUTED] = lambda *args: None
    with pytest.raises(ProtocolError):
        _feed(parser, f"MSG s {ROUTED} 3\nabc\r\n".encode(), [cut])


def test_a_failing_engine_does_not_stop_the_reader() -> None:
    rec = Recorder()
    parser = FastParser(rec)  # type: ignore[arg-type]

    def broken(subject: str, reply: str, data: bytes, size: int) -> None:
        raise RuntimeError("bug")

    parser.routes[ROUTED] = broken
    _feed(parser, _msg(ROUTED, "s", "", b"x") + b"PING\r\n", [])
    assert rec.events == [("ping",)]


def test_message_sizes_are_counted_as_the_server_counts_them() -> None:
    """Subject + reply + header block + payload, in bytes on the wire (what max_bytes charges):
    a routed MSG gets it as an argument; a frame nats-py handles shows it as ``frame_size``
    while nats-py hands the message over, and None otherwise."""
    seen: list[tuple[str, int | None]] = []

    class SizeRecorder(Recorder):
        async def _process_msg(
            self, sid: int, subject: bytes, reply: bytes, data: bytes, hdr: bytes | None
        ) -> None:
            seen.append((f"nats-py {sid}", parser.frame_size))

        async def _process_ping(self) -> None:
            seen.append(("ping", parser.frame_size))

    parser = FastParser(SizeRecorder())  # type: ignore[arg-type]
    parser.routes[ROUTED] = lambda subject, reply, data, size: seen.append(("fast", size))
    hdr = b"NATS/1.0\r\nK: v\r\n\r\n"
    wire = (
        _msg(ROUTED, "s.\u00e9", "$JS.ACK.x", b"abc")  # the subject is 4 bytes in UTF-8
        + _hmsg(ROUTED, "s.\u00e9", "$JS.ACK.x", hdr, b"abc")
        + _msg(3, "a", "", b"xy")
        + _hmsg(3, "a", "", hdr, b"")
        + b"PING\r\n"
    )
    _feed(parser, wire, [])
    assert seen == [
        ("fast", 4 + 9 + 3),
        (f"nats-py {ROUTED}", 4 + 9 + len(hdr) + 3),
        ("nats-py 3", 1 + 2),
        ("nats-py 3", 1 + len(hdr)),
        ("ping", None),
    ]
    assert parser.frame_size is None


def test_after_read_callbacks_run_once_per_read_even_when_parsing_fails() -> None:
    parser = FastParser(Recorder())  # type: ignore[arg-type]
    runs: list[int] = []

    def deliver(subject: str, reply: str, data: bytes, size: int) -> None:
        if not parser.after_read:
            parser.after_read.append(lambda: runs.append(len(runs)))

    parser.routes[ROUTED] = deliver
    _feed(parser, _msg(ROUTED, "s", "", b"a") + _msg(ROUTED, "s", "", b"b"), [])
    assert runs == [0]
    with pytest.raises(ProtocolError):
        _feed(parser, _msg(ROUTED, "s", "", b"c") + b"NOPE\r\n", [])
    assert runs == [0, 1]
    assert parser.after_read == []
