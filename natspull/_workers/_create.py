"""``run_workers(create_consumer=FILE)``: make the durable consumer match a JSON file, once,
before any worker process starts.

The file is the consumer's configuration as ``nats consumer info STREAM NAME --json`` prints its
``config`` (durations in nanoseconds, ``opt_start_time`` RFC 3339), or that whole output (its
``config`` is used). Missing consumer: created with it. Existing consumer: the fields the file
gives are compared with the server's; when some differ, the consumer is updated with the
server's configuration overlaid by the file's fields (a field the file leaves out keeps its
value). A differing field the server never lets change (``IMMUTABLE``, from nats-server's
``checkNewConsumerConfig``) is refused before anything is sent, with a ValueError naming it;
a refusal by the server itself (an older or newer server with other rules) is a ValueError
naming the field too when the server's message names one.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from .._client import connect
from ..errors import ConsumerNotFoundError, JetStreamAPIError

__all__ = ["IMMUTABLE", "apply_consumer_config", "load_consumer_config"]

log = logging.getLogger("natspull")

#: consumer config fields an update may not change (nats-server 2.10-2.12, consumer.go
#: checkNewConsumerConfig), each with the words the server's refusal uses for it.
IMMUTABLE = {
    "deliver_policy": "deliver policy",
    "opt_start_seq": "start sequence",
    "opt_start_time": "start time",
    "ack_policy": "ack policy",
    "replay_policy": "replay policy",
    "idle_heartbeat": "heart beats",
    "flow_control": "flow control",
    "max_waiting": "max waiting",
    "mem_storage": "storage type",
    "deliver_subject": "push based",
    "durable_name": None,
    "name": None,
}
#: what the server answers for a field it refuses that IMMUTABLE does not list (older servers)
_OTHER_REFUSALS = {"filter subject": "filter_subject", "direct": "direct", "sourcing": "sourcing"}
#: the server's defaults for immutable fields it may leave out of its answer
_DEFAULTS: dict[str, Any] = {
    "deliver_policy": "all",
    "opt_start_seq": 0,
    "opt_start_time": None,
    "idle_heartbeat": 0,
    "flow_control": False,
    "mem_storage": False,
    "deliver_subject": None,
}


def load_consumer_config(path: str | os.PathLike[str], consumer: str) -> dict[str, Any]:
    """The consumer configuration in the JSON file *path*, checked against the name *consumer*.
    Raises ValueError (unreadable file, not JSON, not an object, another consumer's name)."""
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except OSError as exc:
        raise ValueError(f"create_consumer: cannot read {os.fspath(path)!r}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"create_consumer: {os.fspath(path)!r} is not JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]  # the whole `nats consumer info --json` output
    if not isinstance(data, dict):
        raise ValueError(f"create_consumer: {os.fspath(path)!r} must hold a JSON object (a consumer config)")
    for key in ("durable_name", "name"):
        if data.get(key, consumer) != consumer:
            raise ValueError(
                f"create_consumer: {os.fspath(path)!r} has {key} {data[key]!r}, "
                f"but the consumer is {consumer!r}"
            )
    if data.get("deliver_subject"):
        raise ValueError(
            f"create_consumer: {os.fspath(path)!r} has a deliver_subject: natspull needs a pull consumer"
        )
    return {**data, "durable_name": consumer, "name": consumer}


def _same(field: str, wanted: Any, current: Any) -> bool:
    if field == "opt_start_time" and isinstance(wanted, str) and isinstance(current, str):
        try:
            return _time(wanted) == _time(current)
        except ValueError:
            return wanted == current
    if field in ("filter_subjects", "backoff") and not wanted and not current:
        return True
    return bool(wanted == current)


def _time(text: str) -> datetime.datetime:
    """An RFC 3339 time as Go prints it (nanoseconds, Z) -> datetime (microseconds)."""
    head, dot, tail = text.replace("Z", "+00:00").partition(".")
    if dot:
        digits = len(tail) - len(tail.lstrip("0123456789"))
        tail = tail[: min(digits, 6)] + tail[digits:]
    return datetime.datetime.fromisoformat(head + dot + tail)


def _field_of(description: str) -> str | None:
    words = description.lower()
    for field, phrase in IMMUTABLE.items():
        if phrase and phrase in words:
            return field
    for phrase, field in _OTHER_REFUSALS.items():
        if phrase in words:
            return field
    return None


def apply_consumer_config(
    servers: str | list[str] | None,
    connect_options: Mapping[str, Any],
    stream: str,
    consumer: str,
    config: dict[str, Any],
) -> str:
    """Create or update *consumer* of *stream* to match *config*; returns what was done
    (``"created"``, ``"updated: field, ..."`` or ``"unchanged"``). Raises ValueError for a field
    that cannot change, natspull errors for the rest (no stream, no server, refused login)."""
    options = {**connect_options, "name": "natspull-create-consumer"}
    with connect(servers, **options) as client:
        js = client.jetstream()
        try:
            current = js._api(f"CONSUMER.INFO.{stream}.{consumer}").get("config") or {}
        except ConsumerNotFoundError:
            current = None
        if current is None:
            body = {"stream_name": stream, "config": config, "action": "create"}
            js._api(f"CONSUMER.CREATE.{stream}.{consumer}", body)
            log.info("natspull: worker: consumer %s of %s created", consumer, stream)
            return "created"
        changed = [
            field
            for field, wanted in config.items()
            if not _same(field, wanted, current.get(field, _DEFAULTS.get(field)))
        ]
        if not changed:
            return "unchanged"
        for field in changed:
            if field in IMMUTABLE:
                raise ValueError(
                    f"create_consumer: the consumer {consumer!r} of {stream!r} has {field} "
                    f"{current.get(field, _DEFAULTS.get(field))!r}, the file asks for {config[field]!r}: "
                    f"{field} cannot change on an existing consumer "
                    f"(delete the consumer, or keep its {field})"
                )
        body = {"stream_name": stream, "config": {**current, **config}, "action": "update"}
        try:
            js._api(f"CONSUMER.CREATE.{stream}.{consumer}", body)
        except JetStreamAPIError as exc:
            refused = _field_of(exc.description or "")
            if refused is None:
                raise
            raise ValueError(
                f"create_consumer: the server refused to change {refused} of the consumer {consumer!r} "
                f"of {stream!r}: {exc.description}"
            ) from None
        log.info("natspull: worker: consumer %s of %s updated: %s", consumer, stream, ", ".join(changed))
        return "updated: " + ", ".join(changed)
