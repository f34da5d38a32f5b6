"""``natspull worker --create-consumer FILE.json`` / ``run_workers(create_consumer=...)`` against a
real server: the consumer is created when missing, updated when a field that can change differs,
and a field that cannot change is refused (exit 2, naming it) with nothing changed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import natspull
from natspull._workers import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from natspull.testing import NatsServer

TESTS = str(Path(__file__).parent)


def run_worker(tmp: Path, url: str, stream: str, config: dict[str, object]) -> subprocess.Popen[str]:
    path = tmp / "consumer.json"
    path.write_text(json.dumps(config))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]),
        "NATSPULL_TEST_LEDGER": str(tmp / "ledger"),
    }
    argv = [sys.executable, "-m", "natspull", "worker", "worker_targets:record", "--stream", stream]
    argv += ["--consumer", "work", "--server", url, "--status", "lines", "--create-consumer", str(path)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def consuming(proc: subprocess.Popen[str]) -> str:
    """Read the supervisor's stdout until its worker consumes; the lines read so far."""
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:  # bounded by the test's timeout
        lines.append(line)
        if "consuming" in line:
            return "".join(lines)
    raise AssertionError(f"the worker ended before consuming: {''.join(lines)} {proc.stderr.read()}")  # type: ignore[union-attr]


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.wait(5)


@pytest.mark.timeout(60)
def test_created_when_missing(
    nats_server: NatsServer, js: natspull.JetStream, stream: str, tmp_path: Path
) -> None:
    config = {"durable_name": "work", "ack_policy": "explicit", "max_deliver": 5, "ack_wait": 20_000_000_000}
    proc = run_worker(tmp_path, nats_server.url, stream, config)
    try:
        out = consuming(proc)
    finally:
        code = stop(proc)
    assert code == EXIT_OK
    assert "consumer work of" in out and ": created" in out
    created = js.consumer_info(stream, "work").config
    assert created.max_deliver == 5 and created.ack_wait == 20.0


@pytest.mark.timeout(60)
def test_updated_when_an_updatable_field_differs(
    nats_server: NatsServer, js: natspull.JetStream, stream: str, tmp_path: Path
) -> None:
    js.add_consumer(stream, durable_name="work", ack_policy=natspull.AckPolicy.EXPLICIT, max_deliver=5)
    # max_deliver differs; ack_policy is the same: an update
    proc = run_worker(
        tmp_path,
        nats_server.url,
        stream,
        {"durable_name": "work", "ack_policy": "explicit", "max_deliver": 7},
    )
    try:
        out = consuming(proc)
    finally:
        code = stop(proc)
    assert code == EXIT_OK
    assert "updated: max_deliver" in out
    assert js.consumer_info(stream, "work").config.max_deliver == 7
    # the same file again: nothing to do
    proc = run_worker(tmp_path, nats_server.url, stream, {"durable_name": "work", "max_deliver": 7})
    try:
        out = consuming(proc)
    finally:
        code = stop(proc)
    assert code == EXIT_OK and ": unchanged" in out


@pytest.mark.timeout(60)
def test_a_field_that_cannot_change_is_refused_naming_it(
    nats_server: NatsServer, js: natspull.JetStream, stream: str, tmp_path: Path
) -> None:
    js.add_consumer(stream, durable_name="work", ack_policy=natspull.AckPolicy.EXPLICIT, max_deliver=5)
    proc = run_worker(
        tmp_path, nats_server.url, stream, {"durable_name": "work", "ack_policy": "all", "max_deliver": 9}
    )
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == EXIT_USAGE, err
    assert "ack_policy" in err and "cannot change" in err
    unchanged = js.consumer_info(stream, "work").config
    assert unchanged.max_deliver == 5  # nothing changed, not even the field that could
    # in process: run_workers raises ValueError before any process starts
    path = tmp_path / "deliver.json"
    path.write_text(json.dumps({"config": {"durable_name": "work", "deliver_policy": "new"}}))
    with pytest.raises(ValueError, match="deliver_policy cannot change"):
        natspull.run_workers(
            "worker_targets:record",
            stream=stream,
            consumer="work",
            servers=nats_server.url,
            create_consumer=str(path),
        )


@pytest.mark.timeout(60)
def test_a_missing_stream_or_a_bad_file(nats_server: NatsServer, tmp_path: Path) -> None:
    proc = run_worker(tmp_path, nats_server.url, "NOSUCH", {"durable_name": "work"})
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == EXIT_NOT_FOUND, err
    proc = run_worker(tmp_path, nats_server.url, "NOSUCH", {"durable_name": "other"})
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == EXIT_USAGE and "durable_name 'other'" in err, err
