"""Logging in to a real deployment: NATS contexts (ADR-21), file keywords, the CLI's connection
flags and environment, their precedence, worker processes (connect_options, --init,
worker_client) - each against real nats-servers.

Every login kind (user/password, token, nkey seed file, credentials file in operator mode, mutual
TLS with a CA made here, TLS handshake first) is tried by keywords, by context (named, selected,
by path), and through the CLI by flags, by environment and by context. Certificates come from
``trustme``, the operator's JWTs from test_security's hand-signed ``nkeys`` helpers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nkeys
import pytest
import trustme
from conftest import fill, wait_until
from test_security import USER_KEY, USER_SEED, Operator, Pki, _public, creds_text

import natspull
from natspull.testing import NatsServer

CLI = [sys.executable, "-m", "natspull"]
TESTS = str(Path(__file__).parent)
PASSWORD = "s3cret-pw-ctx"
TOKEN = "t0ken-secret-ctx"
SECRETS = (PASSWORD, TOKEN, USER_SEED, "wrong-secret-pw")
STREAM = "CX"


# ------------------------------------------------------------------------------ servers


def with_stream(server: NatsServer, **login: Any) -> NatsServer:
    with natspull.connect(server.url, **login) as client:
        client.jetstream().add_stream(name=STREAM, subjects=["cx.>"])
    return server


@pytest.fixture(scope="module")
def users_server() -> Iterator[NatsServer]:
    config = (
        "authorization {\n  users = [\n"
        f"    {{user: alice, password: {PASSWORD}}}\n"
        f"    {{nkey: {_public(USER_KEY)}}}\n"
        "  ]\n}"
    )
    with NatsServer(config=config) as server:
        yield with_stream(server, user="alice", password=PASSWORD)


@pytest.fixture(scope="module")
def token_server() -> Iterator[NatsServer]:
    with NatsServer(config=f'authorization {{ token: "{TOKEN}" }}') as server:
        yield with_stream(server, token=TOKEN)


@pytest.fixture(scope="module")
def operator() -> Operator:
    return Operator()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, operator: Operator) -> Path:
    """A directory with the seed file, the credentials file and the PKI (server and client)."""
    directory = tmp_path_factory.mktemp("login")
    (directory / "user.nk").write_text(USER_SEED + "\n")
    (directory / "user.creds").write_text(creds_text(operator.user_jwt, operator.user_seed))
    pki = Pki(directory, "127.0.0.1", "localhost")
    client = pki.ca.issue_cert("client@natspull.test")
    client.private_key_pem.write_to_path(str(directory / "client-key.pem"))
    client.cert_chain_pems[0].write_to_path(str(directory / "client-cert.pem"))
    return directory


@pytest.fixture(scope="module")
def operator_server(operator: Operator, files: Path) -> Iterator[NatsServer]:
    with NatsServer(config=operator.server_config()) as server:
        yield with_stream(server, creds=str(files / "user.creds"))


def tls_config(files: Path, *, first: bool) -> str:
    return (
        "tls {\n"
        f"  cert_file: {json.dumps(str(files / 'cert.pem'))}\n"
        f"  key_file: {json.dumps(str(files / 'key.pem'))}\n"
        f"  ca_file: {json.dumps(str(files / 'ca.pem'))}\n"
        "  verify: true\n"  # mutual TLS: the client certificate matters too
        f"  handshake_first: {'true' if first else 'false'}\n"
        "  timeout: 2\n"
        "}"
    )


def tls_login(files: Path) -> dict[str, str]:
    return {
        "tls_cert": str(files / "client-cert.pem"),
        "tls_key": str(files / "client-key.pem"),
        "tls_ca": str(files / "ca.pem"),
    }


@pytest.fixture(scope="module")
def tls_server(files: Path) -> Iterator[NatsServer]:
    with NatsServer(config=tls_config(files, first=False)) as server:
        yield with_stream(server, **tls_login(files))


@pytest.fixture(scope="module")
def tls_first_server(files: Path) -> Iterator[NatsServer]:
    with NatsServer(config=tls_config(files, first=True)) as server:
        yield with_stream(server, tls_handshake_first=True, **tls_login(files))


# ------------------------------------------------------------------------------ logins


@dataclass
class Login:
    """One way to log in, as connect() keywords, context fields, CLI flags and variables."""

    server: NatsServer
    keywords: dict[str, Any]
    context: dict[str, Any]
    flags: list[str]
    env: dict[str, str] | None  # None: the nats CLI has no variable for it
    wrong: dict[str, Any] = field(default_factory=dict)  # keywords that must be refused


KINDS = ["password", "token", "nkey", "creds", "jwt", "tls", "tls_first"]


@pytest.fixture(scope="module")
def logins(
    users_server: NatsServer,
    token_server: NatsServer,
    operator_server: NatsServer,
    tls_server: NatsServer,
    tls_first_server: NatsServer,
    files: Path,
    operator: Operator,
) -> dict[str, Login]:
    seed, creds = str(files / "user.nk"), str(files / "user.creds")
    tls = tls_login(files)
    tls_context = {"cert": tls["tls_cert"], "key": tls["tls_key"], "ca": tls["tls_ca"]}
    tls_flags = ["--tlscert", tls["tls_cert"], "--tlskey", tls["tls_key"], "--tlsca", tls["tls_ca"]]
    tls_env = {"NATS_CERT": tls["tls_cert"], "NATS_KEY": tls["tls_key"], "NATS_CA": tls["tls_ca"]}
    return {
        "password": Login(
            users_server,
            {"user": "alice", "password": PASSWORD},
            {"user": "alice", "password": PASSWORD},
            ["--user", "alice", "--password", PASSWORD],
            {"NATS_USER": "alice", "NATS_PASSWORD": PASSWORD},
        ),
        "token": Login(
            token_server,
            {"token": TOKEN},
            {"token": TOKEN},
            ["--token", TOKEN],
            {"NATS_TOKEN": TOKEN},
        ),
        "nkey": Login(users_server, {"nkey": seed}, {"nkey": seed}, ["--nkey", seed], {"NATS_NKEY": seed}),
        "creds": Login(
            operator_server, {"creds": creds}, {"creds": creds}, ["--creds", creds], {"NATS_CREDS": creds}
        ),
        # a context's inline user_jwt and user_seed (ADR-21); the keywords and flags of that
        # login are the same JWT and seed in a credentials file
        "jwt": Login(
            operator_server,
            {"creds": creds},
            {"user_jwt": operator.user_jwt, "user_seed": operator.user_seed},
            ["--creds", creds],
            None,
        ),
        "tls": Login(tls_server, tls, tls_context, tls_flags, tls_env),
        "tls_first": Login(
            tls_first_server,
            {**tls, "tls_handshake_first": True},
            {**tls_context, "tls_first": True},
            [*tls_flags, "--tlsfirst"],
            None,
        ),
    }


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty $XDG_CONFIG_HOME for this test (and no NATS_* variable from outside)."""
    home = tmp_path / "config"
    (home / "nats" / "context").mkdir(parents=True)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    for name in list(os.environ):
        if name.startswith("NATS_"):
            monkeypatch.delenv(name)
    return home


def write_context(xdg: Path, name: str, **fields: Any) -> Path:
    path = xdg / "nats" / "context" / f"{name}.json"
    path.write_text(json.dumps({"description": "made by a test", **fields}))
    return path


def select(xdg: Path, name: str) -> None:
    (xdg / "nats" / "context.txt").write_text(name + "\n")


def works(client: natspull.Client) -> None:
    """The login reaches JetStream: a publish to the stream is acknowledged."""
    assert client.jetstream(timeout=5).publish("cx.check", b"ok", timeout=5).stream == STREAM


# ------------------------------------------------------------------------------ connect()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_connect_by_keywords_and_by_context(kind: str, logins: dict[str, Login], xdg: Path) -> None:
    login = logins[kind]
    with natspull.connect(login.server.url, **login.keywords) as client:
        works(client)
    path = write_context(xdg, kind, url=login.server.url, **login.context)
    with natspull.connect(context=kind) as client:  # named
        works(client)
    select(xdg, kind)
    with natspull.connect(context="") as client:  # selected
        works(client)
    with natspull.connect(context=str(path)) as client:  # by path
        works(client)
    with natspull.connect(context=path) as client:  # a PathLike
        works(client)


@pytest.mark.timeout(60)
def test_keywords_override_the_context(logins: dict[str, Login], xdg: Path, files: Path) -> None:
    users = logins["password"].server
    dead = NatsServer()  # a free port nobody listens on
    write_context(xdg, "stale", url=dead.url, user="alice", password="wrong-secret-pw")
    with pytest.raises(natspull.ConnectError):
        natspull.connect(context="stale", connect_timeout=0.5)
    with natspull.connect(users.url, context="stale", password=PASSWORD) as client:
        works(client)
    # tls= replaces the context's cert/key/ca as a whole (here a CA file that does not exist)
    tls = logins["tls"]
    write_context(xdg, "tls", url=tls.server.url, **{**tls.context, "ca": str(files / "absent.pem")})
    with pytest.raises(ValueError, match=r"tls_ca: cannot load .*absent\.pem"):
        natspull.connect(context="tls")
    with natspull.connect(context="tls", tls_ca=str(files / "ca.pem")) as client:  # key by key
        works(client)
    ctx = ssl.create_default_context(cafile=str(files / "ca.pem"))
    ctx.load_cert_chain(str(files / "client-cert.pem"), str(files / "client-key.pem"))
    with natspull.connect(context="tls", tls=ctx) as client:
        works(client)


@pytest.mark.timeout(30)
def test_jetstream_domain_and_prefix_from_the_context(users_server: NatsServer, xdg: Path) -> None:
    login = {"url": users_server.url, "user": "alice", "password": PASSWORD}
    write_context(xdg, "hub", jetstream_domain="hub", **login)
    with natspull.connect(context="hub") as client:
        assert client.jetstream().api_prefix == "$JS.hub.API"
        assert client.jetstream(api_prefix="$JS.API").api_prefix == "$JS.API"  # the caller's wins
        assert client.jetstream(domain="leaf").api_prefix == "$JS.leaf.API"
    write_context(xdg, "plain", jetstream_api_prefix="$JS.API", inbox_prefix="_MY_INBOX", **login)
    with natspull.connect(context="plain") as client:
        works(client)
    write_context(xdg, "both", jetstream_domain="hub", jetstream_api_prefix="$JS.API", **login)
    with pytest.raises(ValueError, match="jetstream_domain or jetstream_api_prefix"):
        natspull.connect(context="both")


@pytest.mark.timeout(30)
def test_cosmetic_and_empty_context_fields_are_ignored(users_server: NatsServer, xdg: Path) -> None:
    write_context(
        xdg,
        "cosmetic",
        url=users_server.url,
        user="alice",
        password=PASSWORD,
        color_scheme="blue",
        jetstream_event_prefix="",
        nsc="",
        socks_proxy="",
        windows_cert_store="",
        windows_ca_certs_match=[],
        tls_first=False,
    )
    with natspull.connect(context="cosmetic") as client:
        works(client)


@pytest.mark.timeout(60)
def test_secrets_never_appear_in_errors_repr_or_logs(
    logins: dict[str, Login], xdg: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    users = logins["password"].server
    write_context(xdg, "wrong", url=users.url, user="alice", password="wrong-secret-pw")
    write_context(xdg, "right", url=users.url, user="alice", password=PASSWORD)
    for call in (
        lambda: natspull.connect(context="wrong"),
        lambda: natspull.connect(users.url, user="alice", password="wrong-secret-pw"),
        lambda: natspull.connect(logins["token"].server.url, token="wrong-secret-pw"),
    ):
        with pytest.raises(natspull.ConnectError) as info:
            call()
        assert users.url in str(info.value) or logins["token"].server.url in str(info.value)
        assert "authorization" in str(info.value).lower() or "reset" in str(info.value).lower()
        texts += [str(info.value), repr(info.value)]
    for kind in KINDS:
        login = logins[kind]
        with natspull.connect(login.server.url, **login.keywords) as client:
            texts += [repr(client), str(client)]
    with natspull.connect(context="right") as client:
        texts += [repr(client), repr(client.server_info)]
    texts += [record.getMessage() for record in caplog.records]
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} leaked in {text!r}"


@pytest.mark.timeout(60)
def test_a_context_with_an_inline_jwt_of_an_unknown_account_is_refused(
    operator_server: NatsServer, operator: Operator, xdg: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    stranger = nkeys.from_seed(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_ACCOUNT))
    bad = operator.user_jwt_signed_by(stranger)
    write_context(xdg, "stranger", url=operator_server.url, user_jwt=bad, user_seed=operator.user_seed)
    with pytest.raises(natspull.ConnectError, match=r"(?i)authorization") as info:
        natspull.connect(context="stranger", connect_timeout=5)
    texts = [str(info.value), repr(info.value), *(r.getMessage() for r in caplog.records)]
    assert not [t for t in texts if operator.user_seed in t or bad in t]


# ------------------------------------------------------------------------------ the CLI


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"<Result code={self.code}\n--- stdout\n{self.out[-3000:]}\n--- stderr\n{self.err[-3000:]}>"

    def assert_no_secret(self) -> None:
        for secret in SECRETS:
            assert secret not in self.out and secret not in self.err, (secret, self)


def run(xdg: Path, *args: str, **env: str) -> Result:
    """``python -m natspull ARGS`` with $XDG_CONFIG_HOME=*xdg*, no NATS_* but *env*."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    environ.update(XDG_CONFIG_HOME=str(xdg), **env)
    proc = subprocess.run([*CLI, *args], capture_output=True, timeout=60, env=environ)
    result = Result(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
    result.assert_no_secret()
    return result


def published(result: Result) -> None:
    assert result.code == 0, result
    assert f"to stream {STREAM}" in result.out, result


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", KINDS)
def test_cli_logs_in_by_flags_environment_and_context(kind: str, logins: dict[str, Login], xdg: Path) -> None:
    login = logins[kind]
    url = login.server.url
    published(run(xdg, "publish", "cx.flags", "x", "--server", url, *login.flags, "-vv"))
    if login.env is not None:
        published(run(xdg, "publish", "cx.env", "x", "-vv", NATS_URL=url, **login.env))
    write_context(xdg, kind, url=url, **login.context)
    published(run(xdg, "publish", "cx.named", "x", "--context", kind))
    published(run(xdg, "publish", "cx.named", "x", NATS_CONTEXT=kind))
    select(xdg, kind)
    published(run(xdg, "publish", "cx.selected", "x", "-vv"))


@pytest.mark.timeout(120)
def test_cli_precedence_flag_env_named_context_selected_context(users_server: NatsServer, xdg: Path) -> None:
    """Each level is given the wrong password or the right one in turn: the higher one decides."""
    url = users_server.url
    write_context(xdg, "good", url=url, user="alice", password=PASSWORD)
    write_context(xdg, "bad", url=url, user="alice", password="wrong-secret-pw")
    select(xdg, "good")
    published(run(xdg, "publish", "cx.p", "x"))  # the selected context
    assert run(xdg, "publish", "cx.p", "x", NATS_CONTEXT="bad").code == 4  # named beats selected
    select(xdg, "bad")
    published(run(xdg, "publish", "cx.p", "x", NATS_CONTEXT="good"))
    published(run(xdg, "publish", "cx.p", "x", "--context", "good", NATS_CONTEXT="bad"))  # flag beats env
    # the environment beats the named context
    published(run(xdg, "publish", "cx.p", "x", "--context", "bad", NATS_PASSWORD=PASSWORD))
    assert run(xdg, "publish", "cx.p", "x", "--context", "good", NATS_PASSWORD="wrong-secret-pw").code == 4
    # a flag beats the environment
    published(run(xdg, "publish", "cx.p", "x", "--password", PASSWORD, NATS_PASSWORD="wrong-secret-pw"))
    result = run(xdg, "publish", "cx.p", "x", "--password", "wrong-secret-pw", NATS_PASSWORD=PASSWORD)
    assert result.code == 4, result
    # servers: --server beats $NATS_URL beats the context's url
    dead = NatsServer().url
    write_context(xdg, "elsewhere", url=dead, user="alice", password=PASSWORD)
    published(run(xdg, "publish", "cx.p", "x", "--context", "elsewhere", NATS_URL=url))
    published(run(xdg, "publish", "cx.p", "x", "--context", "elsewhere", "--server", url, NATS_URL=dead))
    assert run(xdg, "publish", "cx.p", "x", "--context", "elsewhere").code == 4


@pytest.mark.timeout(60)
def test_cli_refused_login_exits_4_naming_the_server(
    logins: dict[str, Login], xdg: Path, tmp_path: Path
) -> None:
    users = logins["password"].server
    result = run(
        xdg, "publish", "cx.r", "x", "--server", users.url, "--user", "alice", NATS_PASSWORD="wrong-secret-pw"
    )
    assert result.code == 4, result
    line = result.err.strip()
    assert "\n" not in line and users.url in line and "authorization" in line.lower(), result
    assert "Traceback" not in result.err
    stranger = tmp_path / "stranger.pem"
    trustme.CA().cert_pem.write_to_path(str(stranger))
    tls = logins["tls"].server
    result = run(xdg, "publish", "cx.r", "x", "--server", tls.url, "--tlsca", str(stranger))
    assert result.code == 4 and tls.url in result.err and "TLS failed" in result.err, result
    assert "exit codes" in run(xdg, "publish", "--help").out
    assert "refused the login" in run(xdg, "publish", "--help").out


@pytest.mark.timeout(60)
def test_cli_bad_context_is_a_usage_error(xdg: Path) -> None:
    path = write_context(xdg, "nsc", url="nats://127.0.0.1:1", nsc="nsc://op/acc/user")
    result = run(xdg, "publish", "cx.u", "x", "--context", "nsc")
    assert result.code == 2 and "'nsc'" in result.err and str(path) in result.err, result
    result = run(xdg, "publish", "cx.u", "x", "--context", "absent")
    assert result.code == 2 and "not found" in result.err, result
    result = run(xdg, "demo", "--user", "alice")
    assert result.code == 2 and "--user needs --server" in result.err, result


@pytest.mark.timeout(60)
def test_cli_consume_and_demo_take_the_connection_flags(logins: dict[str, Login], xdg: Path) -> None:
    login = logins["token"]
    url = login.server.url
    with natspull.connect(url, **login.keywords) as client:
        js = client.jetstream()
        js.publish("cx.consume", b"for the consumer")
        js.add_consumer(STREAM, durable_name="cli", filter_subject="cx.consume")
    result = run(xdg, "consume", STREAM, "cli", "--count", "1", "--json", "--server", url, *login.flags)
    assert result.code == 0 and "for the consumer" in result.out, result
    result = run(xdg, "demo", "--messages", "50", "--server", url, NATS_TOKEN=TOKEN)
    assert result.code == 0 and "acked" in result.out, result


# ------------------------------------------------------------------------------ workers


class Worker:
    """``python -m natspull worker`` as a subprocess, its ledger and output in *tmp*."""

    def __init__(self, tmp: Path, xdg: Path, *args: str, **env: str) -> None:
        self.ledger = tmp / "ledger"
        self.out, self.err = tmp / "stdout", tmp / "stderr"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
        environ.update(
            XDG_CONFIG_HOME=str(xdg),
            PYTHONPATH=os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]),
            NATSPULL_TEST_LEDGER=str(self.ledger),
            **env,
        )
        argv = [*CLI, "worker", *args, "--status", "lines", "--status-interval", "0.5"]
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=err, env=environ)

    def lines(self, kind: str) -> list[list[str]]:
        try:
            text = self.ledger.read_text()
        except FileNotFoundError:
            return []
        return [line.split() for line in text.splitlines() if line.startswith(kind + " ")]

    def output(self) -> str:
        return self.out.read_text() + self.err.read_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for line in self.lines("load"):  # never leave a child behind
            if line[2] != "MainProcess":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(line[1]), signal.SIGKILL)


@pytest.fixture
def start_worker(tmp_path: Path, xdg: Path) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(*args: str, **env: str) -> Worker:
        worker = Worker(tmp_path, xdg, *args, **env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.close()


@pytest.mark.timeout(120)
def test_worker_logs_in_from_the_environment_runs_init_once_and_publishes_with_worker_client(
    users_server: NatsServer, start_worker: Callable[..., Worker]
) -> None:
    n = 200
    with natspull.connect(users_server.url, user="alice", password=PASSWORD) as admin:
        js = admin.jetstream()
        js.add_stream(name="WK", subjects=["WK.>"])
        js.add_stream(name="RES", subjects=["result.>"])
        fill(js, "WK", n)
        js.add_consumer("WK", durable_name="work", ack_policy=natspull.AckPolicy.EXPLICIT)
        worker = start_worker(
            "worker_targets:publish_result",
            "--stream", "WK", "--consumer", "work", "--processes", "2",
            "--init", "worker_targets:init_record",
            NATS_URL=users_server.url, NATS_USER="alice", NATS_PASSWORD=PASSWORD,
        )  # fmt: skip
        wait_until(
            lambda: len(worker.lines("ack")) == n, 60, lambda: f"every message handled: {worker.output()}"
        )
        wait_until(lambda: js.stream_info("RES").state.messages == n, 10, "every result published")
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(60) == 0, worker.output()
    inits = [int(line[1]) for line in worker.lines("init")]
    workers = {int(line[1]) for line in worker.lines("load") if line[2] != "MainProcess"}
    assert sorted(inits) == sorted(workers) and len(workers) == 2  # once in each process
    assert {int(line[1]) for line in worker.lines("ack")} <= workers
    for secret in SECRETS:
        assert secret not in worker.output()


@pytest.mark.timeout(120)
def test_an_init_that_raises_stops_the_fleet_without_restarts(
    users_server: NatsServer, start_worker: Callable[..., Worker]
) -> None:
    with natspull.connect(users_server.url, user="alice", password=PASSWORD) as admin:
        js = admin.jetstream()
        js.add_stream(name="INIT", subjects=["INIT.>"])
        js.add_consumer("INIT", durable_name="work")
    worker = start_worker(
        "worker_targets:record",
        "--stream", "INIT", "--consumer", "work", "--processes", "2",
        "--init", "worker_targets:init_fails", "--server", users_server.url,
        "--user", "alice", NATS_PASSWORD=PASSWORD,
    )  # fmt: skip
    assert worker.proc.wait(60) == 6, worker.output()
    output = worker.output()
    assert "init worker_targets:init_fails raised RuntimeError: the database is not there" in output
    assert "no restart" in output and "restarting" not in output
    inits = [int(line[1]) for line in worker.lines("init")]
    assert 1 <= len(inits) <= 2 and len(set(inits)) == len(inits)  # never twice in a process, no new one
    assert len({line[1] for line in worker.lines("load") if line[2] != "MainProcess"}) <= 2


@pytest.mark.timeout(60)
def test_worker_refused_login_exits_4(users_server: NatsServer, start_worker: Callable[..., Worker]) -> None:
    worker = start_worker(
        "worker_targets:record", "--stream", "X", "--consumer", "work",
        NATS_URL=users_server.url, NATS_USER="alice", NATS_PASSWORD="wrong-secret-pw",
    )  # fmt: skip
    assert worker.proc.wait(60) == 4, worker.output()
    assert users_server.url in worker.output() and "authorization" in worker.output().lower()
    assert "wrong-secret-pw" not in worker.output()


@pytest.mark.timeout(30)
def test_run_workers_checks_connect_options_at_once(tmp_path: Path) -> None:
    def run(**options: Any) -> None:
        natspull.run_workers("worker_targets:record", stream="S", consumer="c", connect_options=options)

    with pytest.raises(TypeError, match="unknown option 'bogus'"):
        run(bogus=1)
    with pytest.raises(TypeError, match="tls_cert="):
        run(tls=ssl.create_default_context())
    with pytest.raises(TypeError, match="'error_cb' cannot be pickled"):
        run(error_cb=lambda exc: None)
    with pytest.raises(ValueError, match="creds: cannot read"):
        run(creds=str(tmp_path / "missing.creds"))
    with pytest.raises(ValueError, match="target"):
        natspull.run_workers("worker_targets:record", stream="S", consumer="c", init="worker_targets:absent")


def test_worker_client_outside_a_worker_process() -> None:
    with pytest.raises(RuntimeError, match="only available in a worker process"):
        natspull.worker_client()
