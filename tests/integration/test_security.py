"""TLS, authentication, authorization and secret hygiene, against real nats-servers.

Certificates come from ``trustme``; nkeys and decentralised (JWT) users are made with the
``nkeys`` package, JWTs signed by hand, so no ``nsc`` tool is needed.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import os
import ssl
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nkeys
import pytest
import trustme

import natspull
from natspull.testing import NatsServer

_ids = itertools.count(1)


def assert_ours(exc: BaseException) -> None:
    """No nats-py or asyncio exception type crosses the public API."""
    assert type(exc).__module__.startswith(("natspull", "builtins")), type(exc)


def roundtrip(client: natspull.Client) -> None:
    """JetStream works for this connection: create a stream, publish, fetch, ack."""
    name = f"SEC{next(_ids)}"
    js = client.jetstream(timeout=5)
    js.add_stream(name=name, subjects=[f"{name}.>"])
    js.publish(f"{name}.a", b"hello", timeout=5)
    consumer = js.add_consumer(name, durable_name="c")
    msgs = consumer.fetch(1, max_wait=5)
    assert [m.data for m in msgs] == [b"hello"]
    msgs[0].ack_sync(timeout=5)


def connect_error(call: Callable[[], object], within: float = 1.0) -> natspull.ConnectError:
    """Run a connect that must fail, quickly, with a natspull.ConnectError; return the error."""
    t0 = time.monotonic()
    with pytest.raises(natspull.ConnectError) as info:
        call()
    assert time.monotonic() - t0 < within, f"took {time.monotonic() - t0:.2f} s"
    assert_ours(info.value)
    return info.value


# ------------------------------------------------------------------------------ TLS


class Pki:
    """A CA and files for a server certificate, in one directory."""

    def __init__(self, directory: Path, *server_names: str) -> None:
        self.ca = trustme.CA()
        self.dir = directory
        cert = self.ca.issue_cert(*server_names)
        cert.private_key_pem.write_to_path(str(directory / "key.pem"))
        cert.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
        self.ca.cert_pem.write_to_path(str(directory / "ca.pem"))

    def server_config(self, *, verify: bool = False) -> str:
        return (
            "tls {\n"
            f"  cert_file: {json.dumps(str(self.dir / 'cert.pem'))}\n"
            f"  key_file: {json.dumps(str(self.dir / 'key.pem'))}\n"
            f"  ca_file: {json.dumps(str(self.dir / 'ca.pem'))}\n"
            f"  verify: {'true' if verify else 'false'}\n"
            "  timeout: 2\n"
            "}"
        )

    def client_context(
        self, client_cert_from: trustme.CA | None = None, *, tls12: bool = False
    ) -> ssl.SSLContext:
        """A context trusting this CA; with a client certificate issued by *client_cert_from*."""
        ctx = ssl.create_default_context(cafile=str(self.dir / "ca.pem"))
        if tls12:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        if client_cert_from is not None:
            client_cert_from.issue_cert("client@natspull.test").configure_cert(ctx)
        return ctx


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A server certificate for 127.0.0.1 and localhost."""
    return Pki(tmp_path_factory.mktemp("pki"), "127.0.0.1", "localhost")


@pytest.fixture(scope="module")
def tls_server(pki: Pki) -> Iterator[NatsServer]:
    # The readiness check (HTTP /healthz plus a plain TCP connect) works with TLS on the client port.
    with NatsServer(config=pki.server_config()) as server:
        yield server


def assert_info(client: natspull.Client, key: str, value: object) -> None:
    """*key* of the server's INFO is *value*; in the portable mode (NATSPULL_PORTABLE=1) INFO
    holds only what nats-py's public API tells (version, max_payload, client_id): none of it."""
    if client._conn.wire.portable:
        assert key not in client.server_info and {"version", "max_payload"} <= client.server_info.keys()
    else:
        assert client.server_info[key] == value


@pytest.mark.parametrize("scheme", ["nats", "tls"])
def test_tls_with_a_ca_verified_server_certificate(tls_server: NatsServer, pki: Pki, scheme: str) -> None:
    url = tls_server.url.replace("nats://", f"{scheme}://")
    with natspull.connect(url, tls=pki.client_context(), name="tls-client") as client:
        assert_info(client, "tls_required", True)
        roundtrip(client)
        conns = [c for c in tls_server.connz()["connections"] if c.get("name") == "tls-client"]
        assert len(conns) == 1 and conns[0]["tls_version"].startswith("1.")


def test_tls_with_a_wrong_ca_fails_clearly(tls_server: NatsServer) -> None:
    other = trustme.CA()
    ctx = ssl.create_default_context()
    other.configure_trust(ctx)
    error = connect_error(lambda: natspull.connect(tls_server.url, tls=ctx))
    assert "TLS failed" in str(error)
    assert "certificate verify failed" in str(error)
    assert tls_server.url in str(error)
    # No tls= at all: the server requires TLS, the system trust store does not know our CA.
    error = connect_error(lambda: natspull.connect(tls_server.url))
    assert "certificate verify failed" in str(error)


def test_tls_certificate_for_another_host_name(tmp_path: Path) -> None:
    pki = Pki(tmp_path, "nats.example")
    with NatsServer(config=pki.server_config()) as server:
        error = connect_error(lambda: natspull.connect(server.url, tls=pki.client_context()))
        assert "TLS failed" in str(error)
        assert "mismatch" in str(error)
        error = connect_error(
            lambda: natspull.connect(server.url, tls=pki.client_context(), tls_hostname="other.example")
        )
        assert "mismatch" in str(error)
        with natspull.connect(server.url, tls=pki.client_context(), tls_hostname="nats.example") as client:
            roundtrip(client)


def test_mutual_tls(tmp_path: Path) -> None:
    pki = Pki(tmp_path, "127.0.0.1")
    with NatsServer(config=pki.server_config(verify=True)) as server:
        with natspull.connect(server.url, tls=pki.client_context(pki.ca), name="mtls") as client:
            assert_info(client, "tls_verify", True)
            roundtrip(client)
            conns = [c for c in server.connz(auth=True)["connections"] if c.get("name") == "mtls"]
            assert len(conns) == 1 and conns[0]["tls_peer_certs"]
        # TLS 1.2: the server checks the client certificate inside the handshake, so the refusal
        # always arrives as a TLS alert. With TLS 1.3 the check comes after the client finished its
        # handshake, and now and then the refusal arrives as a broken pipe (reported to the lead).
        error = connect_error(lambda: natspull.connect(server.url, tls=pki.client_context(tls12=True)))
        assert "TLS failed" in str(error) and "handshake failure" in str(error).lower()
        stranger = trustme.CA()
        error = connect_error(
            lambda: natspull.connect(server.url, tls=pki.client_context(stranger, tls12=True))
        )
        assert "TLS failed" in str(error)


# ---------------------------------------------------------------------- authentication


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _keypair(prefix: int) -> nkeys.KeyPair:
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def _public(key: nkeys.KeyPair) -> str:
    return str(key.public_key.decode())


def make_jwt(signer: nkeys.KeyPair, subject: str, name: str, nats: dict[str, Any]) -> str:
    """A NATS JWT (``ed25519-nkey``) with *nats* claims, signed by *signer*."""
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    claims = {
        "jti": _b64(os.urandom(16)),
        "iat": int(time.time()),
        "iss": _public(signer),
        "name": name,
        "sub": subject,
        "nats": {**nats, "version": 2},
    }
    body = _b64(json.dumps(claims).encode())
    signature = _b64(signer.sign(f"{header}.{body}".encode()))
    return f"{header}.{body}.{signature}"


def creds_text(user_jwt: str, seed: str) -> str:
    return (
        f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )


class Operator:
    """Decentralised auth: an operator, a system account, a JetStream account and a user."""

    UNLIMITED = {
        "subs": -1,
        "data": -1,
        "payload": -1,
        "imports": -1,
        "exports": -1,
        "wildcards": True,
        "conn": -1,
        "leaf": -1,
    }

    def __init__(self) -> None:
        self.operator = _keypair(nkeys.PREFIX_BYTE_OPERATOR)
        self.system = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
        self.account = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
        self.user = _keypair(nkeys.PREFIX_BYTE_USER)
        self.user_seed = str(self.user.seed.decode())
        op, sys_acc = _public(self.operator), _public(self.system)
        self.operator_jwt = make_jwt(self.operator, op, "op", {"type": "operator", "system_account": sys_acc})
        self.system_jwt = make_jwt(
            self.operator, sys_acc, "SYS", {"type": "account", "limits": self.UNLIMITED}
        )
        js_limits = {**self.UNLIMITED, "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
        self.account_jwt = make_jwt(
            self.operator, _public(self.account), "app", {"type": "account", "limits": js_limits}
        )
        self.user_jwt = self.user_jwt_signed_by(self.account)

    def user_jwt_signed_by(self, account: nkeys.KeyPair) -> str:
        claims = {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}
        return make_jwt(account, _public(self.user), "worker", claims)

    def server_config(self) -> str:
        return (
            f"operator: {self.operator_jwt}\n"
            "resolver: MEMORY\n"
            "resolver_preload: {\n"
            f"  {_public(self.system)}: {self.system_jwt}\n"
            f"  {_public(self.account)}: {self.account_jwt}\n"
            "}\n"
        )


USER_KEY = _keypair(nkeys.PREFIX_BYTE_USER)
USER_SEED = str(USER_KEY.seed.decode())
STRANGER_SEED = str(_keypair(nkeys.PREFIX_BYTE_USER).seed.decode())


@pytest.fixture(scope="module")
def users_server() -> Iterator[NatsServer]:
    """user/password and nkey users."""
    config = (
        "authorization {\n  users = [\n"
        "    {user: alice, password: s3cret-pw}\n"
        f"    {{nkey: {_public(USER_KEY)}}}\n"
        "  ]\n}"
    )
    with NatsServer(config=config) as server:
        yield server


@pytest.fixture(scope="module")
def token_server() -> Iterator[NatsServer]:
    with NatsServer(config='authorization { token: "t0ken-secret" }') as server:
        yield server


@pytest.fixture(scope="module")
def operator() -> Operator:
    return Operator()


@pytest.fixture(scope="module")
def operator_server(operator: Operator) -> Iterator[NatsServer]:
    with NatsServer(config=operator.server_config()) as server:
        yield server


def with_userinfo(url: str, userinfo: str) -> str:
    return url.replace("nats://", f"nats://{userinfo}@")


def test_user_and_password(users_server: NatsServer) -> None:
    with natspull.connect(users_server.url, user="alice", password="s3cret-pw") as client:
        roundtrip(client)
    with natspull.connect(with_userinfo(users_server.url, "alice:s3cret-pw")) as client:
        roundtrip(client)


def test_token(token_server: NatsServer) -> None:
    with natspull.connect(token_server.url, token="t0ken-secret") as client:
        roundtrip(client)
    with natspull.connect(with_userinfo(token_server.url, "t0ken-secret")) as client:
        roundtrip(client)


def test_nkey_seed_string_and_file(users_server: NatsServer, tmp_path: Path) -> None:
    with natspull.connect(users_server.url, nkeys_seed_str=USER_SEED) as client:
        roundtrip(client)
    seed_file = tmp_path / "user.nk"
    seed_file.write_text(USER_SEED + "\n")
    with natspull.connect(users_server.url, nkeys_seed=str(seed_file)) as client:
        roundtrip(client)


def test_creds_file(operator_server: NatsServer, operator: Operator, tmp_path: Path) -> None:
    creds = tmp_path / "worker.creds"
    creds.write_text(creds_text(operator.user_jwt, operator.user_seed))
    with natspull.connect(operator_server.url, user_credentials=str(creds)) as client:
        roundtrip(client)


def _auth_errors(server: NatsServer) -> int:
    with open(server.log_path, encoding="utf-8", errors="replace") as f:
        return sum("authentication error" in line or "authorization violation" in line.lower() for line in f)


def _wrong_credentials(
    users_server: NatsServer,
    token_server: NatsServer,
    operator_server: NatsServer,
    operator: Operator,
    tmp: Path,
) -> dict[str, tuple[NatsServer, Callable[[], object]]]:
    bad_creds = tmp / "bad.creds"
    stranger = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)  # not known to the operator
    bad_creds.write_text(creds_text(operator.user_jwt_signed_by(stranger), operator.user_seed))
    return {
        "wrong password": (
            users_server,
            lambda: natspull.connect(users_server.url, user="alice", password="wrong"),
        ),
        "wrong password in url": (
            users_server,
            lambda: natspull.connect(with_userinfo(users_server.url, "alice:wrong")),
        ),
        "no credentials": (users_server, lambda: natspull.connect(users_server.url)),
        "unknown nkey": (
            users_server,
            lambda: natspull.connect(users_server.url, nkeys_seed_str=STRANGER_SEED),
        ),
        "wrong token": (token_server, lambda: natspull.connect(token_server.url, token="wrong")),
        "creds of an unknown account": (
            operator_server,
            lambda: natspull.connect(operator_server.url, user_credentials=str(bad_creds)),
        ),
        "no creds": (operator_server, lambda: natspull.connect(operator_server.url)),
    }


@pytest.mark.parametrize(
    "case",
    [
        "wrong password",
        "wrong password in url",
        "no credentials",
        "unknown nkey",
        "wrong token",
        "creds of an unknown account",
        "no creds",
    ],
)
def test_wrong_credentials_fail_fast_without_a_retry_storm(
    users_server: NatsServer,
    token_server: NatsServer,
    operator_server: NatsServer,
    operator: Operator,
    tmp_path: Path,
    case: str,
) -> None:
    server, call = _wrong_credentials(users_server, token_server, operator_server, operator, tmp_path)[case]
    connections = server.varz()["total_connections"]
    refused = _auth_errors(server)
    before = set(threading.enumerate())
    # Default max_reconnect_attempts (60) and reconnect_time_wait (2 s): a retry would take seconds.
    error = connect_error(call, within=1.0)
    # The server writes -ERR 'Authorization Violation' and closes; now and then the client's PING
    # arrives after the close, the server's kernel answers with a reset and the client's kernel drops
    # the unread -ERR (about 1 in 20 times; reported to the lead).
    assert "authorization" in str(error).lower() or "connection reset" in str(error).lower()
    # Nothing is left to retry in the background: the connection's loop thread ended before
    # the call raised, so the one attempt below is all the server will ever see.
    assert [t.name for t in threading.enumerate() if t not in before] == []
    assert server.varz()["total_connections"] == connections + 1
    assert _auth_errors(server) == refused + 1


# ----------------------------------------------------------------------- authorization

_PERMISSIONS = """authorization {
  users = [
    {user: admin, password: admin}
    {user: nopull, password: nopull, permissions: {
      publish: {allow: ["$JS.API.>", "$JS.ACK.>"], deny: ["$JS.API.CONSUMER.MSG.NEXT.>"]}
      subscribe: {allow: ["_INBOX.>"]}
    }}
    {user: noack, password: noack, permissions: {
      publish: {allow: ["$JS.API.>"]}
      subscribe: {allow: ["_INBOX.>"]}
    }}
    {user: noinfo, password: noinfo, permissions: {
      publish: {allow: ["$JS.API.>"], deny: ["$JS.API.STREAM.INFO.>"]}
      subscribe: {allow: ["_INBOX.>"]}
    }}
  ]
}"""


@pytest.fixture(scope="module")
def permissions_server() -> Iterator[NatsServer]:
    with NatsServer(config=_PERMISSIONS) as server:
        with natspull.connect(server.url, user="admin", password="admin") as admin:
            js = admin.jetstream()
            js.add_stream(name="P", subjects=["p.>"])
            js.add_consumer("P", durable_name="c", ack_wait=30)
            js.publish_many(("p.m", b"%d" % i) for i in range(20))
        yield server


def as_user(server: NatsServer, user: str, **options: Any) -> natspull.Client:
    return natspull.connect(server.url, user=user, password=user, **options)


def test_fetch_without_pull_permission_raises_permission_error(permissions_server: NatsServer) -> None:
    with as_user(permissions_server, "nopull") as client:
        consumer = client.jetstream().consumer("P", "c")
        t0 = time.monotonic()
        with pytest.raises(natspull.PermissionError, match=r"(?i)permissions violation.*MSG\.NEXT") as info:
            consumer.fetch(1, max_wait=1)
        assert time.monotonic() - t0 < 0.8  # the server's -ERR, not the end of max_wait
        assert_ours(info.value)
        with pytest.raises(natspull.PermissionError):
            consumer.next(timeout=1)
        assert client.is_connected  # a permissions violation does not cost the connection


def test_messages_without_pull_permission_raise_permission_error(permissions_server: NatsServer) -> None:
    with as_user(permissions_server, "nopull") as client:
        consumer = client.jetstream().consumer("P", "c")
        msgs = consumer.messages(max_messages=10)
        try:
            t0 = time.monotonic()
            with pytest.raises(natspull.PermissionError):
                msgs.next(timeout=1)
            assert time.monotonic() - t0 < 0.8
            # The error is terminal and sticky: the for-loop raises it too, at once.
            seen: list[BaseException] = []

            def iterate() -> None:
                try:
                    for _ in msgs:
                        pass
                except BaseException as exc:
                    seen.append(exc)

            thread = threading.Thread(target=iterate)
            thread.start()
            thread.join(2)
            if thread.is_alive():
                msgs.stop()
                thread.join(5)
            assert seen and isinstance(seen[0], natspull.PermissionError)
            assert msgs.stats().pulls_sent <= 2  # no spin of re-pulls
        finally:
            msgs.stop()


def test_ack_without_permission_is_reported_to_error_cb(permissions_server: NatsServer) -> None:
    errors: list[BaseException] = []
    seen = threading.Event()

    def on_error(exc: BaseException) -> None:
        errors.append(exc)
        seen.set()

    with as_user(permissions_server, "noack", error_cb=on_error) as client:
        msg = client.jetstream().consumer("P", "c").next(timeout=5)
        msg.ack()  # fire and forget: the violation comes back asynchronously
        assert seen.wait(5)
        assert isinstance(errors[0], natspull.PermissionError)
        assert "$js.ack" in str(errors[0]).lower()
        assert client.is_connected


def test_ack_sync_without_ack_permission_raises_permission_error(permissions_server: NatsServer) -> None:
    with as_user(permissions_server, "noack") as client:
        msg = client.jetstream().consumer("P", "c").next(timeout=5)
        t0 = time.monotonic()
        with pytest.raises(natspull.PermissionError, match=r"(?i)permissions violation"):
            msg.ack_sync(timeout=1)
        assert time.monotonic() - t0 < 0.8
        assert not msg.acked  # not confirmed: the caller may retry


def test_management_call_without_permission_raises_permission_error(permissions_server: NatsServer) -> None:
    with as_user(permissions_server, "noinfo") as client:
        js = client.jetstream(timeout=1)
        t0 = time.monotonic()
        with pytest.raises(natspull.PermissionError):
            js.stream_info("P")
        assert time.monotonic() - t0 < 0.8


# ---------------------------------------------------------------------------- secrets

SECRETS = ("s3cret-pw", "hunter2-secret", "t0ken-secret", "url-pass-secret", USER_SEED, STRANGER_SEED)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _exception_texts(exc: BaseException) -> list[str]:
    """The exception as str/repr/traceback, and every exception chained to it."""
    texts = ["".join(traceback.format_exception_only(type(exc), exc))]
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), repr(current.args)]
        current = current.__cause__ or current.__context__
    return texts


def _record_texts(record: logging.LogRecord) -> list[str]:
    texts = [record.getMessage(), repr(record.args), str(record.msg)]
    if record.exc_info and record.exc_info[1] is not None:
        texts += _exception_texts(record.exc_info[1])
    return texts


def test_secrets_never_appear_in_repr_errors_or_logs(
    users_server: NatsServer, token_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="natspull")
    dead = f"nats://127.0.0.1:{_closed_port()}"
    texts: list[str] = []
    failing: list[Callable[[], object]] = [
        lambda: natspull.connect(with_userinfo(dead, "alice:url-pass-secret"), connect_timeout=0.2),
        lambda: natspull.connect(dead, user="alice", password="hunter2-secret", connect_timeout=0.2),
        lambda: natspull.connect(dead, token="t0ken-secret", connect_timeout=0.2),
        lambda: natspull.connect([with_userinfo(dead, "url-pass-secret"), dead], connect_timeout=0.2),
        lambda: natspull.connect(with_userinfo(users_server.url, "alice:url-pass-secret")),
        lambda: natspull.connect(users_server.url, user="alice", password="hunter2-secret"),
        lambda: natspull.connect(users_server.url, nkeys_seed_str=STRANGER_SEED),
        lambda: natspull.connect(with_userinfo(token_server.url, "url-pass-secret")),
    ]
    for call in failing:
        with pytest.raises(natspull.ConnectError) as info:
            call()
        texts += _exception_texts(info.value)
    errors: list[BaseException] = []
    with natspull.connect(
        with_userinfo(users_server.url, "alice:s3cret-pw"), error_cb=errors.append, name="secretive"
    ) as client:
        texts += [repr(client), str(client), repr(client.server_info)]
        roundtrip(client)
        with pytest.raises(natspull.Error) as info:
            client.request("nobody.home", b"", timeout=0.5)
        texts += _exception_texts(info.value)
    with natspull.connect(users_server.url, nkeys_seed_str=USER_SEED) as client:
        texts += [repr(client), str(client)]
    with natspull.connect(token_server.url, token="t0ken-secret") as client:
        texts += [repr(client), str(client)]
    for exc in errors:
        texts += _exception_texts(exc)
    assert caplog.records, "expected some log records to check"
    for record in caplog.records:
        texts += _record_texts(record)
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} leaked in {text!r}"
