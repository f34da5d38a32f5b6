"""JetStream API requests, and consumer management beyond create/delete: info, pause, reset, unpin,
and paged lists.

:class:`Admin` sends blocking JetStream API requests on one connection with a context's API
prefix and timeout; :class:`natspull.JetStream` and :class:`natspull.Consumer` share it (a
consumer has no JetStream to call back into, and so none to build behind the user's back).
Besides it: the request bodies and reply readers for ``$JS.API.CONSUMER.PAUSE`` / ``RESET`` /
``UNPIN`` and the offset pager for ``STREAM.LIST`` / ``STREAM.NAMES`` / ``CONSUMER.LIST`` /
``CONSUMER.NAMES``, which calls the request function it is given, once per page, on the
iterating thread.

Server behaviour these rely on (checked against nats-server 2.15.1):

* Pause: ``{"pause_until": RFC 3339}``; resume is ``{}``. The reply is the new state.
* Reset (ADR-60): ``{"seq": N}`` (no body: the ack floor + 1); the reply is the consumer's info
  plus ``reset_seq``. The reset subject is served by the consumer itself, so a missing consumer
  (or stream) gets no reply at all: the caller checks existence first.
* Pause and unpin need nats-server 2.11, reset 2.14: an older server never answers them (a
  timeout), so :meth:`Admin.require` checks the server first (natspull._server_features) and
  raises NotSupportedError before anything is sent.
* List pages hold 256 infos, name pages 1024; a page is asked for with ``{"offset": n}`` and the
  reply says ``total``, ``offset`` and ``limit``.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

from ._consumer_types import (
    UTC,
    ConsumerInfo,
    PauseState,
    check_duration,
    check_group,
    check_time,
    format_time,
)
from ._server_features import (
    CONSUMER_PAUSE,
    CONSUMER_RESET,
    CONSUMER_UNPIN,
    REQUIRED_API_LEVEL,
    REQUIRED_API_LEVEL_ERR_CODE,
    Feature,
    Server,
)
from ._transport._link import Link
from ._validate import check_name
from .errors import JetStreamAPIError, NotSupportedError
from .errors import TimeoutError as _TimeoutError  # not the builtin

__all__ = ["Admin", "pages", "pause_body", "pause_state", "reset_body", "reset_reply"]

log = logging.getLogger("natspull")

MAX_SEQUENCE = 2**64 - 1  # stream sequences are uint64


def pause_body(until: Any) -> dict[str, Any]:
    """The PAUSE request for *until*: an aware datetime, or seconds from now (int/float >= 0).

    Raises TypeError/ValueError (a naive datetime, a negative, infinite or too large number).
    """
    if isinstance(until, datetime.datetime):
        deadline = check_time("until", until)
    elif isinstance(until, bool) or not isinstance(until, (int, float)):
        raise TypeError(
            f"until must be an aware datetime or a number of seconds from now, got {type(until).__name__}"
        )
    else:
        seconds = check_duration("until", until, allow_zero=True)
        deadline = datetime.datetime.now(UTC) + datetime.timedelta(seconds=seconds)
    return {"pause_until": format_time(deadline)}


def pause_state(response: dict[str, Any]) -> PauseState:
    return PauseState.from_response(response)


def reset_body(seq: Any) -> dict[str, Any] | None:
    """The RESET request: None (reset to the ack floor + 1) or ``{"seq": seq}`` for 1 <= seq < 2**64."""
    if seq is None:
        return None
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise TypeError(f"seq must be an int stream sequence or None, got {type(seq).__name__}")
    if not 1 <= seq <= MAX_SEQUENCE:
        raise ValueError(f"seq must be a stream sequence between 1 and {MAX_SEQUENCE}, got {seq}")
    return {"seq": seq}


def reset_reply(response: dict[str, Any]) -> tuple[int, ConsumerInfo]:
    """The stream sequence the consumer was reset to, and its info after the reset."""
    reset_seq = int(response.pop("reset_seq"))
    return reset_seq, ConsumerInfo.from_response(response)


def pages(
    request: Callable[[str, dict[str, Any]], dict[str, Any]], api: str, key: str
) -> Iterator[list[Any]]:
    """Lazily request the pages of a paged list API and yield each page's ``response[key]``.

    Each page is one blocking ``request(api, {"offset": n})`` on the iterating thread, made
    only when the previous page has been consumed. The next offset is the reply's offset plus
    its page size (``limit``): in a cluster a page may leave out entries whose servers did not
    answer (listed in ``missing``, logged here), and they must not shift the pages. It stops
    when the offset reaches the latest ``total``. Entries created or deleted while it runs may
    be missed or seen twice (the server pages by position in its sorted list).
    """
    offset = 0
    while True:
        response = request(api, {"offset": offset})
        items: list[Any] = response.get(key) or []  # null past the end
        missing = response.get("missing") or []
        if missing:
            log.warning("natspull: %s: no answer for %d entries: %s", api, len(missing), ", ".join(missing))
        if items:
            yield items
        total = int(response.get("total", 0))
        step = max(int(response.get("limit") or 0), len(items) + len(missing))
        if step <= 0:
            return
        offset = int(response.get("offset", offset)) + step
        if offset >= total:
            return


class Admin:
    """Blocking JetStream API requests on one connection, with a context's prefix and timeout.

    Every call blocks the calling thread until the server answers, at most *timeout*; raises
    natspull.TimeoutError, the matching JetStreamAPIError subclass, or ConnectionClosedError.
    Any thread but the connection's loop thread.
    """

    __slots__ = ("_server", "link", "prefix", "timeout")

    def __init__(self, link: Link, prefix: str, timeout: float) -> None:
        self.link = link
        self.prefix = prefix
        self.timeout = timeout
        # The server as last seen, keyed by the INFO (server_id, version) it was read under: a
        # reconnect to another node, or to an upgraded one, reads it again. Replaced whole (one
        # assignment) by any user thread; a race costs one extra $JS.API.INFO request.
        self._server: tuple[tuple[Any, Any], Server] | None = None

    def request(
        self,
        api: str,
        body: dict[str, Any] | None = None,
        timeout: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """``$JS.API.<api>`` (under the prefix) with *body* as JSON; the reply as a dict.

        With a ``Nats-Required-Api-Level`` header (:meth:`require`), a server below that level
        refuses it: raises NotSupportedError then.
        """
        timeout = self.timeout if timeout is None else timeout
        payload = json.dumps(body).encode() if body is not None else b""
        link = self.link
        subject = f"{self.prefix}.{api}"
        header_bytes = sum(len(k) + len(v) + 4 for k, v in (headers or {}).items())
        link.check_line(
            "JetStream API subject", subject, link.request_reply_bytes(), len(payload) + header_bytes
        )
        try:
            return link.run(
                link.api_request(self.prefix, api, payload, timeout, headers),
                timeout + 1.0,
                api.split(".")[0].lower(),
            )
        except JetStreamAPIError as exc:
            if exc.err_code != REQUIRED_API_LEVEL_ERR_CODE or not headers:
                raise
            # A node of the cluster (the one that took the request) is older than the rest.
            level = headers.get(REQUIRED_API_LEVEL, "?")
            connected = str(self.server().version)
            raise NotSupportedError(
                f"{api}: a server in the cluster is below JetStream API level {level}, which this "
                f"request needs ({exc}); connected to nats-server {connected}",
                feature=api,
                required=None,
                connected=connected,
            ) from exc

    def server(self) -> Server:
        """The server's version and JetStream API level (cached per connected server).

        The first call after a (re)connect blocks on one ``$JS.API.INFO`` request (at most the
        timeout); if that fails, INFO alone decides. Any thread but the loop's.
        """
        info = self.link.server_info
        key = (info.get("server_id"), info.get("version"))
        cached = self._server
        if cached is not None and cached[0] == key:
            return cached[1]
        level: int | None
        try:
            api = self.request("INFO").get("api") or {}
            level = int(api.get("level") or 0)  # absent before 2.11
        except (JetStreamAPIError, _TimeoutError):
            level = None  # e.g. no permission for $JS.API.INFO
        server = Server.from_info(info, level)
        self._server = (key, server)
        return server

    def require(self, features: list[Feature], action: str) -> dict[str, str] | None:
        """Raise NotSupportedError unless the server has every one of *features* (the first
        missing is named, with *action*, the version it needs and the one connected); return
        the ``Nats-Required-Api-Level`` header for the request (None: no features, or a server
        that ignores it). Blocks like :meth:`server`; nothing if *features* is empty."""
        if not features:
            return None
        server = self.server()
        for feature in features:
            server.require(feature, action)
        return server.level_header(features)

    def consumer_info(self, stream: str, name: str) -> ConsumerInfo:
        """The consumer's configuration and state. Raises ConsumerNotFoundError."""
        check_name("stream", stream)
        check_name("consumer", name)
        return ConsumerInfo.from_response(self.request(f"CONSUMER.INFO.{stream}.{name}"))

    def pause(self, stream: str, name: str, until: Any) -> PauseState:
        check_name("stream", stream)
        check_name("consumer", name)
        body = pause_body(until)
        headers = self.require([CONSUMER_PAUSE], "pause")
        return pause_state(self.request(f"CONSUMER.PAUSE.{stream}.{name}", body, headers=headers))

    def resume(self, stream: str, name: str) -> PauseState:
        """Resume now; then this connection's engines on the consumer pull at once."""
        check_name("stream", stream)
        check_name("consumer", name)
        headers = self.require([CONSUMER_PAUSE], "resume")
        state = pause_state(self.request(f"CONSUMER.PAUSE.{stream}.{name}", {}, headers=headers))
        self.nudge(stream, name)
        return state

    def reset(self, stream: str, name: str, seq: int | None) -> tuple[int, ConsumerInfo]:
        """The sequence delivery restarts from, and the consumer's info after the reset.

        The server does not answer a reset of a missing consumer: its existence is checked
        first (ConsumerNotFoundError, StreamNotFoundError at once).
        """
        body = reset_body(seq)
        check_name("stream", stream)
        check_name("consumer", name)
        headers = self.require([CONSUMER_RESET], "reset")
        self.consumer_info(stream, name)
        api = f"CONSUMER.RESET.{stream}.{name}"
        try:
            return reset_reply(self.request(api, body, headers=headers))
        except _TimeoutError:
            # Deleted since the check? Then say so (ConsumerNotFoundError), not "timed out".
            self.consumer_info(stream, name)
            raise

    def unpin(self, stream: str, name: str, group: str) -> None:
        check_name("stream", stream)
        check_name("consumer", name)
        body = {"group": check_group("group", group)}
        headers = self.require([CONSUMER_UNPIN], "unpin")
        self.request(f"CONSUMER.UNPIN.{stream}.{name}", body, headers=headers)
        self.nudge(stream, name, group)

    def nudge(self, stream: str, name: str, group: str | None = None) -> None:
        """Have this connection's running engines on *stream*/*name* pull now (after a resume,
        or an unpin of *group*): the server does not wake requests already waiting, so without
        this they would sit until their next heartbeat tick. Never blocks (hops onto the loop)."""
        link = self.link

        def nudge() -> None:
            for engine in link.engines:
                if (engine.stream, engine.consumer) == (stream, name):
                    engine.nudge(group)

        link.loop_thread.call_soon(nudge)
