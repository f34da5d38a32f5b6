"""Under gevent (or eventlet) monkey-patching, natspull refuses at ``connect()`` with a
RuntimeError that says why, instead of blocking the hub without a word. Each case runs in a
fresh interpreter (monkey-patching is for a whole process, and for good)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from natspull.testing import NatsServer

pytest.importorskip("gevent", reason="gevent is in the test extra: pip install -e '.[test]'")


def run(code: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, url], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.timeout(90)
def test_connect_refuses_a_gevent_patched_process(nats_server: NatsServer) -> None:
    code = """
import sys, time
from gevent import monkey
monkey.patch_all()
import gevent
import natspull

def attempt():
    try:
        natspull.connect(sys.argv[1])
    except RuntimeError as exc:
        return str(exc)
    return "connected"

# from a greenlet, and the hub keeps running meanwhile (another greenlet ticks)
ticks = []
ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.01)) for _ in range(5)])
started = time.monotonic()
print(gevent.spawn(attempt).get(timeout=10))
ticker.join(timeout=10)
print("ticks", len(ticks), "seconds", round(time.monotonic() - started, 2))
"""
    result = run(code, nats_server.url)
    assert result.returncode == 0, result.stderr
    message, ticks = result.stdout.splitlines()
    assert "monkey-patched by gevent" in message and "threading" in message, message
    assert "not monkey-patched" in message
    assert ticks.startswith("ticks 5 "), ticks


@pytest.mark.timeout(90)
def test_gevent_imported_but_not_patching_is_fine(nats_server: NatsServer) -> None:
    code = """
import sys
import gevent, gevent.monkey  # imported, nothing patched
import natspull
with natspull.connect(sys.argv[1]) as client:
    client.flush()
print("connected")
"""
    result = run(code, nats_server.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "connected"


@pytest.mark.timeout(90)
def test_connect_refuses_an_eventlet_patched_process(nats_server: NatsServer) -> None:
    # eventlet is not installed here: its patcher module as eventlet has it (is_monkey_patched)
    code = """
import sys, types
patcher = types.ModuleType("eventlet.patcher")
patcher.is_monkey_patched = lambda module: module in ("thread", "socket")
sys.modules["eventlet"] = types.ModuleType("eventlet")
sys.modules["eventlet.patcher"] = patcher
import natspull
try:
    natspull.connect(sys.argv[1])
except RuntimeError as exc:
    print(exc)
"""
    result = run(code, nats_server.url)
    assert result.returncode == 0, result.stderr
    assert "monkey-patched by eventlet (thread, socket patched)" in result.stdout
