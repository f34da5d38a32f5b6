"""What each nats-server can do: the one table of features newer than 2.10, and the checks.

natspull supports nats-server 2.10.0 and newer (``OLDEST``). A few things it offers need a newer
server; this module says which (:data:`FEATURES`), knows a server from its INFO ``version`` and
its JetStream API level (``$JS.API.INFO``'s ``api.level``: absent on 2.10, so 0; 1 on 2.11, 2
on 2.12.0-4, 3 on 2.12.5+, 4 on 2.14, 5 on 2.15), and raises :class:`NotSupportedError` naming
the feature, the version it needs and the one connected (:meth:`Server.require`).

Why both numbers: the INFO version is the node the client is connected to, the API level comes
from whichever server answers the JetStream API (the meta leader in a cluster). During a rolling
upgrade either may be the older one, so a feature is supported only when both are new enough.

Why check at all: an older server does not refuse what it does not know. 2.10 and 2.11 drop
unknown config fields silently, ignore unknown publish headers (a TTL that never expires, a
"batch" stored message by message), and never answer an unknown API verb (a timeout). So the
check comes before anything is sent; :func:`dropped_fields` catches what a server dropped
anyway. Plain data and functions, no I/O: any thread.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from .errors import NotSupportedError

__all__ = [
    "ATOMIC_BATCH",
    "CONSUMER_PAUSE",
    "CONSUMER_RESET",
    "CONSUMER_UNPIN",
    "FAST_BATCH",
    "FEATURES",
    "MSG_COUNTERS",
    "MSG_SCHEDULES",
    "MSG_TTL",
    "OLDEST",
    "PERSIST_MODE",
    "POLICY_OVERFLOW",
    "POLICY_PINNED_CLIENT",
    "POLICY_PRIORITIZED",
    "PRIORITY_GROUPS",
    "REQUIRED_API_LEVEL",
    "REQUIRED_API_LEVEL_ERR_CODE",
    "SUBJECT_DELETE_MARKERS",
    "Feature",
    "Server",
    "ServerVersion",
    "consumer_features",
    "dropped_fields",
    "header_features",
    "stream_features",
    "unknown_field",
]

#: The request header that makes a 2.12+ server refuse a call needing a higher API level
#: (ADR-44); 2.10 and 2.11 ignore it.
REQUIRED_API_LEVEL = "Nats-Required-Api-Level"
#: The err_code of that refusal (code 412).
REQUIRED_API_LEVEL_ERR_CODE = 10185
#: The API level from which servers honour :data:`REQUIRED_API_LEVEL` (2.12.0).
_HEADER_LEVEL = 2
#: err_code 10025 "invalid JSON": how 2.12+ refuses a config field it does not know.
_INVALID_JSON = 10025
_UNKNOWN_FIELD = re.compile(r'unknown field "([^"]+)"')
_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")


class ServerVersion(NamedTuple):
    """A nats-server release as comparable numbers: ``ServerVersion.parse("2.11.3") >= (2, 11)``."""

    major: int
    minor: int
    patch: int = 0

    @classmethod
    def parse(cls, text: str) -> ServerVersion:
        """``"2.10.26"``, ``"v2.12.0-RC.1"``, ``"2.15.0-dev"``, ``"2.11"``; a pre-release counts as
        its release (its API level tells what it really has). Raises ValueError."""
        match = _VERSION.match(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"not a nats-server version: {text!r}")
        major, minor, patch = match.groups()
        return cls(int(major), int(minor), int(patch or 0))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


#: The oldest nats-server natspull supports (docs/guides/servers.md).
OLDEST = ServerVersion(2, 10, 0)


@dataclass(frozen=True)
class Feature:
    """Something natspull can ask of a server newer than :data:`OLDEST`.

    *name* is what the user asked for, in the words of the API (``"consumer reset
    (Consumer.reset)"``); *version* the first release that has it; *level* that release's
    JetStream API level.
    """

    name: str
    version: ServerVersion
    level: int

    def __str__(self) -> str:
        return f"{self.name} (nats-server >= {self.version}, JetStream API level >= {self.level})"


def _feature(name: str, version: str, level: int) -> Feature:
    return Feature(name, ServerVersion.parse(version), level)


# Checked against the real binaries 2.10.26, 2.11.0/11, 2.12.0/4/5/8, 2.14.0/6, 2.15.1.
PRIORITY_GROUPS = _feature("priority groups (priority_groups)", "2.11.0", 1)
POLICY_OVERFLOW = _feature("priority_policy 'overflow'", "2.11.0", 1)
POLICY_PINNED_CLIENT = _feature("priority_policy 'pinned_client'", "2.11.0", 1)
POLICY_PRIORITIZED = _feature("priority_policy 'prioritized'", "2.12.0", 2)
CONSUMER_PAUSE = _feature("consumer pause (pause_until, pause/resume)", "2.11.0", 1)
CONSUMER_UNPIN = _feature("consumer unpin", "2.11.0", 1)
CONSUMER_RESET = _feature("consumer reset", "2.14.0", 4)
MSG_TTL = _feature("per-message TTL (allow_msg_ttl, Nats-TTL)", "2.11.0", 1)
SUBJECT_DELETE_MARKERS = _feature("subject delete markers (subject_delete_marker_ttl)", "2.11.0", 1)
ATOMIC_BATCH = _feature("atomic batch publish (allow_atomic, Nats-Batch-Id)", "2.12.0", 2)
MSG_COUNTERS = _feature("message counters (allow_msg_counter, Nats-Incr)", "2.12.0", 2)
MSG_SCHEDULES = _feature("message schedules (allow_msg_schedules, Nats-Schedule)", "2.12.0", 2)
PERSIST_MODE = _feature("persist_mode", "2.12.0", 2)
FAST_BATCH = _feature("fast batch publish (allow_batched)", "2.14.0", 4)

#: Every feature, oldest first. A feature added to natspull gets a row here and a check.
FEATURES: tuple[Feature, ...] = (
    PRIORITY_GROUPS,
    POLICY_OVERFLOW,
    POLICY_PINNED_CLIENT,
    CONSUMER_PAUSE,
    CONSUMER_UNPIN,
    MSG_TTL,
    SUBJECT_DELETE_MARKERS,
    POLICY_PRIORITIZED,
    ATOMIC_BATCH,
    MSG_COUNTERS,
    MSG_SCHEDULES,
    PERSIST_MODE,
    CONSUMER_RESET,
    FAST_BATCH,
)

_POLICIES = {
    "overflow": POLICY_OVERFLOW,
    "pinned_client": POLICY_PINNED_CLIENT,
    "prioritized": POLICY_PRIORITIZED,
}
# Stream config fields that need a newer server when set (to anything but their "off" value).
_STREAM_FIELDS = {
    "allow_msg_ttl": MSG_TTL,
    "subject_delete_marker_ttl": SUBJECT_DELETE_MARKERS,
    "allow_atomic": ATOMIC_BATCH,
    "allow_msg_counter": MSG_COUNTERS,
    "allow_msg_schedules": MSG_SCHEDULES,
    "allow_batched": FAST_BATCH,
    "persist_mode": PERSIST_MODE,
}
# Publish headers that need a newer server (an older one stores the message as a plain one).
_HEADERS = {
    "nats-ttl": MSG_TTL,
    "nats-batch-id": ATOMIC_BATCH,
    "nats-incr": MSG_COUNTERS,
    "nats-schedule": MSG_SCHEDULES,
}
# A value the server omits from its answer because it is the default (json omitempty), besides
# None, False, 0, "" and empty containers.
_DEFAULTS = {"persist_mode": "default", "compression": "none"}


def _set(name: str, value: Any) -> bool:
    """Whether config field *name* asks for something (is not unset, off or the default)."""
    if value is None or value is False or value == 0 or value == "" or value == [] or value == {}:
        return False
    return bool(_DEFAULTS.get(name) != value)


def stream_features(config: Mapping[str, Any]) -> list[Feature]:
    """The features a stream config (the request's JSON dict) needs, oldest first."""
    needed = {
        feature
        for name, value in config.items()
        if (feature := _STREAM_FIELDS.get(name)) is not None and _set(name, value)
    }
    return [feature for feature in FEATURES if feature in needed]


def consumer_features(config: Mapping[str, Any]) -> list[Feature]:
    """The features a consumer config (the request's JSON dict) needs, oldest first."""
    needed = set()
    if config.get("priority_groups"):
        needed.add(PRIORITY_GROUPS)
    policy = config.get("priority_policy")
    if policy in _POLICIES:
        needed.add(_POLICIES[policy])
    if config.get("pause_until"):
        needed.add(CONSUMER_PAUSE)
    return [feature for feature in FEATURES if feature in needed]


def header_features(headers: Mapping[str, str] | None) -> list[Feature]:
    """The features the headers of a publish need, oldest first."""
    if not headers:
        return []
    needed = {_HEADERS[name.lower()] for name in headers if name.lower() in _HEADERS}
    return [feature for feature in FEATURES if feature in needed]


def dropped_fields(requested: Mapping[str, Any], answered: Mapping[str, Any]) -> list[str]:
    """The fields of a create/update request that the server's answer (its config) lacks.

    Only fields that ask for something count (:func:`_set`); the server omits defaults. One
    rewrite is known: a single ``filter_subjects`` entry comes back as ``filter_subject``.
    """
    dropped = []
    for name, value in requested.items():
        if not _set(name, value) or name in answered:
            continue
        single_filter = isinstance(value, list) and len(value) == 1
        if name == "filter_subjects" and single_filter and answered.get("filter_subject") == value[0]:
            continue
        dropped.append(name)
    return sorted(dropped)


def unknown_field(description: str, err_code: int | None) -> str | None:
    """The field a 2.12+ server refused as unknown (err_code 10025, ``unknown field "x"``), else None."""
    if err_code != _INVALID_JSON:
        return None
    match = _UNKNOWN_FIELD.search(description)
    return match.group(1) if match else None


@dataclass(frozen=True)
class Server:
    """One server as natspull sees it: the INFO version of the node connected to, and the
    JetStream API level of the server answering the JetStream API (None: unknown)."""

    version: ServerVersion
    api_level: int | None

    @classmethod
    def from_info(cls, info: Mapping[str, Any], api_level: int | None) -> Server:
        """From the connection's INFO and ``$JS.API.INFO``'s level (None when that failed: then
        INFO's own ``api_lvl``, which 2.12+ sends, stands in). A version missing or unreadable
        reads as :data:`OLDEST`: a feature check then refuses rather than guesses."""
        try:
            version = ServerVersion.parse(str(info.get("version", "")))
        except ValueError:
            version = OLDEST
        if api_level is None and isinstance(info.get("api_lvl"), int):
            api_level = info["api_lvl"]
        return cls(version, api_level)

    def __str__(self) -> str:
        level = "unknown" if self.api_level is None else str(self.api_level)
        return f"nats-server {self.version} (JetStream API level {level})"

    def supports(self, feature: Feature) -> bool:
        """Both the node's version and the JetStream API level are new enough."""
        level_ok = self.api_level is None or self.api_level >= feature.level
        return self.version >= feature.version and level_ok

    def require(self, feature: Feature, action: str = "") -> None:
        """Raise NotSupportedError naming *feature*, the version it needs and this server, unless
        :meth:`supports`. *action* says what was being done (``"add_consumer"``)."""
        if self.supports(feature):
            return
        what = f"{action}: " if action else ""
        raise NotSupportedError(
            f"{what}{feature.name} needs nats-server {feature.version} or newer (JetStream API level "
            f"{feature.level}); connected to {self}",
            feature=feature.name,
            required=str(feature.version),
            connected=str(self.version),
        )

    def level_header(self, features: list[Feature]) -> dict[str, str] | None:
        """The :data:`REQUIRED_API_LEVEL` header for a request using *features*, on a server that
        honours it (API level >= 2): then a node of the cluster that is older refuses the request
        (412, err_code 10185) instead of dropping what it does not know. None otherwise."""
        if not features or self.api_level is None or self.api_level < _HEADER_LEVEL:
            return None
        return {REQUIRED_API_LEVEL: str(max(feature.level for feature in features))}
