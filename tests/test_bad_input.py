"""Bad input to every public call: a table of calls, each of which must fail fast and clearly.

Every case must raise the expected ValueError/TypeError (or the documented natspull.Error
subclass) with a message naming the problem, within a few seconds (never a hang), never a
nats-py or asyncio exception, and the client must still publish and fetch afterwards.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys
import pytest

import natspull
from natspull.testing import NatsServer

MAX_PAYLOAD = 8192
CALL_BOUND = 5.0  # seconds any bad call may take, at most

_USER = nkeys.from_seed(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
_payloads = itertools.count(1)

# An nkey user makes the server send a nonce, so nats-py reads credentials files;
# everybody else is logged in as "anon" (with JetStream) without credentials.
_CONFIG = f"""max_payload: {MAX_PAYLOAD}
no_auth_user: anon
authorization {{
  users = [
    {{user: anon, password: anon}}
    {{nkey: {_USER.public_key.decode()}}}
  ]
}}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    with NatsServer(config=_CONFIG) as nats_server:
        with natspull.connect(nats_server.url) as client:
            js = client.jetstream()
            js.add_stream(name="BAD", subjects=["bad.>"])
            js.add_consumer("BAD", durable_name="ok", filter_subject="bad.ok", ack_wait=30)
            js.add_consumer("BAD", durable_name="m", filter_subject="bad.msg", ack_wait=30)
            # for iterators: nothing is ever published to bad.idle, so they never take a message
            js.add_consumer("BAD", durable_name="idle", filter_subject="bad.idle")
        yield nats_server


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("creds")
    seed = _USER.seed.decode()
    (directory / "empty.creds").write_text("")
    (directory / "garbage.creds").write_text("hello\nworld\n")
    (directory / "seed-only.creds").write_text(
        f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )
    return directory


class Env:
    """A connected client, its JetStream context and helpers that make the objects cases need."""

    def __init__(self, server: NatsServer, files: Path) -> None:
        self.server = server
        self.url = server.url
        self.files = files
        self.client = natspull.connect(server.url)
        self.js = self.client.jetstream(timeout=5)
        self.consumer = self.js.consumer("BAD", "ok")
        self._msgs: list[natspull.Msg] = []
        self._closeables: list[Any] = []
        self._closed: tuple[natspull.Client, natspull.JetStream, natspull.Consumer, natspull.Msg, Any] | None
        self._closed = None

    def msg(self) -> natspull.Msg:
        """A fresh JetStream message (acked at teardown unless the case acked it)."""
        self.js.publish("bad.msg", b"m", timeout=5)
        msg = self.js.consumer("BAD", "m").next(timeout=5)
        self._msgs.append(msg)
        return msg

    def messages(self) -> natspull.Messages:
        msgs = self.js.consumer("BAD", "idle").messages(max_messages=1, expires=5)
        self._closeables.append(msgs)
        return msgs

    def closed(self) -> tuple[natspull.Client, natspull.JetStream, natspull.Consumer, natspull.Msg, Any]:
        """A client, with objects made before it was closed: (client, js, consumer, msg, messages)."""
        if self._closed is None:
            client = natspull.connect(self.url)
            js = client.jetstream(timeout=5)
            js.publish("bad.msg", b"c", timeout=5)
            msg = js.consumer("BAD", "m").next(timeout=5)
            consumer = js.consumer("BAD", "idle")
            msgs = consumer.messages(max_messages=1)
            client.close()
            self._closed = (client, js, consumer, msg, msgs)
        return self._closed

    def on_loop(self, fn: Callable[[], object]) -> object:
        """Run *fn* on the client's event-loop thread; return its result or raise its exception."""
        done = threading.Event()
        out: list[tuple[bool, Any]] = []

        def run() -> None:
            try:
                out.append((True, fn()))
            except BaseException as exc:
                out.append((False, exc))
            finally:
                done.set()

        self.client._loop_thread.call_soon(run)
        assert done.wait(CALL_BOUND), "the call blocked the event loop"
        ok, value = out[0]
        if not ok:
            raise value
        return value

    def assert_usable(self) -> None:
        """The client still publishes and fetches."""
        payload = b"ok-%d" % next(_payloads)
        self.js.publish("bad.ok", payload, timeout=5)
        for _ in range(5):  # skip what an earlier failed case may have left behind
            msgs = self.consumer.fetch(1, max_wait=5)
            assert msgs, "fetch returned nothing"
            msgs[0].ack_sync(timeout=5)
            if msgs[0].data == payload:
                return
        raise AssertionError("the published message never came back")

    def cleanup(self) -> None:
        for closeable in self._closeables:
            closeable.stop()
        for msg in self._msgs:
            if not msg.acked and not self.client.is_closed:
                msg.ack()
        if self._closed is not None:
            self._closed[4].stop()
        self.client.close()


@pytest.fixture
def env(server: NatsServer, files: Path) -> Iterator[Env]:
    e = Env(server, files)
    try:
        yield e
    finally:
        e.cleanup()


@dataclass(frozen=True)
class Case:
    id: str
    call: Callable[[Env], object]
    raises: type[BaseException] | tuple[type[BaseException], ...]
    match: str
    main_thread: bool = False  # signal handlers can only be installed from the main thread


def _connect(**options: Any) -> Callable[[Env], object]:
    return lambda e: natspull.connect(e.url, **options)


def _sos(*targets: Any, **kwargs: Any) -> Callable[[Env], object]:
    return lambda e: natspull.shutdown_on_signals(*targets, **kwargs)


class _Target:
    def drain(self) -> None:
        pass

    def stop(self) -> None:
        pass


NAN, INF = math.nan, math.inf
CLOSED = natspull.ConnectionClosedError
ON_LOOP = r"event-loop thread"

CASES: list[Case] = [
    # ----------------------------------------------------------------------- connect
    Case("connect-servers-int", lambda e: natspull.connect(42), TypeError, "servers"),  # type: ignore[arg-type]
    Case("connect-servers-empty-str", lambda e: natspull.connect(""), TypeError, "servers"),
    Case("connect-servers-empty-list", lambda e: natspull.connect([]), TypeError, "servers"),
    Case("connect-servers-item-int", lambda e: natspull.connect([e.url, 3]), TypeError, "servers"),  # type: ignore[list-item]
    Case(
        "connect-url-bad-port",
        lambda e: natspull.connect("nats://127.0.0.1:notaport", connect_timeout=1),
        (ValueError, natspull.ConnectError),
        "port|notaport",
    ),
    Case(
        "connect-url-unknown-host",
        lambda e: natspull.connect("nats://no-such-host.invalid:4222", connect_timeout=0.5),
        natspull.ConnectError,
        "no-such-host.invalid",
    ),
    Case("connect_timeout-nan", _connect(connect_timeout=NAN), ValueError, "connect_timeout"),
    Case("connect_timeout-inf", _connect(connect_timeout=INF), ValueError, "connect_timeout"),
    Case("connect_timeout-zero", _connect(connect_timeout=0), ValueError, "connect_timeout"),
    Case("connect_timeout-negative", _connect(connect_timeout=-1), ValueError, "connect_timeout"),
    Case("connect_timeout-huge", _connect(connect_timeout=1e300), ValueError, "connect_timeout"),
    Case("connect_timeout-str", _connect(connect_timeout="1"), TypeError, "connect_timeout"),
    Case("connect_timeout-bool", _connect(connect_timeout=True), TypeError, "connect_timeout"),
    Case("reconnect_time_wait-negative", _connect(reconnect_time_wait=-1), ValueError, "reconnect_time_wait"),
    Case("reconnect_time_wait-nan", _connect(reconnect_time_wait=NAN), ValueError, "reconnect_time_wait"),
    Case("max_reconnect_attempts-minus-2", _connect(max_reconnect_attempts=-2), ValueError, "max_reconnect"),
    Case("max_reconnect_attempts-float", _connect(max_reconnect_attempts=1.5), TypeError, "max_reconnect"),
    Case("ping_interval-zero", _connect(ping_interval=0), ValueError, "ping_interval"),
    Case("close_timeout-negative", _connect(close_timeout=-1), ValueError, "close_timeout"),
    Case("close_timeout-nan", _connect(close_timeout=NAN), ValueError, "close_timeout"),
    Case("option-unknown", _connect(colour="red"), TypeError, "colour"),
    Case("option-user-int", _connect(user=5), TypeError, "user"),
    Case("option-password-bytes", _connect(password=b"pw"), TypeError, "password"),
    Case("option-tls-str", _connect(tls="yes"), TypeError, "tls"),
    Case("option-error_cb-int", _connect(error_cb=5), TypeError, "error_cb"),
    Case("option-inbox_prefix-space", _connect(inbox_prefix="a b"), ValueError, "inbox_prefix"),
    Case(
        "option-nkeys_seed-missing-file",
        _connect(nkeys_seed="/nonexistent/user.nk"),
        (ValueError, natspull.ConnectError),
        "nkeys_seed|/nonexistent/user.nk",
    ),
    Case(
        "option-nkeys_seed_str-invalid",
        _connect(nkeys_seed_str="SUNOTASEED"),
        (ValueError, natspull.ConnectError),
        "seed",
    ),
    Case(
        "option-user_credentials-1-tuple",
        _connect(user_credentials=("a.jwt",)),
        (ValueError, TypeError, natspull.ConnectError),
        "user_credentials",
    ),
    Case(
        "option-user_credentials-missing-file",
        lambda e: natspull.connect(e.url, user_credentials="/nonexistent/x.creds", connect_timeout=1),
        (ValueError, natspull.ConnectError),
        "/nonexistent/x.creds",
    ),
    Case(
        "option-user_credentials-empty-file",
        lambda e: natspull.connect(e.url, user_credentials=str(e.files / "empty.creds")),
        (ValueError, natspull.ConnectError),
        "empty.creds|user_credentials",
    ),
    Case(
        "option-user_credentials-garbage-file",
        lambda e: natspull.connect(e.url, user_credentials=str(e.files / "garbage.creds")),
        (ValueError, natspull.ConnectError),
        "garbage.creds|user_credentials",
    ),
    # --------------------------------------------------------------- Client.publish
    Case("publish-subject-empty", lambda e: e.client.publish("", b""), ValueError, "subject"),
    Case("publish-subject-space", lambda e: e.client.publish("a b", b""), ValueError, "subject"),
    Case("publish-subject-tab", lambda e: e.client.publish("a\tb", b""), ValueError, "subject"),
    Case("publish-subject-crlf", lambda e: e.client.publish("a\r\nPUB x 0", b""), ValueError, "subject"),
    Case("publish-subject-star", lambda e: e.client.publish("a.*", b""), ValueError, "subject"),
    Case("publish-subject-gt", lambda e: e.client.publish(">", b""), ValueError, "subject"),
    Case("publish-subject-empty-token", lambda e: e.client.publish("a..b", b""), ValueError, "subject"),
    Case("publish-subject-leading-dot", lambda e: e.client.publish(".a", b""), ValueError, "subject"),
    Case("publish-subject-trailing-dot", lambda e: e.client.publish("a.", b""), ValueError, "subject"),
    Case("publish-subject-none", lambda e: e.client.publish(None, b""), TypeError, "subject"),  # type: ignore[arg-type]
    Case("publish-subject-bytes", lambda e: e.client.publish(b"a", b""), TypeError, "subject"),  # type: ignore[arg-type]
    Case("publish-subject-too-long", lambda e: e.client.publish("a" * 5000, b""), ValueError, "subject"),
    Case("publish-data-str", lambda e: e.client.publish("a", "x"), TypeError, "data"),  # type: ignore[arg-type]
    Case("publish-data-none", lambda e: e.client.publish("a", None), TypeError, "data"),  # type: ignore[arg-type]
    Case("publish-data-int", lambda e: e.client.publish("a", 5), TypeError, "data"),  # type: ignore[arg-type]
    Case(
        "publish-data-over-max_payload",
        lambda e: e.client.publish("a", b"x" * (MAX_PAYLOAD + 1)),
        ValueError,
        "max_payload",
    ),
    Case(
        "publish-data-plus-headers-over-max_payload",
        lambda e: e.client.publish("a", b"x" * (MAX_PAYLOAD - 10), headers={"k": "v" * 100}),
        ValueError,
        "max_payload",
    ),
    Case(
        "publish-header-value-crlf",
        lambda e: e.client.publish("a", b"", {"k": "v\r\nX: y"}),
        ValueError,
        "header",
    ),
    Case("publish-header-value-lf", lambda e: e.client.publish("a", b"", {"k": "\n"}), ValueError, "header"),
    Case("publish-header-value-int", lambda e: e.client.publish("a", b"", {"k": 5}), TypeError, "header"),  # type: ignore[dict-item]
    Case(
        "publish-header-value-list", lambda e: e.client.publish("a", b"", {"k": ["v"]}), TypeError, "header"
    ),  # type: ignore[dict-item]
    Case("publish-header-name-int", lambda e: e.client.publish("a", b"", {5: "v"}), TypeError, "header"),  # type: ignore[dict-item]
    Case("publish-header-name-empty", lambda e: e.client.publish("a", b"", {"": "v"}), ValueError, "header"),
    Case(
        "publish-header-name-colon", lambda e: e.client.publish("a", b"", {"a:b": "v"}), ValueError, "header"
    ),
    Case(
        "publish-header-name-space", lambda e: e.client.publish("a", b"", {"a b": "v"}), ValueError, "header"
    ),
    Case("publish-headers-list", lambda e: e.client.publish("a", b"", [("k", "v")]), TypeError, "headers"),  # type: ignore[arg-type]
    # --------------------------------------------------------------- Client.request
    Case("request-timeout-zero", lambda e: e.client.request("a", b"", timeout=0), ValueError, "timeout"),
    Case("request-timeout-negative", lambda e: e.client.request("a", b"", timeout=-1), ValueError, "timeout"),
    Case("request-timeout-nan", lambda e: e.client.request("a", b"", timeout=NAN), ValueError, "timeout"),
    Case("request-timeout-inf", lambda e: e.client.request("a", b"", timeout=INF), ValueError, "timeout"),
    Case("request-timeout-huge", lambda e: e.client.request("a", b"", timeout=1e12), ValueError, "timeout"),
    Case("request-timeout-str", lambda e: e.client.request("a", b"", timeout="1"), TypeError, "timeout"),  # type: ignore[arg-type]
    Case(
        "request-subject-wildcard", lambda e: e.client.request("a.>", b"", timeout=1), ValueError, "subject"
    ),
    Case("request-data-str", lambda e: e.client.request("a", "x", timeout=1), TypeError, "data"),  # type: ignore[arg-type]
    Case(
        "request-data-over-max_payload",
        lambda e: e.client.request("a", b"x" * (MAX_PAYLOAD + 1), timeout=1),
        ValueError,
        "max_payload",
    ),
    Case(
        "request-header-crlf",
        lambda e: e.client.request("a", b"", timeout=1, headers={"k": "\r"}),
        ValueError,
        "header",
    ),
    Case(
        "request-subject-too-long",
        lambda e: e.client.request("a" * 5000, b"", timeout=1),
        ValueError,
        "subject",
    ),
    # ---------------------------------------------------------- flush / jetstream / close
    Case("flush-timeout-zero", lambda e: e.client.flush(0), ValueError, "timeout"),
    Case("flush-timeout-negative", lambda e: e.client.flush(-1), ValueError, "timeout"),
    Case("flush-timeout-nan", lambda e: e.client.flush(NAN), ValueError, "timeout"),
    Case("flush-timeout-str", lambda e: e.client.flush("1"), TypeError, "timeout"),  # type: ignore[arg-type]
    Case("jetstream-domain-dot", lambda e: e.client.jetstream(domain="a.b"), ValueError, "domain"),
    Case("jetstream-domain-int", lambda e: e.client.jetstream(domain=5), TypeError, "domain"),  # type: ignore[arg-type]
    Case(
        "jetstream-domain-and-prefix",
        lambda e: e.client.jetstream(domain="a", api_prefix="b"),
        ValueError,
        "domain",
    ),
    Case("jetstream-prefix-space", lambda e: e.client.jetstream(api_prefix="a b"), ValueError, "api_prefix"),
    Case(
        "jetstream-prefix-wildcard",
        lambda e: e.client.jetstream(api_prefix="$JS.*"),
        ValueError,
        "api_prefix",
    ),
    Case("jetstream-timeout-zero", lambda e: e.client.jetstream(timeout=0), ValueError, "timeout"),
    Case("jetstream-timeout-nan", lambda e: e.client.jetstream(timeout=NAN), ValueError, "timeout"),
    Case("close-timeout-negative", lambda e: e.client.close(timeout=-1), ValueError, "timeout"),
    Case("close-timeout-str", lambda e: e.client.close(timeout="1"), TypeError, "timeout"),  # type: ignore[arg-type]
    # ------------------------------------------------------------------- streams
    Case("add_stream-no-name", lambda e: e.js.add_stream(subjects=["x"]), TypeError, "stream name"),
    Case("add_stream-name-dot", lambda e: e.js.add_stream(name="a.b"), ValueError, "stream name"),
    Case("add_stream-name-space", lambda e: e.js.add_stream(name="a b"), ValueError, "stream name"),
    Case("add_stream-name-star", lambda e: e.js.add_stream(name="*"), ValueError, "stream name"),
    Case("add_stream-name-gt", lambda e: e.js.add_stream(name=">"), ValueError, "stream name"),
    Case("add_stream-name-slash", lambda e: e.js.add_stream(name="a/b"), ValueError, "stream name"),
    Case("add_stream-name-int", lambda e: e.js.add_stream(name=5), TypeError, "stream name"),
    Case("add_stream-name-too-long", lambda e: e.js.add_stream(name="x" * 256), ValueError, "stream name"),
    Case("add_stream-config-int", lambda e: e.js.add_stream(5), TypeError, "config"),  # type: ignore[arg-type]
    Case("add_stream-config-dict", lambda e: e.js.add_stream({"name": "X"}), TypeError, "config"),  # type: ignore[arg-type]
    Case("add_stream-unknown-field", lambda e: e.js.add_stream(name="X", colour="red"), TypeError, "colour"),
    Case(
        "add_stream-subjects-str",
        lambda e: e.js.add_stream(name="X1", subjects="x1.>"),
        (TypeError, natspull.JetStreamAPIError),
        "subjects",
    ),
    Case(
        "add_stream-subject-space",
        lambda e: e.js.add_stream(name="X2", subjects=["a b"]),
        (ValueError, natspull.JetStreamAPIError),
        "subject",
    ),
    Case(
        "add_stream-max_age-negative",
        lambda e: e.js.add_stream(name="X3", max_age=-1),
        (ValueError, natspull.JetStreamAPIError),
        "max.age",
    ),
    Case(
        "add_stream-max_age-nan",
        lambda e: e.js.add_stream(name="X4", max_age=NAN),
        ValueError,
        "max_age",
    ),
    Case("update_stream-name-dot", lambda e: e.js.update_stream(name="a.b"), ValueError, "stream name"),
    Case("update_stream-config-int", lambda e: e.js.update_stream(5), TypeError, "config"),  # type: ignore[arg-type]
    Case(
        "update_stream-missing",
        lambda e: e.js.update_stream(name="NOPE"),
        natspull.StreamNotFoundError,
        "not found",
    ),
    Case("delete_stream-empty", lambda e: e.js.delete_stream(""), ValueError, "stream name"),
    Case("delete_stream-dot", lambda e: e.js.delete_stream("a.b"), ValueError, "stream name"),
    Case("delete_stream-gt", lambda e: e.js.delete_stream(">"), ValueError, "stream name"),
    Case("delete_stream-none", lambda e: e.js.delete_stream(None), TypeError, "stream name"),  # type: ignore[arg-type]
    Case(
        "delete_stream-missing",
        lambda e: e.js.delete_stream("NOPE"),
        natspull.StreamNotFoundError,
        "not found",
    ),
    Case("purge_stream-space", lambda e: e.js.purge_stream("a b"), ValueError, "stream name"),
    Case("purge_stream-newline", lambda e: e.js.purge_stream("a\n"), ValueError, "stream name"),
    Case("stream_info-star", lambda e: e.js.stream_info("*"), ValueError, "stream name"),
    Case("stream_info-int", lambda e: e.js.stream_info(1), TypeError, "stream name"),  # type: ignore[arg-type]
    # ----------------------------------------------------------------- consumers
    Case(
        "add_consumer-stream-dot",
        lambda e: e.js.add_consumer("a.b", durable_name="x"),
        ValueError,
        "stream name",
    ),
    Case(
        "add_consumer-durable-dot",
        lambda e: e.js.add_consumer("BAD", durable_name="a.b"),
        ValueError,
        "consumer name",
    ),
    Case(
        "add_consumer-name-space", lambda e: e.js.add_consumer("BAD", name="a b"), ValueError, "consumer name"
    ),
    Case("add_consumer-name-gt", lambda e: e.js.add_consumer("BAD", name=">"), ValueError, "consumer name"),
    Case(
        "add_consumer-push",
        lambda e: e.js.add_consumer("BAD", durable_name="p", deliver_subject="x"),
        ValueError,
        "deliver_subject",
    ),
    Case("add_consumer-config-int", lambda e: e.js.add_consumer("BAD", 5), TypeError, "config"),  # type: ignore[arg-type]
    Case("add_consumer-unknown-field", lambda e: e.js.add_consumer("BAD", colour=1), TypeError, "colour"),
    Case(
        "add_consumer-ack_wait-negative",
        lambda e: e.js.add_consumer("BAD", durable_name="aw1", ack_wait=-1),
        (ValueError, natspull.JetStreamAPIError),
        "ack.wait",
    ),
    Case(
        "add_consumer-ack_wait-nan",
        lambda e: e.js.add_consumer("BAD", durable_name="aw2", ack_wait=NAN),
        ValueError,
        "ack_wait",
    ),
    # (ack_wait="x" is not in the table: nats-py computes "x" * 10**9, a 1 GB string, for 10 s)
    Case(
        "add_consumer-ack_wait-dict",
        lambda e: e.js.add_consumer("BAD", durable_name="aw3", ack_wait={}),
        TypeError,
        "ack_wait",
    ),
    Case(
        "add_consumer-filter-space",
        lambda e: e.js.add_consumer("BAD", durable_name="f", filter_subject="a b"),
        (ValueError, natspull.JetStreamAPIError),
        "subject",
    ),
    Case(
        "add_consumer-missing-stream",
        lambda e: e.js.add_consumer("NOPE", durable_name="x"),
        natspull.StreamNotFoundError,
        "not found",
    ),
    Case("consumer-name-dot", lambda e: e.js.consumer("BAD", "a.b"), ValueError, "consumer name"),
    Case("consumer-name-none", lambda e: e.js.consumer("BAD", None), TypeError, "consumer name"),  # type: ignore[arg-type]
    Case("consumer-stream-empty", lambda e: e.js.consumer("", "ok"), ValueError, "stream name"),
    Case(
        "consumer-missing",
        lambda e: e.js.consumer("BAD", "nope"),
        natspull.ConsumerNotFoundError,
        "not found",
    ),
    Case("consumer_info-empty", lambda e: e.js.consumer_info("BAD", ""), ValueError, "consumer name"),
    Case("consumer_info-star", lambda e: e.js.consumer_info("BAD", "*"), ValueError, "consumer name"),
    Case("delete_consumer-gt", lambda e: e.js.delete_consumer("BAD", ">"), ValueError, "consumer name"),
    Case("delete_consumer-stream-empty", lambda e: e.js.delete_consumer("", "ok"), ValueError, "stream name"),
    # ---------------------------------------------------------- JetStream.publish
    Case("js.publish-subject-wildcard", lambda e: e.js.publish("bad.*", b""), ValueError, "subject"),
    Case("js.publish-subject-empty", lambda e: e.js.publish("", b""), ValueError, "subject"),
    Case("js.publish-data-str", lambda e: e.js.publish("bad.x", "x"), TypeError, "data"),  # type: ignore[arg-type]
    Case(
        "js.publish-data-over-max_payload",
        lambda e: e.js.publish("bad.x", b"x" * (MAX_PAYLOAD + 1)),
        ValueError,
        "max_payload",
    ),
    Case(
        "js.publish-data-plus-headers-over-max_payload",
        lambda e: e.js.publish("bad.x", b"x" * (MAX_PAYLOAD - 10), headers={"k": "v" * 100}, timeout=1),
        ValueError,
        "max_payload",
    ),
    Case("js.publish-header-crlf", lambda e: e.js.publish("bad.x", b"", {"k": "\r"}), ValueError, "header"),
    Case(
        "js.publish-msg_id-int",
        lambda e: e.js.publish("bad.x", b"", msg_id=5),
        (TypeError, ValueError),
        "msg_id",
    ),  # type: ignore[arg-type]
    Case("js.publish-msg_id-empty", lambda e: e.js.publish("bad.x", b"", msg_id=""), ValueError, "msg_id"),
    Case(
        "js.publish-msg_id-crlf",
        lambda e: e.js.publish("bad.x", b"", msg_id="a\r\nX-Injected: yes"),
        ValueError,
        "msg_id",
    ),
    Case("js.publish-timeout-zero", lambda e: e.js.publish("bad.x", b"", timeout=0), ValueError, "timeout"),
    Case("js.publish-timeout-nan", lambda e: e.js.publish("bad.x", b"", timeout=NAN), ValueError, "timeout"),
    Case("js.publish-timeout-str", lambda e: e.js.publish("bad.x", b"", timeout="1"), TypeError, "timeout"),  # type: ignore[arg-type]
    Case(
        "js.publish-expected_stream-dot",
        lambda e: e.js.publish("bad.x", b"", expected_stream="a.b"),
        ValueError,
        "expected_stream",
    ),
    Case(
        "js.publish-no-stream",
        lambda e: e.js.publish("nostream.x", b"", timeout=2),
        natspull.JetStreamAPIError,
        "no stream|no responders",
    ),
    Case(
        "js.publish-subject-too-long",
        lambda e: e.js.publish("bad." + "a" * 5000, b"", timeout=1),
        ValueError,
        "subject",
    ),
    # ------------------------------------------------------ JetStream.publish_many
    Case("publish_many-messages-int", lambda e: e.js.publish_many(5), TypeError, "messages"),  # type: ignore[arg-type]
    Case("publish_many-messages-none", lambda e: e.js.publish_many(None), TypeError, "messages"),  # type: ignore[arg-type]
    Case("publish_many-item-1-tuple", lambda e: e.js.publish_many([("bad.x",)]), TypeError, "messages"),  # type: ignore[list-item]
    Case("publish_many-item-list", lambda e: e.js.publish_many([["bad.x", b""]]), TypeError, "messages"),  # type: ignore[list-item]
    Case("publish_many-item-data-str", lambda e: e.js.publish_many([("bad.x", "s")]), TypeError, "data"),  # type: ignore[list-item]
    Case(
        "publish_many-item-subject-wildcard",
        lambda e: e.js.publish_many([("bad.*", b"")]),
        ValueError,
        "subject",
    ),
    Case(
        "publish_many-item-over-max_payload",
        lambda e: e.js.publish_many([("bad.x", b""), ("bad.x", b"x" * (MAX_PAYLOAD + 1))]),
        ValueError,
        "max_payload",
    ),
    Case(
        "publish_many-window-zero",
        lambda e: e.js.publish_many([("bad.x", b"")], window=0),
        ValueError,
        "window",
    ),
    Case(
        "publish_many-window-huge",
        lambda e: e.js.publish_many([("bad.x", b"")], window=10**9),
        ValueError,
        "window",
    ),
    Case(
        "publish_many-window-float",
        lambda e: e.js.publish_many([("bad.x", b"")], window=1.5),
        TypeError,
        "window",
    ),  # type: ignore[arg-type]
    Case(
        "publish_many-timeout-negative",
        lambda e: e.js.publish_many([("bad.x", b"")], timeout=-1),
        ValueError,
        "timeout",
    ),
    Case(
        "publish_many-expected_stream-space",
        lambda e: e.js.publish_many([("bad.x", b"")], expected_stream="a b"),
        ValueError,
        "expected_stream",
    ),
    # ------------------------------------------------------------ Consumer.fetch/next
    Case("fetch-batch-zero", lambda e: e.consumer.fetch(0), ValueError, "batch"),
    Case("fetch-batch-negative", lambda e: e.consumer.fetch(-1), ValueError, "batch"),
    Case("fetch-batch-huge", lambda e: e.consumer.fetch(10**9), ValueError, "batch"),
    Case("fetch-batch-float", lambda e: e.consumer.fetch(1.5), TypeError, "batch"),  # type: ignore[arg-type]
    Case("fetch-batch-str", lambda e: e.consumer.fetch("1"), TypeError, "batch"),  # type: ignore[arg-type]
    Case("fetch-batch-bool", lambda e: e.consumer.fetch(True), TypeError, "batch"),
    Case("fetch-max_wait-negative", lambda e: e.consumer.fetch(1, max_wait=-1), ValueError, "max_wait"),
    Case("fetch-max_wait-zero", lambda e: e.consumer.fetch(1, max_wait=0), ValueError, "max_wait"),
    Case("fetch-max_wait-nan", lambda e: e.consumer.fetch(1, max_wait=NAN), ValueError, "max_wait"),
    Case("fetch-max_wait-inf", lambda e: e.consumer.fetch(1, max_wait=INF), ValueError, "max_wait"),
    Case("fetch-max_wait-huge", lambda e: e.consumer.fetch(1, max_wait=1e9), ValueError, "max_wait"),
    Case("fetch-max_wait-str", lambda e: e.consumer.fetch(1, max_wait="1"), TypeError, "max_wait"),  # type: ignore[arg-type]
    Case("fetch-max_bytes-zero", lambda e: e.consumer.fetch(1, max_bytes=0), ValueError, "max_bytes"),
    Case("fetch-max_bytes-negative", lambda e: e.consumer.fetch(1, max_bytes=-1), ValueError, "max_bytes"),
    Case("fetch-max_bytes-float", lambda e: e.consumer.fetch(1, max_bytes=1.5), TypeError, "max_bytes"),  # type: ignore[arg-type]
    Case(
        "fetch-no_wait-str",
        lambda e: e.consumer.fetch(1, max_wait=0.5, no_wait="no"),  # type: ignore[arg-type]
        TypeError,
        "no_wait",
    ),
    Case("next-timeout-negative", lambda e: e.consumer.next(-1), ValueError, "timeout"),
    Case("next-timeout-nan", lambda e: e.consumer.next(NAN), ValueError, "timeout"),
    Case("next-timeout-inf", lambda e: e.consumer.next(INF), ValueError, "timeout"),
    Case("next-timeout-str", lambda e: e.consumer.next("1"), TypeError, "timeout"),  # type: ignore[arg-type]
    Case("next-timeout-none", lambda e: e.consumer.next(None), TypeError, "timeout"),  # type: ignore[arg-type]
    # ------------------------------------------------------ Consumer.messages/consume
    Case(
        "messages-max_messages-zero",
        lambda e: e.consumer.messages(max_messages=0),
        ValueError,
        "max_messages",
    ),
    Case(
        "messages-max_messages-huge",
        lambda e: e.consumer.messages(max_messages=2**40),
        ValueError,
        "max_messages",
    ),
    Case(
        "messages-max_messages-float",
        lambda e: e.consumer.messages(max_messages=1.5),
        TypeError,
        "max_messages",
    ),  # type: ignore[arg-type]
    Case(
        "messages-max_messages-and-max_bytes",
        lambda e: e.consumer.messages(max_messages=1, max_bytes=1),
        ValueError,
        "max_bytes",
    ),
    Case("messages-max_bytes-zero", lambda e: e.consumer.messages(max_bytes=0), ValueError, "max_bytes"),
    Case("messages-expires-below-1s", lambda e: e.consumer.messages(expires=0.5), ValueError, "expires"),
    Case("messages-expires-nan", lambda e: e.consumer.messages(expires=NAN), ValueError, "expires"),
    Case("messages-expires-inf", lambda e: e.consumer.messages(expires=INF), ValueError, "expires"),
    Case(
        "messages-heartbeat-too-small", lambda e: e.consumer.messages(heartbeat=0.1), ValueError, "heartbeat"
    ),
    Case(
        "messages-heartbeat-too-big",
        lambda e: e.consumer.messages(expires=100, heartbeat=31),
        ValueError,
        "heartbeat",
    ),
    Case(
        "messages-heartbeat-over-half-expires",
        lambda e: e.consumer.messages(expires=2, heartbeat=1.5),
        ValueError,
        "heartbeat",
    ),
    Case(
        "messages-threshold-over-max",
        lambda e: e.consumer.messages(max_messages=10, threshold_messages=11),
        ValueError,
        "threshold_messages",
    ),
    Case(
        "messages-threshold-zero",
        lambda e: e.consumer.messages(max_messages=10, threshold_messages=0),
        ValueError,
        "threshold_messages",
    ),
    Case(
        "messages-threshold_bytes-without-max_bytes",
        lambda e: e.consumer.messages(threshold_bytes=5),
        ValueError,
        "threshold_bytes",
    ),
    Case("messages-stop_after-zero", lambda e: e.consumer.messages(stop_after=0), ValueError, "stop_after"),
    Case(
        "messages-error_on_missing_heartbeat-str",
        lambda e: e.consumer.messages(error_on_missing_heartbeat="yes"),  # type: ignore[arg-type]
        TypeError,
        "error_on_missing_heartbeat",
    ),
    Case("consume-handler-int", lambda e: e.consumer.consume(5), TypeError, "handler"),  # type: ignore[arg-type]
    Case("consume-workers-zero", lambda e: e.consumer.consume(print, workers=0), ValueError, "workers"),
    Case("consume-workers-huge", lambda e: e.consumer.consume(print, workers=10**6), ValueError, "workers"),
    Case(
        "consume-error_handler-int",
        lambda e: e.consumer.consume(print, error_handler=5),  # type: ignore[arg-type]
        TypeError,
        "error_handler",
    ),
    Case("consume-expires-zero", lambda e: e.consumer.consume(print, expires=0), ValueError, "expires"),
    # ------------------------------------------------------------- Messages.next
    Case("messages.next-timeout-negative", lambda e: e.messages().next(-1), ValueError, "timeout"),
    Case("messages.next-timeout-nan", lambda e: e.messages().next(NAN), ValueError, "timeout"),
    Case("messages.next-timeout-str", lambda e: e.messages().next("1"), TypeError, "timeout"),  # type: ignore[arg-type]
    # ----------------------------------------------------------------------- Msg
    Case("msg.nak-delay-negative", lambda e: e.msg().nak(delay=-1), ValueError, "delay"),
    Case("msg.nak-delay-nan", lambda e: e.msg().nak(delay=NAN), ValueError, "delay"),
    Case("msg.nak-delay-inf", lambda e: e.msg().nak(delay=INF), ValueError, "delay"),
    Case("msg.nak-delay-str", lambda e: e.msg().nak(delay="1"), TypeError, "delay"),  # type: ignore[arg-type]
    Case("msg.term-reason-int", lambda e: e.msg().term(reason=5), TypeError, "reason"),  # type: ignore[arg-type]
    Case("msg.ack_sync-timeout-zero", lambda e: e.msg().ack_sync(timeout=0), ValueError, "timeout"),
    Case("msg.ack_sync-timeout-nan", lambda e: e.msg().ack_sync(timeout=NAN), ValueError, "timeout"),
    Case("msg.ack_sync-timeout-str", lambda e: e.msg().ack_sync(timeout="1"), TypeError, "timeout"),  # type: ignore[arg-type]
    Case(
        "msg.ack-twice", lambda e: [m := e.msg(), m.ack(), m.ack()], natspull.MsgAlreadyAckedError, "already"
    ),
    Case(
        "msg.in_progress-after-ack",
        lambda e: [m := e.msg(), m.ack(), m.in_progress()],
        natspull.MsgAlreadyAckedError,
        "already",
    ),
    Case(
        "msg.ack_sync-after-term",
        lambda e: [m := e.msg(), m.term(), m.ack_sync(timeout=1)],
        natspull.MsgAlreadyAckedError,
        "already",
    ),
    Case(
        "msg.ack-core-reply",
        lambda e: natspull.Msg("a", b"").ack(),
        natspull.Error,
        "not a JetStream message",
    ),
    Case(
        "msg.metadata-core-reply",
        lambda e: natspull.Msg("a", b"", "not.an.ack").metadata,
        natspull.Error,
        "not a JetStream message",
    ),
    # ------------------------------------------------------------ shutdown_on_signals
    Case("signals-target-int", _sos(5), TypeError, "drain", main_thread=True),
    Case("signals-target-none", _sos(None), TypeError, "drain", main_thread=True),
    Case(
        "signals-signum-out-of-range",
        _sos(_Target(), signals=[99999]),
        ValueError,
        "signals",
        main_thread=True,
    ),
    Case(
        "signals-signum-str",
        _sos(_Target(), signals=["INT"]),
        (TypeError, ValueError),
        "signals",
        main_thread=True,
    ),
    Case(
        "signals-sigkill",
        _sos(_Target(), signals=[signal.SIGKILL]),
        ValueError,
        "signals|SIGKILL",
        main_thread=True,
    ),
    Case("signals-not-main-thread", _sos(_Target()), RuntimeError, "main thread"),
    # ------------------------------------------------------------------ after close
    Case("closed-publish", lambda e: e.closed()[0].publish("a", b""), CLOSED, "closed"),
    Case("closed-request", lambda e: e.closed()[0].request("a", b"", timeout=1), CLOSED, "closed"),
    Case("closed-flush", lambda e: e.closed()[0].flush(1), CLOSED, "closed"),
    Case(
        "closed-jetstream-then-call", lambda e: e.closed()[0].jetstream().stream_info("BAD"), CLOSED, "closed"
    ),
    Case("closed-add_stream", lambda e: e.closed()[1].add_stream(name="Z"), CLOSED, "closed"),
    Case("closed-update_stream", lambda e: e.closed()[1].update_stream(name="BAD"), CLOSED, "closed"),
    Case("closed-delete_stream", lambda e: e.closed()[1].delete_stream("BAD"), CLOSED, "closed"),
    Case("closed-purge_stream", lambda e: e.closed()[1].purge_stream("BAD"), CLOSED, "closed"),
    Case("closed-stream_info", lambda e: e.closed()[1].stream_info("BAD"), CLOSED, "closed"),
    Case(
        "closed-add_consumer", lambda e: e.closed()[1].add_consumer("BAD", durable_name="z"), CLOSED, "closed"
    ),
    Case("closed-consumer", lambda e: e.closed()[1].consumer("BAD", "ok"), CLOSED, "closed"),
    Case("closed-consumer_info", lambda e: e.closed()[1].consumer_info("BAD", "ok"), CLOSED, "closed"),
    Case("closed-delete_consumer", lambda e: e.closed()[1].delete_consumer("BAD", "ok"), CLOSED, "closed"),
    Case("closed-js.publish", lambda e: e.closed()[1].publish("bad.x", b""), CLOSED, "closed"),
    Case("closed-publish_many", lambda e: e.closed()[1].publish_many([("bad.x", b"")]), CLOSED, "closed"),
    Case("closed-fetch", lambda e: e.closed()[2].fetch(1, max_wait=1), CLOSED, "closed"),
    Case("closed-next", lambda e: e.closed()[2].next(1), CLOSED, "closed"),
    Case("closed-messages", lambda e: e.closed()[2].messages(), CLOSED, "closed"),
    Case("closed-consume", lambda e: e.closed()[2].consume(print), CLOSED, "closed"),
    Case("closed-consumer.info", lambda e: e.closed()[2].info(), CLOSED, "closed"),
    Case("closed-messages.next", lambda e: e.closed()[4].next(1), CLOSED, "closed"),
    Case("closed-messages-iter", lambda e: next(e.closed()[4]), CLOSED, "closed"),
    Case("closed-msg.ack", lambda e: e.closed()[3].ack(), CLOSED, "closed"),
    Case("closed-msg.nak", lambda e: e.closed()[3].nak(), CLOSED, "closed"),
    Case("closed-msg.term", lambda e: e.closed()[3].term(), CLOSED, "closed"),
    Case("closed-msg.in_progress", lambda e: e.closed()[3].in_progress(), CLOSED, "closed"),
    Case("closed-msg.ack_sync", lambda e: e.closed()[3].ack_sync(timeout=1), CLOSED, "closed"),
    # ------------------------------------------------------- from the loop thread
    Case(
        "loop-request",
        lambda e: e.on_loop(lambda: e.client.request("a", b"", timeout=1)),
        RuntimeError,
        ON_LOOP,
    ),
    Case("loop-flush", lambda e: e.on_loop(lambda: e.client.flush(1)), RuntimeError, ON_LOOP),
    Case("loop-close", lambda e: e.on_loop(lambda: e.client.close()), RuntimeError, ON_LOOP),
    Case("loop-add_stream", lambda e: e.on_loop(lambda: e.js.add_stream(name="L")), RuntimeError, ON_LOOP),
    Case("loop-stream_info", lambda e: e.on_loop(lambda: e.js.stream_info("BAD")), RuntimeError, ON_LOOP),
    Case("loop-consumer", lambda e: e.on_loop(lambda: e.js.consumer("BAD", "ok")), RuntimeError, ON_LOOP),
    Case("loop-js.publish", lambda e: e.on_loop(lambda: e.js.publish("bad.x", b"")), RuntimeError, ON_LOOP),
    Case(
        "loop-publish_many",
        lambda e: e.on_loop(lambda: e.js.publish_many([("bad.x", b"")])),
        RuntimeError,
        ON_LOOP,
    ),
    Case("loop-fetch", lambda e: e.on_loop(lambda: e.consumer.fetch(1, max_wait=1)), RuntimeError, ON_LOOP),
    Case("loop-next", lambda e: e.on_loop(lambda: e.consumer.next(1)), RuntimeError, ON_LOOP),
    Case("loop-messages", lambda e: e.on_loop(lambda: e.consumer.messages()), RuntimeError, ON_LOOP),
    Case("loop-consume", lambda e: e.on_loop(lambda: e.consumer.consume(print)), RuntimeError, ON_LOOP),
    Case("loop-consumer.info", lambda e: e.on_loop(lambda: e.consumer.info()), RuntimeError, ON_LOOP),
    Case(
        "loop-messages.next",
        lambda e: [msgs := e.messages(), e.on_loop(lambda: msgs.next(0.5))],
        RuntimeError,
        ON_LOOP,
    ),
    Case(
        "loop-msg.ack_sync", lambda e: [m := e.msg(), e.on_loop(lambda: m.ack_sync(1))], RuntimeError, ON_LOOP
    ),
    Case(
        "loop-shutdown_on_signals",
        lambda e: e.on_loop(lambda: natspull.shutdown_on_signals()),
        RuntimeError,
        "main",
    ),
]


def _params() -> list[Any]:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    return [pytest.param(case, id=case.id) for case in CASES]


def _dispose(result: object) -> None:
    """Clean up whatever an unexpectedly successful call returned."""
    if isinstance(result, natspull.Client):
        result.close()
    elif hasattr(result, "stop"):
        result.stop()
        if hasattr(result, "wait"):
            result.wait(CALL_BOUND)


def call_bounded(case: Case, env: Env) -> BaseException | None:
    """Run the case's call (on a helper thread unless it must run on the main thread), bounded in time."""
    if case.main_thread:
        previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            _dispose(case.call(env))
        except Exception as exc:
            return exc
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return None
    out: list[BaseException | None] = []

    def run() -> None:
        try:
            _dispose(case.call(env))
            out.append(None)
        except BaseException as exc:
            out.append(exc)

    thread = threading.Thread(target=run, name=f"bad-input-{case.id}", daemon=True)
    thread.start()
    thread.join(CALL_BOUND)
    assert not thread.is_alive(), f"{case.id}: the call did not return within {CALL_BOUND} s"
    return out[0]


@pytest.mark.parametrize("case", _params())
def test_bad_input(env: Env, case: Case) -> None:
    error = call_bounded(case, env)
    assert error is not None, f"{case.id}: no error raised"
    assert type(error).__module__.startswith(("natspull", "builtins")), f"{type(error)}: {error}"
    assert isinstance(error, case.raises), f"{case.id}: {type(error).__name__}: {error}"
    assert re.search(case.match, str(error)), f"{case.id}: {str(error)!r} does not match {case.match!r}"
    env.assert_usable()


def test_close_after_close_from_a_thread_that_reuses_the_loop_threads_id(server: NatsServer) -> None:
    """close() is idempotent from any thread, even one that got the dead loop thread's id."""
    client = natspull.connect(server.url)
    loop_ident = client._loop_thread._thread.ident
    client.close()
    result: list[object] = []
    for _ in range(100):  # thread ids are recycled: find a thread that got the same one

        def attempt() -> None:
            if threading.get_ident() != loop_ident:
                return
            try:
                client.close()
                result.append("closed")
            except BaseException as exc:
                result.append(exc)

        thread = threading.Thread(target=attempt)
        thread.start()
        thread.join(5)
        if result:
            break
    else:
        pytest.skip("no new thread reused the loop thread's id")
    assert result == ["closed"]


def test_shutdown_on_signals_installs_nothing_when_a_signal_is_invalid() -> None:
    previous = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises((ValueError, TypeError, OSError)):
            natspull.shutdown_on_signals(_Target(), signals=[signal.SIGINT, 99999])
        assert signal.getsignal(signal.SIGINT) is previous
    finally:
        signal.signal(signal.SIGINT, previous)


_CREDS_SCRIPT = textwrap.dedent(
    """
    import sys, natspull
    try:
        natspull.connect(sys.argv[1], user_credentials=sys.argv[2], connect_timeout=1)
    except Exception as exc:
        print(type(exc).__module__, type(exc).__name__, exc, flush=True)
    """
)


def test_creds_file_without_a_jwt_fails_instead_of_hanging(server: NatsServer, files: Path) -> None:
    # In a subprocess: a hang there cannot leave a stuck loop thread in this process.
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CREDS_SCRIPT, server.url, str(files / "seed-only.creds")],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("connect() hung")
    assert proc.stdout.startswith(("natspull.errors ConnectError", "builtins ValueError")), proc.stdout
    assert "seed-only.creds" in proc.stdout or "user_credentials" in proc.stdout
