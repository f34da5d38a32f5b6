"""natspull's views of a consumer's config and info: nats-py's, plus priority groups and pause state.

nats-py 2.16's ``ConsumerConfig`` has no priority-group fields (ADR-42) and its
``ConsumerInfo.from_response`` drops the fields it does not know. The classes here subclass
nats-py's dataclasses with extra defaulted fields, so code written against nats-py keeps working:

* :class:`ConsumerConfig` adds ``priority_groups``, ``priority_policy`` and
  ``priority_timeout`` (seconds; nanoseconds on the wire), and reads ``pause_until`` as an
  aware UTC datetime (nats-py keeps the server's string).
* :class:`ConsumerInfo` adds ``priority_groups`` (a :class:`PriorityGroupState` per group) and
  reads ``paused`` as a bool and ``pause_remaining`` in seconds (nats-py keeps the server's
  nanoseconds).

:func:`check_consumer_config` is the one place that validates the priority fields before a
consumer is created; it raises ValueError/TypeError naming the field. No I/O here: plain
functions, any thread.
"""

from __future__ import annotations

import datetime
import enum
import re
from dataclasses import dataclass, field, fields
from typing import Any

from nats.js import api

from ._validate import check_nanoseconds

__all__ = [
    "ConsumerConfig",
    "ConsumerInfo",
    "PauseState",
    "PriorityGroupState",
    "PriorityPolicy",
    "as_consumer_config",
    "check_consumer_config",
    "check_duration",
    "check_group",
    "format_time",
    "parse_time",
]

_NANOSECOND = 1_000_000_000
UTC = datetime.timezone.utc  # datetime.UTC: Python >= 3.11
# nats-server's validGroupName (server/consumer.go). Its error text also names ')' and '+', but
# the server refuses both: the regular expression decides.
_GROUP_NAME = re.compile(r"[A-Za-z0-9/_=-]{1,16}")
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\d)[Tt](\d\d:\d\d:\d\d)(?:\.(\d+))?([Zz]|[+-]\d\d:\d\d)")


class PriorityPolicy(str, enum.Enum):  # StrEnum: Python >= 3.11
    """How a consumer with priority groups picks the pull requests it serves (ADR-42).

    The plain strings ``"overflow"``, ``"pinned_client"`` and ``"prioritized"`` are accepted
    wherever a policy is (and compare equal to the members).
    """

    #: serve pulls that ask for it (min_pending / min_ack_pending) only past a backlog
    OVERFLOW = "overflow"
    #: serve one pinned client until it stops pulling for priority_timeout (or is unpinned)
    PINNED_CLIENT = "pinned_client"
    #: serve pulls by their priority, 0 first (nats-server >= 2.12)
    PRIORITIZED = "prioritized"


@dataclass
class PriorityGroupState(api.Base):
    """One priority group of a consumer, as its info reports it.

    ``pinned_client_id`` and ``pinned_ts`` (an aware UTC datetime) are None while no client is
    pinned, and always with a policy other than ``pinned_client``.
    """

    group: str
    pinned_client_id: str | None = None
    pinned_ts: datetime.datetime | None = None

    @classmethod
    def from_response(cls, resp: dict[str, Any]) -> PriorityGroupState:
        resp["pinned_client_id"] = resp.get("pinned_client_id") or None  # omitted when none
        ts = resp.get("pinned_ts")
        resp["pinned_ts"] = parse_time(ts) if ts else None
        return super().from_response(resp)

    def as_dict(self) -> dict[str, object]:
        result = super().as_dict()
        if self.pinned_ts is not None:
            result["pinned_ts"] = format_time(self.pinned_ts)
        return result


@dataclass(frozen=True)
class PauseState:
    """A consumer's pause state, as a pause or resume call leaves it.

    ``pause_until`` is an aware UTC datetime, None after a resume; ``pause_remaining`` is in
    seconds, None when not paused.
    """

    paused: bool
    pause_until: datetime.datetime | None = None
    pause_remaining: float | None = None

    @classmethod
    def from_response(cls, resp: dict[str, Any]) -> PauseState:
        until = resp.get("pause_until")
        remaining = resp.get("pause_remaining")
        return cls(
            paused=bool(resp.get("paused", False)),
            pause_until=parse_time(until) if until else None,
            pause_remaining=remaining / _NANOSECOND if isinstance(remaining, int) else None,
        )


@dataclass
class ConsumerConfig(api.ConsumerConfig):
    """nats-py's ``ConsumerConfig`` plus priority groups; ``pause_until`` is an aware datetime.

    ``priority_policy`` is a :class:`PriorityPolicy` (or its string) and needs
    ``priority_groups``, a list of 1-16 character names of ``A-Z a-z 0-9 - _ / =``;
    ``priority_timeout`` (seconds, ``pinned_client`` only, server default 120 s) is how long a
    pinned client may go without pulling before another one is pinned. ``pause_until`` creates
    the consumer paused until then (an RFC 3339 string is accepted too).
    """

    # nats-py types it as the server's RFC 3339 string; natspull reads and writes datetimes.
    pause_until: datetime.datetime | None = None  # type: ignore[assignment]
    priority_groups: list[str] | None = None
    priority_policy: PriorityPolicy | None = None
    priority_timeout: float | None = None  # seconds

    @classmethod
    def from_response(cls, resp: dict[str, Any]) -> ConsumerConfig:
        timeout = resp.get("priority_timeout")
        resp["priority_timeout"] = timeout / _NANOSECOND if isinstance(timeout, int) else None
        policy = resp.get("priority_policy")
        if policy in _POLICIES:
            resp["priority_policy"] = _POLICIES[policy]
        # else: absent (no policy), or a policy newer than natspull: keep the server's string
        until = resp.get("pause_until")
        resp["pause_until"] = parse_time(until) if until else None
        result: ConsumerConfig = super().from_response(resp)
        return result

    def as_dict(self) -> dict[str, object]:
        result = super().as_dict()
        if self.pause_until is not None:
            result["pause_until"] = format_time(self.pause_until)
        if self.priority_policy is not None:
            result["priority_policy"] = str(getattr(self.priority_policy, "value", self.priority_policy))
        if self.priority_groups is not None:
            result["priority_groups"] = list(self.priority_groups)
        if self.priority_timeout is not None:
            result["priority_timeout"] = int(self.priority_timeout * _NANOSECOND)
        return result


@dataclass
class ConsumerInfo(api.ConsumerInfo):
    """nats-py's ``ConsumerInfo`` with natspull's :class:`ConsumerConfig`, the state of each
    priority group, ``paused`` as a bool and ``pause_remaining`` in seconds (None unless paused).
    """

    config: ConsumerConfig
    paused: bool = False
    # nats-py types it as a string but passes the server's integer nanoseconds through.
    pause_remaining: float | None = None  # type: ignore[assignment]
    priority_groups: list[PriorityGroupState] = field(default_factory=list)

    @classmethod
    def from_response(cls, resp: dict[str, Any]) -> ConsumerInfo:
        # nats-py converts the fields it knows (it would also drop ours and read the config
        # with its own class): let it, then add natspull's fields from the raw response.
        config = ConsumerConfig.from_response(dict(resp.get("config") or {}))
        groups = [PriorityGroupState.from_response(dict(g)) for g in resp.get("priority_groups") or ()]
        remaining = resp.get("pause_remaining")
        base = api.ConsumerInfo.from_response(resp)
        values = {f.name: getattr(base, f.name) for f in fields(api.ConsumerInfo)}
        values.update(
            config=config,
            paused=bool(resp.get("paused", False)),
            pause_remaining=remaining / _NANOSECOND if isinstance(remaining, int) else None,
            priority_groups=groups,
        )
        return cls(**values)

    def as_dict(self) -> dict[str, object]:
        result = super().as_dict()
        result["priority_groups"] = [group.as_dict() for group in self.priority_groups]
        if self.pause_remaining is not None:
            result["pause_remaining"] = int(self.pause_remaining * _NANOSECOND)
        return result


_POLICIES = {policy.value: policy for policy in PriorityPolicy}


# ------------------------------------------------------------------------------- checks


def parse_time(value: str) -> datetime.datetime | None:
    """An RFC 3339 time from the server as an aware UTC datetime; None for Go's zero time
    (``0001-01-01T00:00:00Z``, what the server sends for "not set"). Raises ValueError."""
    match = _RFC3339.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {value!r}")
    date, clock, fraction, zone = match.groups()
    micro = f".{fraction[:6].ljust(6, '0')}" if fraction else ""  # datetime stops at microseconds
    zone = "+00:00" if zone in "Zz" else zone
    parsed = datetime.datetime.fromisoformat(f"{date}T{clock}{micro}{zone}")
    if parsed.year == 1:
        return None
    return parsed.astimezone(UTC)


def format_time(value: datetime.datetime) -> str:
    """An aware datetime as the RFC 3339 UTC string the server parses."""
    utc = value.astimezone(UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds") + "Z"


def check_time(name: str, value: Any) -> datetime.datetime:
    """An aware datetime (or an RFC 3339 string) as an aware UTC datetime."""
    if isinstance(value, str):
        try:
            parsed = parse_time(value)
        except ValueError:
            raise ValueError(f"{name} must be an aware datetime or an RFC 3339 time, got {value!r}") from None
        if parsed is None:
            raise ValueError(f"{name} must be a real time, got Go's zero time {value!r}")
        return parsed
    if not isinstance(value, datetime.datetime):
        raise TypeError(f"{name} must be a timezone-aware datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{name} must be a timezone-aware datetime (e.g. datetime.now(timezone.utc)), "
            f"got the naive {value!r}"
        )
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{name} {value!r} is out of range in UTC") from None


def check_duration(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """A finite number of seconds > 0 (>= 0 with allow_zero) that fits the server's int64 nanoseconds."""
    check_nanoseconds(name, value)
    if value == 0 and not allow_zero:
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


def check_group(name: str, value: Any) -> str:
    """A priority group name: 1-16 characters of A-Z a-z 0-9 - _ / = (nats-server's rule)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not _GROUP_NAME.fullmatch(value):
        raise ValueError(
            f"{name} {value!r} is not a valid priority group name: 1-16 characters of "
            "A-Z, a-z, 0-9, '-', '_', '/', '='"
        )
    return value


def check_policy(value: Any) -> PriorityPolicy:
    if isinstance(value, PriorityPolicy):
        return value
    if not isinstance(value, str):
        raise TypeError(
            f"priority_policy must be a natspull.PriorityPolicy or its string, got {type(value).__name__}"
        )
    if value not in _POLICIES:
        allowed = ", ".join(repr(p) for p in _POLICIES)
        raise ValueError(f"priority_policy must be one of {allowed}, got {value!r}")
    return _POLICIES[value]


def as_consumer_config(config: Any) -> Any:
    """natspull's ConsumerConfig for a nats-py one (same field values); anything else unchanged."""
    if isinstance(config, api.ConsumerConfig) and not isinstance(config, ConsumerConfig):
        return ConsumerConfig(**{f.name: getattr(config, f.name) for f in fields(api.ConsumerConfig)})
    return config


def check_consumer_config(config: ConsumerConfig) -> ConsumerConfig:
    """Validate natspull's fields of *config* and return it normalized (policy as the enum,
    groups as a list, pause_until as a UTC datetime). Raises ValueError/TypeError naming the field.
    """
    groups = config.priority_groups
    if groups is not None:
        if isinstance(groups, (str, bytes)) or not isinstance(groups, (list, tuple)):
            raise TypeError(f"priority_groups must be a list of group names, got {type(groups).__name__}")
        groups = [check_group("priority_groups entry", group) for group in groups]
        if not groups:
            raise ValueError("priority_groups must name at least one group (or be None)")
        if len(set(groups)) != len(groups):
            raise ValueError(f"priority_groups must not repeat a group, got {groups!r}")
    policy = None if config.priority_policy is None else check_policy(config.priority_policy)
    if policy is not None and groups is None:
        raise ValueError(f"priority_policy {policy.value!r} needs priority_groups (a list of group names)")
    if groups is not None and policy is None:
        allowed = ", ".join(repr(p) for p in _POLICIES)
        raise ValueError(f"priority_groups needs a priority_policy: one of {allowed}")
    timeout = config.priority_timeout
    if timeout is not None:
        timeout = check_duration("priority_timeout", timeout)
        if policy is not PriorityPolicy.PINNED_CLIENT:
            # The server stores it for any policy, but only pinned_client uses it.
            raise ValueError(
                "priority_timeout applies to priority_policy 'pinned_client' only, "
                f"got priority_policy {policy.value if policy else None!r}"
            )
    until = config.pause_until
    if until is not None:
        until = check_time("pause_until", until)
    return config.evolve(
        priority_groups=groups, priority_policy=policy, priority_timeout=timeout, pause_until=until
    )
