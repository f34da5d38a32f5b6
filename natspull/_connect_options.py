"""What :func:`natspull.connect` is told, checked and resolved once into one value.

Three sources, the later overriding the earlier key by key:

1. a NATS context (ADR-21, ``context=``): the JSON files the ``nats`` CLI keeps in
   ``$XDG_CONFIG_HOME/nats/context/NAME.json`` (default ``~/.config``), the selected one named in
   ``nats/context.txt``; or the path of such a file;
2. the keywords given to connect().

File keywords (``creds=``, ``nkey=``, ``tls_cert=``, ``tls_key=``, ``tls_ca=``) are plain paths,
so a set of options can be pickled to a worker process; they become nats-py's
``user_credentials``, ``nkeys_seed`` and an ``ssl.SSLContext`` here. Every file is opened before
anything connects, and an error names the keyword (or the context field and file) and the path -
never what a file holds. No I/O but reading those files; any thread.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._transport._wire import INLINE_CREDENTIALS  # a context's user_jwt and user_seed, as .creds text
from ._validate import check_int, check_name, check_number, check_subject, check_timeout

__all__ = [
    "CONTEXT_FIELDS",
    "ConnectSettings",
    "check_worker_options",
    "context_path",
    "resolve",
    "selected_context",
]

DEFAULT_SERVER = "nats://127.0.0.1:4222"

# Options passed through to nats-py, with the type each must have.
_PASSTHROUGH: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "user": str,
    "password": str,
    "token": str,
    "nkeys_seed_str": str,
    "tls": ssl.SSLContext,
    "tls_hostname": str,
    "tls_handshake_first": bool,
    "allow_reconnect": bool,
    "no_echo": bool,
}
_SECONDS = ("connect_timeout", "reconnect_time_wait", "ping_interval", "close_timeout")
_CALLBACKS = ("disconnected_cb", "reconnected_cb", "error_cb", "closed_cb")
_FILES = ("creds", "user_credentials", "nkey", "nkeys_seed", "tls_cert", "tls_key", "tls_ca")
KNOWN = frozenset(
    [*_PASSTHROUGH, *_SECONDS, *_CALLBACKS, *_FILES, "max_reconnect_attempts", "inbox_prefix", "context"]
)

# A context field -> the connect() keyword it sets (ADR-21; jsm.go's natscontext for tls_first).
CONTEXT_FIELDS = {
    "url": "servers",
    "user": "user",
    "password": "password",
    "token": "token",
    "creds": "creds",
    "nkey": "nkey",
    "cert": "tls_cert",
    "key": "tls_key",
    "ca": "tls_ca",
    "tls_first": "tls_handshake_first",
    "inbox_prefix": "inbox_prefix",
    "jetstream_domain": "jetstream_domain",
    "jetstream_api_prefix": "jetstream_api_prefix",
}
# Fields that change nothing natspull does: what the nats CLI shows, and the prefix of the
# JetStream advisories it listens to (natspull listens to none).
_COSMETIC = ("description", "color_scheme", "jetstream_event_prefix")
# Fields natspull cannot honour, and why; any other unknown field is refused too.
_UNSUPPORTED = {
    "nsc": "nsc lookups need the nsc tool; put the credentials file in 'creds'",
    "socks_proxy": "nats-py cannot connect through a SOCKS proxy",
    "windows_cert_store": "the Windows certificate store is not supported; use 'cert' and 'key' files",
    "windows_cert_match_by": "the Windows certificate store is not supported",
    "windows_cert_match": "the Windows certificate store is not supported",
    "windows_ca_certs_match": "the Windows certificate store is not supported; use a 'ca' file",
}
# Keywords that replace a whole group of the context's: a caller's tls= or seed string means
# the context's files of that kind do not apply.
_REPLACES = {
    "tls": ("tls_cert", "tls_key", "tls_ca"),
    "creds": (INLINE_CREDENTIALS,),
    "user_credentials": ("creds", INLINE_CREDENTIALS),
    "nkeys_seed": ("nkey",),
    "nkeys_seed_str": ("nkey",),
}


@dataclass
class ConnectSettings:
    """connect()'s arguments, checked: what the Client passes to nats-py, and the rest."""

    servers: list[str]
    nats_options: dict[str, Any]
    callbacks: dict[str, Callable[..., None]] = field(default_factory=dict)
    jetstream_domain: str | None = None  # defaults of Client.jetstream(), from a context
    jetstream_api_prefix: str | None = None


# ------------------------------------------------------------------------------ contexts


def _config_dir() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "nats")


def selected_context() -> str | None:
    """The name of the selected context (``nats/context.txt``), None when none is selected."""
    try:
        with open(os.path.join(_config_dir(), "context.txt"), encoding="utf-8") as f:
            name = f.read().strip()
    except OSError:
        return None
    return name or None


def context_path(context: str | os.PathLike[str]) -> str:
    """The file of *context*: a path (it has a directory separator or ends in ``.json``), a name,
    or ``""`` for the selected context. Raises ValueError when none is selected or the name is bad.
    """
    if isinstance(context, os.PathLike):
        return os.fspath(context)
    if not isinstance(context, str):
        raise TypeError(f"context must be a context name or a file path, got {type(context).__name__}")
    if context.endswith(".json") or os.sep in context or "/" in context:
        return os.path.expanduser(context)
    name = context or selected_context()
    if name is None:
        raise ValueError(
            f"context='' means the selected NATS context, but none is selected "
            f"({os.path.join(_config_dir(), 'context.txt')} is missing or empty)"
        )
    if name in (".", "..") or "\\" in name:
        raise ValueError(f"context: invalid context name {name!r}")
    return os.path.join(_config_dir(), "context", f"{name}.json")


def load_context(context: str | os.PathLike[str]) -> tuple[str, dict[str, Any]]:
    """Read a context file: (its path, connect() keywords from its fields).

    Raises ValueError naming the file (and the field) for a missing or malformed file, a field
    of the wrong type and a field natspull cannot honour; never quotes a value.
    """
    path = context_path(context)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ValueError(f"NATS context {os.fspath(context)!r} not found: no file {path}") from None
    except OSError as exc:
        raise ValueError(f"NATS context: cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(
            f"NATS context {path} is not valid JSON (line {getattr(exc, 'lineno', '?')})"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"NATS context {path} must hold a JSON object")
    found: dict[str, Any] = {}
    inline: dict[str, str] = {}
    for key, value in data.items():
        if key in _COSMETIC or value in (None, "", [], False):
            continue
        if key in ("user_jwt", "user_seed"):
            if not isinstance(value, str):
                raise ValueError(f"NATS context {path}: field {key!r} must be a string")
            inline[key] = value.strip()
            continue
        keyword = CONTEXT_FIELDS.get(key)
        if keyword is None:
            why = _UNSUPPORTED.get(key, "natspull does not know this field")
            raise ValueError(f"NATS context {path}: field {key!r} is not supported ({why})")
        if key == "tls_first":
            if value is not True:
                raise ValueError(f"NATS context {path}: field 'tls_first' must be true or false")
        elif not isinstance(value, str):
            raise ValueError(f"NATS context {path}: field {key!r} must be a string")
        if keyword == "servers":
            urls = [url.strip() for url in value.split(",") if url.strip()]
            if urls:
                found[keyword] = urls
        elif keyword in ("creds", "nkey", "tls_cert", "tls_key", "tls_ca"):
            if "://" in value:  # natscontext's op://, nsc://, env:// credential resolvers
                raise ValueError(
                    f"NATS context {path}: field {key!r} is a URI; natspull reads only plain file paths"
                )
            found[keyword] = os.path.expanduser(value)
        else:
            found[keyword] = value
    if inline:
        found[INLINE_CREDENTIALS] = _inline_credentials(path, inline, found)
    return path, found


def _inline_credentials(path: str, fields: dict[str, str], found: dict[str, Any]) -> str:
    """A context's ``user_jwt`` and ``user_seed`` as the text of a ``.creds`` file; ValueError
    naming the field (never its value) when one is missing or malformed, or another login
    field of the same context competes with them."""
    for field_name, other in (("user_jwt", "user_seed"), ("user_seed", "user_jwt")):
        if other not in fields:
            raise ValueError(
                f"NATS context {path}: field {field_name!r} needs {other!r} too (a JWT and its seed)"
            )
    jwt, seed = fields["user_jwt"], fields["user_seed"]
    if jwt.count(".") != 2 or any(c.isspace() for c in jwt):
        raise ValueError(f"NATS context {path}: field 'user_jwt' is not a JWT (three dot-separated parts)")
    if not seed.startswith("SU") or any(c.isspace() for c in seed):
        raise ValueError(f"NATS context {path}: field 'user_seed' is not a user nkey seed (SU...)")
    for login in ("creds", "nkey"):
        if login in found:
            raise ValueError(f"NATS context {path}: fields {login!r} and 'user_jwt' both log in: keep one")
    return (
        f"-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )


# ------------------------------------------------------------------------------ resolution


def resolve(servers: str | list[str] | None, options: Mapping[str, Any]) -> ConnectSettings:
    """Check connect()'s *servers* and keyword *options* (a context's fields under them) and
    build what the client needs.

    Blocks on reading the files named (credentials, seed, certificates, the context). Raises
    TypeError for an unknown keyword or a value of the wrong type, ValueError for a bad value,
    an unreadable file or a context natspull cannot honour. Any thread.
    """
    options = dict(options)
    for key in options:
        if key not in KNOWN:
            allowed = ", ".join(sorted(KNOWN))
            raise TypeError(f"connect() got an unknown option {key!r}; allowed: {allowed}")
    context = options.pop("context", None)
    where = ""
    if context is not None:
        path, from_context = load_context(context)
        where = f" (from NATS context {path})"
        for given, replaced in _REPLACES.items():
            if options.get(given) is not None:
                for key in replaced:
                    from_context.pop(key, None)
        context_servers = from_context.pop("servers", None)
        if servers is None:
            servers = context_servers
        for key, value in from_context.items():
            if options.get(key) is None:
                options[key] = value
    if servers is None:
        servers = DEFAULT_SERVER
    server_list = (
        [servers]
        if isinstance(servers, str)
        else list(servers)
        if isinstance(servers, (list, tuple))
        else None
    )
    if not server_list or not all(isinstance(s, str) and s for s in server_list):
        raise TypeError(f"servers must be a URL string or a list of URL strings, got {servers!r}")

    settings = ConnectSettings(server_list, {})
    nats_options = settings.nats_options
    for key in ("connect_timeout", "reconnect_time_wait", "ping_interval"):
        if key in options:
            nats_options[key] = check_number(key, options.pop(key), exclusive=key != "reconnect_time_wait")
    if "max_reconnect_attempts" in options:
        nats_options["max_reconnect_attempts"] = check_int(
            "max_reconnect_attempts", options.pop("max_reconnect_attempts"), minimum=-1
        )
    domain = options.pop("jetstream_domain", None)
    api_prefix = options.pop("jetstream_api_prefix", None)
    if domain is not None and api_prefix is not None:
        raise ValueError(f"give jetstream_domain or jetstream_api_prefix, not both{where}")
    if domain is not None:
        settings.jetstream_domain = check_name("jetstream_domain", domain)
    if api_prefix is not None:
        settings.jetstream_api_prefix = check_subject("jetstream_api_prefix", api_prefix)
    _files(options, nats_options, where)
    for key, value in options.items():
        if key in _CALLBACKS:
            if value is not None and not callable(value):
                raise TypeError(f"{key} must be callable, got {type(value).__name__}")
            if value is not None:
                settings.callbacks[key] = value
        elif key == "close_timeout":
            nats_options[key] = check_timeout(key, value)
        elif key == "inbox_prefix":
            nats_options[key] = check_subject(key, value)
        elif value is not None:
            if not isinstance(value, _PASSTHROUGH[key]):
                raise TypeError(f"{key} has the wrong type: {type(value).__name__}")
            nats_options[key] = value
    return settings


def _files(options: dict[str, Any], nats_options: dict[str, Any], where: str) -> None:
    """Pop the file keywords from *options* into nats-py's options, each file checked."""
    files = {key: options.pop(key, None) for key in _FILES}
    inline = options.pop(INLINE_CREDENTIALS, None)  # (only from a context; creds= replaced it)
    if inline is not None:
        nats_options[INLINE_CREDENTIALS] = inline
    for key, value in files.items():
        if value is not None and not isinstance(value, (str, tuple) if key == "user_credentials" else str):
            raise TypeError(f"{key} must be a file path (a str), got {type(value).__name__}")
    for first, second in (("creds", "user_credentials"), ("nkey", "nkeys_seed")):
        if files[first] is not None and files[second] is not None:
            raise TypeError(f"give {first}= or {second}= (the same thing), not both")
    creds = files["creds"] if files["creds"] is not None else files["user_credentials"]
    if creds is not None:
        name = "creds" if files["creds"] is not None else "user_credentials"
        nats_options["user_credentials"] = _check_credentials(name, creds, where)
    seed = files["nkey"] if files["nkey"] is not None else files["nkeys_seed"]
    if seed is not None:
        name = "nkey" if files["nkey"] is not None else "nkeys_seed"
        if "SU" not in _read(name, seed, where):
            raise ValueError(f"{name}: {seed!r} holds no user nkey seed (SU...){where}")
        if options.get("nkeys_seed_str") is not None:
            raise TypeError(f"give {name}= (a seed file) or nkeys_seed_str=, not both")
        nats_options["nkeys_seed"] = seed
    cert, key, ca = files["tls_cert"], files["tls_key"], files["tls_ca"]
    if cert is None and key is None and ca is None:
        return
    if options.get("tls") is not None:
        raise TypeError("give tls= (an ssl.SSLContext) or tls_cert=/tls_key=/tls_ca= (files), not both")
    if key is not None and cert is None:
        raise ValueError(f"tls_key needs tls_cert (the certificate of that key){where}")
    try:
        context = ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"tls_ca: cannot load {ca!r}: {_ssl_reason(exc)}{where}") from None
    if cert is not None:
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            shown = f"{cert!r}" if key is None else f"{cert!r} with key {key!r}"
            raise ValueError(f"tls_cert: cannot load {shown}: {_ssl_reason(exc)}{where}") from None
    nats_options["tls"] = context


def _ssl_reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _check_credentials(name: str, value: Any, where: str) -> str | tuple[str, str]:
    """A readable ``.creds`` file holding a JWT and a seed, or a (jwt file, seed file) pair."""
    if isinstance(value, tuple):
        if len(value) != 2 or not all(isinstance(part, str) for part in value):
            raise TypeError(f"{name} must be a .creds path or a (jwt path, seed path) tuple")
        for part in value:
            _read(name, part, where)
        return (value[0], value[1])
    text = _read(name, value, where)
    if "BEGIN NATS USER JWT" not in text or "BEGIN USER NKEY SEED" not in text:
        raise ValueError(f"{name} file {value!r} must hold a NATS USER JWT and a USER NKEY SEED block{where}")
    return str(value)


def _read(name: str, path: str, where: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError as exc:
        raise ValueError(f"{name}: cannot read {path!r}: {exc.strerror}{where}") from None


# ------------------------------------------------------------------------------ workers


def check_worker_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``run_workers(connect_options=...)``: known keywords whose values can cross to a spawned
    process, checked as connect() would (files read, context loaded), without connecting.

    Raises TypeError/ValueError naming the key. Any thread.
    """
    import pickle

    if not isinstance(options, Mapping):
        raise TypeError(f"connect_options must be a mapping, got {type(options).__name__}")
    result = dict(options)
    for key, value in result.items():
        if key not in KNOWN or key == "servers":
            raise TypeError(
                f"connect_options: unknown option {key!r} (servers are run_workers(servers=...)); "
                f"allowed: {', '.join(sorted(KNOWN))}"
            )
        if key == "tls":
            raise TypeError(
                "connect_options: tls (an ssl.SSLContext) cannot cross to a worker process; "
                "give tls_cert=, tls_key= and tls_ca= (file paths) instead"
            )
        try:
            pickle.dumps(value)
        except Exception as exc:
            raise TypeError(
                f"connect_options: {key!r} cannot be pickled for a worker process "
                f"({type(value).__name__}: {type(exc).__name__})"
            ) from None
    resolve(None, result)
    return result
