"""A TCP chaos proxy on loopback, written with trio, for fault tests.

::

    client ──▶ ChaosProxy (127.0.0.1:<port>) ──▶ nats-server

The proxy runs ``trio.run`` in one thread, ``chaos-proxy-N``, started by :meth:`ChaosProxy.start`
and joined by :meth:`ChaosProxy.close`. Test threads steer it with ``trio.from_thread.run_sync``
through the run's ``TrioToken``; every control method returns once the proxy applied the change.

Faults:

* :meth:`latency` - every chunk is delayed by that many seconds, per direction, in order;
* :meth:`blackhole` - stop forwarding (and connecting upstream) without closing anything, like a
  network partition: bytes already read wait in the proxy and are delivered by :meth:`heal`, as
  TCP retransmission would after a partition heals;
* :meth:`reset` - close every current connection with a TCP RST (SO_LINGER 0) on both sides; new
  connections are still accepted;
* :meth:`heal` / :meth:`pass_through` - back to plain forwarding.

Nothing here is thread-safe except the public methods, which hop onto the trio thread.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

import trio

__all__ = ["ChaosProxy"]

_ids = itertools.count(1)
_CHUNK = 65536
_CHANNEL_CHUNKS = 64  # chunks read ahead per direction (backpressure beyond that)
_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST instead of FIN
_BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class _Conn:
    """One proxied connection: the client side, the upstream side and the scope running both pumps."""

    def __init__(self, client: trio.SocketStream) -> None:
        self.client = client
        self.upstream: trio.SocketStream | None = None
        self.scope = trio.CancelScope()
        self.rst = False  # close with RST rather than FIN


class ChaosProxy:
    """A loopback TCP proxy in front of ``upstream_host:upstream_port`` (see the module docstring)."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self._upstream = (upstream_host, upstream_port)
        self.port = 0
        # Proxy state below is touched only on the trio thread.
        self._latency = 0.0
        self._healed: trio.Event | None = None  # None: forwarding; an Event: blackholed until set
        self._conns: set[_Conn] = set()
        self._main_scope: trio.CancelScope | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.accepted = 0  # connections accepted, ever (read from any thread: a plain int)
        self.resets = 0  # connections reset by reset(), ever

    def __repr__(self) -> str:
        return f"<ChaosProxy 127.0.0.1:{self.port} -> {self._upstream[0]}:{self._upstream[1]}>"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> ChaosProxy:
        """Start the trio thread and block until the proxy listens (at most 10 s)."""
        ready: concurrent.futures.Future[tuple[trio.lowlevel.TrioToken, int]] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name=f"chaos-proxy-{next(_ids)}")
        self._thread.start()
        try:
            self._token, self.port = ready.result(10)
        except BaseException:
            self._thread.join(10)
            raise
        return self

    def close(self) -> None:
        """Close every connection (RST), stop listening and join the thread. Idempotent."""
        thread = self._thread
        if thread is None:
            return
        if thread.is_alive():
            with contextlib.suppress(trio.RunFinishedError):
                self._call(self._shutdown)
        thread.join(10)
        assert not thread.is_alive(), f"{thread.name} did not exit"
        self._thread = None
        if self._error is not None:
            raise AssertionError(f"the chaos proxy crashed: {self._error!r}") from self._error

    def __enter__(self) -> ChaosProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------- faults

    def pass_through(self) -> None:
        """Forward everything at once: no latency, no blackhole."""
        self._call(self._set, 0.0, False)

    def heal(self) -> None:
        """End a blackhole or a latency: held bytes flow again, in order."""
        self.pass_through()

    def latency(self, seconds: float) -> None:
        """Delay every chunk by *seconds* (each direction, order kept)."""
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r}")
        self._call(self._set, float(seconds), None)

    def blackhole(self) -> None:
        """Stop forwarding without closing anything, as a network partition does."""
        self._call(self._set, None, True)

    def reset(self) -> int:
        """RST every current connection on both sides; return how many. New ones are still accepted."""
        return int(self._call(self._reset_all))

    def connections(self) -> int:
        """How many connections are open through the proxy right now."""
        return int(self._call(lambda: len(self._conns)))

    # ---------------------------------------------------------------- trio side

    def _call(self, fn: Callable[..., Any], *args: object) -> Any:
        if self._token is None:
            raise RuntimeError(f"{self!r} is not running")
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def _run(self, ready: concurrent.futures.Future[tuple[trio.lowlevel.TrioToken, int]]) -> None:
        try:
            trio.run(self._main, ready)
        except BaseException as exc:
            self._error = exc
            if not ready.done():
                ready.set_exception(exc)

    async def _main(self, ready: concurrent.futures.Future[tuple[trio.lowlevel.TrioToken, int]]) -> None:
        (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
        async with listener, trio.open_nursery() as nursery:
            self._main_scope = nursery.cancel_scope
            ready.set_result((trio.lowlevel.current_trio_token(), listener.socket.getsockname()[1]))
            while True:
                stream = await listener.accept()
                self.accepted += 1
                nursery.start_soon(self._serve, stream)

    def _shutdown(self) -> None:
        for conn in self._conns:
            conn.rst = True
        if self._main_scope is not None:
            self._main_scope.cancel()

    def _set(self, latency: float | None, blackholed: bool | None) -> None:
        if latency is not None:
            self._latency = latency
        if blackholed is True and self._healed is None:
            self._healed = trio.Event()
        elif blackholed is False and self._healed is not None:
            self._healed.set()
            self._healed = None

    def _reset_all(self) -> int:
        conns = list(self._conns)
        for conn in conns:
            conn.rst = True
            conn.scope.cancel()
        self.resets += len(conns)
        return len(conns)

    async def _gate(self) -> None:
        """Wait while blackholed."""
        while self._healed is not None:
            await self._healed.wait()

    async def _serve(self, client: trio.SocketStream) -> None:
        conn = _Conn(client)
        self._conns.add(conn)
        try:
            with conn.scope:
                await self._gate()
                try:
                    conn.upstream = await trio.open_tcp_stream(*self._upstream)
                except _BROKEN:
                    conn.rst = True  # upstream down: the client sees a reset, as with no server
                    return
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, client, conn.upstream, conn)
                    nursery.start_soon(self._pump, conn.upstream, client, conn)
        finally:
            self._conns.discard(conn)
            for stream in (client, conn.upstream):
                if stream is not None:
                    _close(stream, conn.rst)

    async def _pump(self, src: trio.SocketStream, dst: trio.SocketStream, conn: _Conn) -> None:
        """Copy src to dst through a timestamped channel (latency), waiting at the gate (blackhole).

        When either side ends (EOF or an error), the whole connection ends, as with a proxy process.
        """
        send, receive = trio.open_memory_channel[tuple[float, bytes]](_CHANNEL_CHUNKS)

        async def read() -> None:
            async with send:
                try:
                    while data := await src.receive_some(_CHUNK):
                        await send.send((trio.current_time(), data))
                except _BROKEN:
                    conn.rst = True
            # EOF: the writer forwards what was read, then ends the connection.

        async def write() -> None:
            async with receive:
                try:
                    async for stamp, data in receive:
                        await self._gate()
                        delay = stamp + self._latency - trio.current_time()
                        if delay > 0:
                            await trio.sleep(delay)
                        await dst.send_all(data)
                except _BROKEN:
                    conn.rst = True
            conn.scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            nursery.start_soon(write)


def _close(stream: trio.SocketStream, rst: bool) -> None:
    """Close a socket now, with an RST if asked (no graceful shutdown: this is a fault injector)."""
    sock = stream.socket
    if rst:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
    sock.close()
