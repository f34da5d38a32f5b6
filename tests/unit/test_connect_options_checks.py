"""Unit tests for natspull._connect_options (named apart from tests/integration/test_connect_options.py:
the test directories are not packages, so basenames must differ): NATS context files, the file
keywords and their errors, checked before anything connects (no server needed)."""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import pytest

import natspull
from natspull._connect_options import check_worker_options, resolve

SEED = "SUAGMJH5XLGZKQQWAWKRZJIGMOU4HPFUYLXJMXOO5NIBKFEOTFJIXBYRGLY"  # made up: never accepted


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "config"
    (home / "nats" / "context").mkdir(parents=True)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home


def write_context(xdg: Path, name: str, **fields: Any) -> Path:
    path = xdg / "nats" / "context" / f"{name}.json"
    path.write_text(json.dumps(fields))
    return path


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("nsc", "nsc://operator/account/user"),
        ("socks_proxy", "socks5://127.0.0.1:1080"),
        ("windows_cert_store", "user"),
        ("windows_cert_match_by", "subject"),
        ("windows_cert_match", "natspull"),
        ("windows_ca_certs_match", ["natspull CA"]),
        ("some_future_field", "x"),
        ("creds", "op://vault/nats/creds"),
    ],
    ids=lambda value: value if isinstance(value, str) and len(value) < 30 else "value",
)
def test_a_context_field_natspull_cannot_honour_is_an_error(xdg: Path, name: str, value: object) -> None:
    path = write_context(xdg, "odd", url="nats://127.0.0.1:1", **{name: value})
    with pytest.raises(ValueError) as info:
        natspull.connect(context="odd")
    assert repr(name) in str(info.value) and str(path) in str(info.value)
    assert SEED not in str(info.value) and "vault" not in str(info.value)


JWT = "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJzdWIiOiJVQUJDIn0.c2lnbmF0dXJl"  # made up


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"user_jwt": JWT}, "'user_jwt' needs 'user_seed'"),
        ({"user_seed": SEED}, "'user_seed' needs 'user_jwt'"),
        ({"user_jwt": "not-a-jwt", "user_seed": SEED}, "'user_jwt' is not a JWT"),
        ({"user_jwt": JWT, "user_seed": "SAxyz"}, "'user_seed' is not a user nkey seed"),
        ({"user_jwt": JWT, "user_seed": 7}, "'user_seed' must be a string"),
        ({"user_jwt": JWT, "user_seed": SEED, "creds": "/x.creds"}, "'creds' and 'user_jwt' both log in"),
        ({"user_jwt": JWT, "user_seed": SEED, "nkey": "/x.nk"}, "'nkey' and 'user_jwt' both log in"),
    ],
    ids=["jwt-alone", "seed-alone", "bad-jwt", "bad-seed", "seed-not-a-string", "and-creds", "and-nkey"],
)
def test_inline_credentials_need_both_fields_well_formed_and_alone(
    xdg: Path, fields: dict[str, Any], message: str
) -> None:
    path = write_context(xdg, "inline", url="nats://127.0.0.1:1", **fields)
    with pytest.raises(ValueError, match=message) as info:
        resolve(None, {"context": "inline"})
    assert str(path) in str(info.value)
    assert SEED not in str(info.value) and "c2lnbmF0dXJl" not in str(info.value)


def test_inline_credentials_become_creds_text_unless_a_keyword_logs_in(xdg: Path, tmp_path: Path) -> None:
    write_context(xdg, "inline", url="nats://127.0.0.1:1", user_jwt=f" {JWT}\n", user_seed=SEED)
    text = resolve(None, {"context": "inline"}).nats_options["inline_credentials"]
    assert text == (
        f"-----BEGIN NATS USER JWT-----\n{JWT}\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{SEED}\n------END USER NKEY SEED------\n"
    )
    creds = tmp_path / "user.creds"
    creds.write_text(text)
    for keyword in ("creds", "user_credentials"):  # the caller's credentials file replaces them
        options = resolve(None, {"context": "inline", keyword: str(creds)}).nats_options
        assert "inline_credentials" not in options and options["user_credentials"] == str(creds)
    with pytest.raises(TypeError, match="unknown option 'inline_credentials'"):  # not a keyword
        resolve(None, {"inline_credentials": text})


def test_a_context_applies_field_by_field_under_the_keywords(xdg: Path, tmp_path: Path) -> None:
    seed = tmp_path / "user.nk"
    seed.write_text(SEED)
    write_context(
        xdg,
        "full",
        description="ignored",
        color_scheme="yellow",
        jetstream_event_prefix="$JS.EVENT",
        url="nats://a:4222, nats://b:4222",
        user="alice",
        password="pw",
        token="",
        nkey=str(seed),
        inbox_prefix="_MINE",
        jetstream_domain="hub",
        tls_first=True,
    )
    settings = resolve(None, {"context": "full", "password": "other"})
    assert settings.servers == ["nats://a:4222", "nats://b:4222"]
    opts = settings.nats_options
    assert (opts["user"], opts["password"], opts["nkeys_seed"]) == ("alice", "other", str(seed))
    assert opts["inbox_prefix"] == "_MINE" and opts["tls_handshake_first"] is True
    assert "token" not in opts
    assert (settings.jetstream_domain, settings.jetstream_api_prefix) == ("hub", None)
    assert resolve("nats://c:4222", {"context": "full"}).servers == ["nats://c:4222"]
    assert "nkeys_seed" not in resolve(None, {"context": "full", "nkeys_seed_str": SEED}).nats_options
    (xdg / "nats" / "context.txt").write_text("full\n")
    assert resolve(None, {"context": ""}).servers == ["nats://a:4222", "nats://b:4222"]
    assert resolve(None, {}).servers == ["nats://127.0.0.1:4222"]  # no context: not the selected one


def test_context_and_file_errors_name_the_file(xdg: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="none is selected"):
        natspull.connect(context="")
    with pytest.raises(ValueError, match=r"'nope' not found: no file .*nope\.json"):
        natspull.connect(context="nope")
    (xdg / "nats" / "context" / "bad.json").write_text('{"url": ')
    with pytest.raises(ValueError, match=r"bad\.json is not valid JSON"):
        natspull.connect(context="bad")
    write_context(xdg, "typed", url=["nats://a:4222"])
    with pytest.raises(ValueError, match="field 'url' must be a string"):
        natspull.connect(context="typed")
    missing = str(tmp_path / "missing")
    for keyword in ("creds", "nkey", "tls_ca", "tls_cert"):
        with pytest.raises(ValueError, match=f"{keyword}: cannot .*missing"):
            natspull.connect(**{keyword: missing})
    write_context(xdg, "files", creds=missing)
    with pytest.raises(ValueError, match=r"creds: cannot read .*missing.*from NATS context .*files\.json"):
        natspull.connect(context="files")
    seedless = tmp_path / "seedless"
    seedless.write_text("not a seed")
    with pytest.raises(ValueError, match="no user nkey seed"):
        natspull.connect(nkey=str(seedless))
    with pytest.raises(ValueError, match="tls_key needs tls_cert"):
        natspull.connect(tls_key=missing)
    with pytest.raises(TypeError, match="not both"):
        natspull.connect(creds=missing, user_credentials=missing)
    with pytest.raises(TypeError, match="not both"):
        natspull.connect(tls=ssl.create_default_context(), tls_ca=missing)
    with pytest.raises(TypeError, match="unknown option 'tlsca'"):
        natspull.connect(tlsca=missing)
    with pytest.raises(TypeError, match="tls_cert must be a file path"):
        natspull.connect(tls_cert=Path(missing))


def test_worker_options_must_cross_to_a_spawned_process(tmp_path: Path) -> None:
    seed = tmp_path / "user.nk"
    seed.write_text(SEED)
    options = {"user": "u", "password": "p", "nkey": str(seed), "connect_timeout": 1.0}
    assert check_worker_options(options) == options
    with pytest.raises(TypeError, match="unknown option 'servers'"):
        check_worker_options({"servers": "nats://a:4222"})
    with pytest.raises(TypeError, match="tls_cert="):
        check_worker_options({"tls": ssl.create_default_context()})
    with pytest.raises(TypeError, match="'closed_cb' cannot be pickled"):
        check_worker_options({"closed_cb": lambda: None})
    with pytest.raises(TypeError, match="connect_options must be a mapping"):
        check_worker_options([("user", "u")])  # type: ignore[arg-type]
