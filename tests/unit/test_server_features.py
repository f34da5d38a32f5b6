"""natspull._server_features: versions, the feature table, the checks. No server."""

from __future__ import annotations

import pytest

import natspull
from natspull import _server_features as sf
from natspull._server_features import Server, ServerVersion

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2.10.26", (2, 10, 26)),
        ("v2.12.0-RC.1", (2, 12, 0)),
        ("2.15.0-dev", (2, 15, 0)),
        ("2.11", (2, 11, 0)),
        (" 2.14.6 ", (2, 14, 6)),
    ],
)
def test_versions_parse(text: str, expected: tuple[int, int, int]) -> None:
    assert ServerVersion.parse(text) == expected
    assert str(ServerVersion.parse(text)) == ".".join(map(str, expected))


@pytest.mark.parametrize("text", ["", "two.ten", "2", "latest"])
def test_bad_versions_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a nats-server version"):
        ServerVersion.parse(text)


def test_versions_compare_as_numbers() -> None:
    assert ServerVersion.parse("2.10.26") < ServerVersion.parse("2.11.0") < ServerVersion.parse("2.11.11")
    assert ServerVersion.parse("2.9.99") < ServerVersion.parse("2.10.0")
    assert ServerVersion.parse("2.12.8") >= (2, 12)


def test_the_table_is_ordered_and_consistent() -> None:
    """Oldest first; each release's API level (checked against the binaries) matches its version."""
    levels = {(2, 11): 1, (2, 12): 2, (2, 14): 4}
    assert list(sf.FEATURES) == sorted(sf.FEATURES, key=lambda f: (f.version, f.level))
    assert len({f.name for f in sf.FEATURES}) == len(sf.FEATURES)
    for feature in sf.FEATURES:
        assert feature.version > sf.OLDEST
        assert levels[feature.version[:2]] == feature.level, feature
    assert sf.CONSUMER_RESET.version == (2, 14, 0) and sf.POLICY_PRIORITIZED.version == (2, 12, 0)
    assert sf.PRIORITY_GROUPS.version == sf.CONSUMER_PAUSE.version == sf.MSG_TTL.version == (2, 11, 0)


@pytest.mark.parametrize(
    ("version", "level", "supported"),
    [
        ("2.10.26", 0, []),
        ("2.11.11", 1, ["priority groups", "pause", "unpin", "TTL", "delete markers"]),
        ("2.12.8", 3, ["prioritized", "atomic", "counters", "schedules", "persist_mode"]),
        ("2.14.6", 4, ["reset", "fast batch"]),
        ("2.15.1", 5, ["reset", "fast batch"]),
    ],
)
def test_what_each_release_supports(version: str, level: int, supported: list[str]) -> None:
    server = Server(ServerVersion.parse(version), level)
    for feature in sf.FEATURES:
        assert server.supports(feature) is (feature.version <= ServerVersion.parse(version)), feature
    for words in supported:
        assert any(words in f.name and server.supports(f) for f in sf.FEATURES), words


def test_both_the_node_and_the_api_level_must_be_new_enough() -> None:
    # A 2.14 node whose meta leader is still 2.11 (level 1), and the other way round.
    assert not Server(ServerVersion(2, 14, 6), 1).supports(sf.CONSUMER_RESET)
    assert not Server(ServerVersion(2, 11, 0), 4).supports(sf.CONSUMER_RESET)
    # Level unknown ($JS.API.INFO failed, a server before 2.12): the version decides.
    assert Server(ServerVersion(2, 14, 0), None).supports(sf.CONSUMER_RESET)


def test_require_names_the_feature_and_both_versions() -> None:
    server = Server(ServerVersion(2, 10, 26), 0)
    with pytest.raises(natspull.NotSupportedError) as caught:
        server.require(sf.CONSUMER_RESET, "reset_consumer")
    error = caught.value
    assert isinstance(error, natspull.Error)
    assert (error.feature, error.required, error.connected) == ("consumer reset", "2.14.0", "2.10.26")
    message = str(error)
    assert message.startswith("reset_consumer: consumer reset needs nats-server 2.14.0 or newer")
    assert "JetStream API level 4" in message and "connected to nats-server 2.10.26" in message
    Server(ServerVersion(2, 14, 0), 4).require(sf.CONSUMER_RESET)  # no error


def test_from_info() -> None:
    assert Server.from_info({"version": "2.10.26"}, 0) == Server(ServerVersion(2, 10, 26), 0)
    # $JS.API.INFO failed: INFO's api_lvl (2.12+) stands in.
    assert Server.from_info({"version": "2.12.8", "api_lvl": 3}, None).api_level == 3
    assert Server.from_info({"version": "2.11.0"}, None).api_level is None
    # No readable version: the oldest, so that checks refuse rather than guess.
    assert Server.from_info({}, None).version == sf.OLDEST


def test_level_header_only_where_the_server_honours_it() -> None:
    features = [sf.PRIORITY_GROUPS, sf.POLICY_PRIORITIZED]
    assert Server(ServerVersion(2, 12, 0), 2).level_header(features) == {"Nats-Required-Api-Level": "2"}
    assert Server(ServerVersion(2, 11, 11), 1).level_header(features) is None  # 2.11 ignores it
    assert Server(ServerVersion(2, 14, 0), 4).level_header([]) is None


def test_config_and_header_features() -> None:
    assert sf.consumer_features({"durable_name": "d"}) == []
    assert sf.consumer_features(
        {"priority_groups": ["g"], "priority_policy": "prioritized", "pause_until": "2030-01-01T00:00:00Z"}
    ) == [sf.PRIORITY_GROUPS, sf.CONSUMER_PAUSE, sf.POLICY_PRIORITIZED]
    assert sf.consumer_features({"priority_groups": ["g"], "priority_policy": "pinned_client"}) == [
        sf.PRIORITY_GROUPS,
        sf.POLICY_PINNED_CLIENT,
    ]
    off = {"allow_msg_ttl": False, "persist_mode": "default", "allow_batched": None}
    assert sf.stream_features(off) == []
    assert sf.stream_features({"allow_batched": True, "allow_msg_ttl": True, "persist_mode": "async"}) == [
        sf.MSG_TTL,
        sf.PERSIST_MODE,
        sf.FAST_BATCH,
    ]
    assert sf.header_features(None) == []
    assert sf.header_features({"nats-ttl": "1s", "Nats-Msg-Id": "x", "Nats-Batch-Id": "b"}) == [
        sf.MSG_TTL,
        sf.ATOMIC_BATCH,
    ]


def test_dropped_fields() -> None:
    requested = {
        "name": "S",
        "allow_msg_ttl": True,
        "subject_delete_marker_ttl": 5_000_000_000,
        "deny_delete": False,
        "max_msgs": 0,
        "compression": "none",
        "filter_subjects": ["a.>"],
    }
    answered = {"name": "S", "filter_subject": "a.>"}
    assert sf.dropped_fields(requested, answered) == ["allow_msg_ttl", "subject_delete_marker_ttl"]
    assert sf.dropped_fields({"filter_subjects": ["a", "b"]}, {"filter_subject": "a"}) == ["filter_subjects"]


def test_unknown_field() -> None:
    description = 'invalid JSON: json: unknown field "allow_batched"'
    assert sf.unknown_field(description, 10025) == "allow_batched"
    assert sf.unknown_field(description, 10059) is None
    assert sf.unknown_field('invalid JSON: unknown priority policy: "prioritized"', 10025) is None
