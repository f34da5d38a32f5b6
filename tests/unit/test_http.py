"""natspull._workers._http and _metrics: the endpoints over a snapshot, without a server."""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from natspull._workers._http import HttpServer, parse_address
from natspull._workers._metrics import Snapshot
from natspull._workers._supervisor_client import Lag


@pytest.mark.parametrize(
    ("text", "address"),
    [
        (":9464", ("", 9464)),
        ("9464", ("", 9464)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:80", ("::1", 80)),
    ],
)
def test_addresses(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["", "host", "host:port", ":70000", "::1:80"])
def test_bad_addresses(text: str) -> None:
    with pytest.raises(ValueError, match=r"http must look like '\[HOST:\]PORT'"):
        parse_address(text)


lag = {0: Lag(7, 3, 0.0)}  # what the server reads, set per test


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[HttpServer]:
    monkeypatch.setitem(lag, 0, Lag(7, 3, time.monotonic() + 3600))  # fresh for the next hour
    served = HttpServer(("127.0.0.1", 0), "S", "C", lambda: lag[0])
    try:
        yield served
    finally:
        served.close()
        served.close()  # idempotent


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.timeout(30)
def test_livez_and_readyz_follow_the_snapshot(server: HttpServer) -> None:
    assert get(server.url + "/livez") == (200, "ok\n")
    assert get(server.url + "/readyz") == (503, "not ready\n")
    server.publish(Snapshot(ready=True))
    assert get(server.url + "/readyz") == (200, "ready\n")
    server.publish(Snapshot(live=False, ready=True))
    assert get(server.url + "/livez") == (503, "not live\n")
    assert get(server.url + "/readyz")[0] == 503


@pytest.mark.timeout(30)
def test_metrics(server: HttpServer) -> None:
    buckets = (1,) + (0,) * 13 + (2,)
    server.publish(Snapshot(processes=2, handled=5, poison=1, in_flight=4, buckets=buckets, duration_sum=1.5))
    code, text = get(server.url + "/metrics")
    assert code == 200
    labels = '{consumer="C",stream="S"}'
    for line in [
        f"natspull_worker_processes{labels} 2.0",
        f"natspull_messages_handled_total{labels} 5.0",
        f"natspull_poison_messages_total{labels} 1.0",
        f"natspull_messages_in_flight{labels} 4.0",
        f"natspull_consumer_pending_messages{labels} 7.0",
        f"natspull_consumer_ack_pending_messages{labels} 3.0",
        'natspull_handler_duration_seconds_bucket{consumer="C",le="0.005",stream="S"} 1.0',
        'natspull_handler_duration_seconds_bucket{consumer="C",le="10.0",stream="S"} 1.0',
        'natspull_handler_duration_seconds_bucket{consumer="C",le="+Inf",stream="S"} 3.0',
        f"natspull_handler_duration_seconds_count{labels} 3.0",
        f"natspull_handler_duration_seconds_sum{labels} 1.5",
    ]:
        assert line in text.splitlines(), (line, text)


@pytest.mark.timeout(30)
def test_metrics_without_prometheus_client(server: HttpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import raises ImportError
    code, text = get(server.url + "/metrics")
    assert code == 501 and "pip install 'natspull[metrics]'" in text
    assert get(server.url + "/livez")[0] == 200
    assert get(server.url + "/other")[0] == 404


@pytest.mark.timeout(30)
def test_a_stale_lag_is_not_shown(server: HttpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "natspull_consumer_pending_messages{" in get(server.url + "/metrics")[1]
    monkeypatch.setitem(lag, 0, Lag(7, 3, time.monotonic() - 2.0))
    code, text = get(server.url + "/metrics")
    assert code == 200 and "natspull_consumer_pending_messages{" not in text
    assert "natspull_worker_processes{" in text
