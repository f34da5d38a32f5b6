"""``_engine/_settings.py``: the one validation of a read's pull options, without a server.

Every refusal with its message is checked against a server by tests/integration/test_bad_input.py
(through the public calls); here: the defaults and what ends up where in a PullSettings.
"""

from __future__ import annotations

import dataclasses

import pytest

from natspull._consumer_types import ConsumerConfig, ConsumerInfo, PriorityPolicy
from natspull._engine._queue import Flow
from natspull._engine._settings import PullSettings, fetch_settings, pull_settings


def _info(**config: object) -> ConsumerInfo:
    return ConsumerInfo(name="C", stream_name="S", config=ConsumerConfig(**config), created=None)


def test_continuous_defaults() -> None:
    settings = pull_settings()
    assert settings == PullSettings(
        Flow(max_msgs=500, max_bytes=0, threshold_msgs=250, threshold_bytes=0), expires=30.0, heartbeat=15.0
    )
    assert not settings.one_shot and settings.group is None


def test_every_continuous_option_lands_in_the_settings() -> None:
    def on_event(event: object) -> None:
        pass

    settings = pull_settings(
        max_messages=10,
        max_bytes=4096,
        expires=4,
        heartbeat=1,
        threshold_messages=3,
        stop_after=7,
        error_on_missing_heartbeat=True,
        on_event=on_event,
    )
    assert settings.flow == Flow(
        max_msgs=10, max_bytes=0, threshold_msgs=3, threshold_bytes=0, limit=7, request_bytes=4096
    )
    assert (settings.expires, settings.heartbeat) == (4, 1)
    assert settings.error_on_missing_heartbeat and settings.on_event is on_event


def test_settings_are_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        pull_settings().expires = 1.0  # type: ignore[misc]


def test_a_pinned_client_defaults_expires_to_its_keepalive_and_refuses_more() -> None:
    info = _info(priority_groups=["g"], priority_policy=PriorityPolicy.PINNED_CLIENT, priority_timeout=10)
    settings = pull_settings(info, group="g")
    assert settings.expires == 5.0 and settings.group is not None and settings.group.pinned
    with pytest.raises(ValueError, match=r"expires \(6 s\) must be at most 5 s for a pinned client"):
        pull_settings(info, group="g", expires=6)


def test_group_options_are_checked_against_the_consumer() -> None:
    info = _info(priority_groups=["g"], priority_policy=PriorityPolicy.OVERFLOW)
    with pytest.raises(ValueError, match="pass group="):
        pull_settings(info)
    with pytest.raises(ValueError, match="priority needs priority_policy 'prioritized'"):
        fetch_settings(info, group="g", priority=1)
    group = pull_settings(info, group="g", min_pending=5).group
    assert group is not None and group.fields(None) == {"group": "g", "min_pending": 5}
    with pytest.raises(ValueError, match="has no priority groups"):
        pull_settings(_info(), group="g")


def test_fetch_settings_are_one_shot() -> None:
    settings = fetch_settings(batch=5, max_wait=2, max_bytes=100, heartbeat=1)
    assert settings.one_shot and not settings.no_wait
    assert settings.flow == Flow(max_msgs=5, max_bytes=100, threshold_msgs=5, threshold_bytes=100)
    assert (settings.expires, settings.heartbeat) == (2, 1)
    assert fetch_settings(max_wait=0, no_wait=True).no_wait
    with pytest.raises(ValueError, match="heartbeat does not go with no_wait=True"):
        fetch_settings(no_wait=True, heartbeat=1)
