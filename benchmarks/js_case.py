"""nats.js (the JavaScript client, on node) beside natspull: cases 1js, 2js and 8js.

The Python side sets up the stream and consumer with natspull and publishes the messages to
consume (outside the clock), then runs ``benchmarks/js/bench.mjs`` once per row in a ``node``
subprocess; the script times only the measured part (not node's start-up, nor connecting) and
prints the rate. The rows mirror natspull's cases and show "case N at R x" for natspull's row:

- 1js ``nats_js_consume_ack``: ``consumer.consume()`` + ``m.ack()``, then a flush (case 1);
- 2js ``nats_js_consume_noack``: the same on an ``AckPolicy.NONE`` consumer (case 2);
- 8js ``nats_js_publish``: ``js.publish()`` with at most 256 PubAcks outstanding, until every
  PubAck is in (case 8's ``publish_many``, default window 256).

nats.js (``@nats-io/transport-node`` and ``@nats-io/jetstream`` 3.x) is installed with npm into
``benchmarks/.js/`` (git-ignored) on first use. Without node or npm, or when the install fails,
the cases raise :class:`Skip` with the reason. ``--quick`` (CI) never installs: it runs these
cases only when the packages are already there.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import natspull

from ._env import BenchmarkError, Env
from ._registry import MSGS_PER_S, Sample, Skip, case, target
from .publish import NATSPULL_ROW, PUBLISH
from .throughput import ITERATOR, SMALL, _runs

__all__ = ["nats_js_consume_ack", "nats_js_consume_noack", "nats_js_publish", "run_js", "versions"]

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "js" / "bench.mjs"
INSTALL_DIR = HERE / ".js"  # git-ignored
PACKAGES = {"@nats-io/transport-node": "^3.4.0", "@nats-io/jetstream": "^3.4.0"}
NODE_MAJOR_MIN = 18
INSTALL_TIMEOUT = 300.0
START_SLACK = 30.0  # node start-up and connect, on top of the measured part's bound

JS_ACK = "nats_js_consume_ack"
JS_NOACK = "nats_js_consume_noack"
JS_PUBLISH = "nats_js_publish"
JS_PUBLISH_ROW = "nats.js publish"


def _package_json() -> str:
    doc = {
        "name": "natspull-benchmarks-js",
        "private": True,
        "description": "written by benchmarks/js_case.py; nats.js for python -m benchmarks",
        "dependencies": PACKAGES,
    }
    return json.dumps(doc, indent=2) + "\n"


def _installed() -> bool:
    """The packages are in INSTALL_DIR, installed from the package.json this module writes."""
    manifest = INSTALL_DIR / "package.json"
    modules = INSTALL_DIR / "node_modules"
    return (
        manifest.is_file()
        and manifest.read_text(encoding="utf-8") == _package_json()
        and all((modules / name / "package.json").is_file() for name in PACKAGES)
    )


def versions() -> dict[str, str]:
    """node's and the installed packages' versions (empty before the install)."""
    found = {}
    for name in PACKAGES:
        path = INSTALL_DIR / "node_modules" / name / "package.json"
        if path.is_file():
            found[name] = json.loads(path.read_text(encoding="utf-8")).get("version", "?")
    node = shutil.which("node")
    if node:
        found["node"] = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout.strip()
    return found


@functools.cache
def _prepare(quick: bool) -> tuple[str | None, str]:
    """(node, "") when nats.js can run here, else (None, why); installs once per process."""
    node = shutil.which("node")
    if node is None:
        return None, "node is not on PATH (install node >= 18 to compare with nats.js)"
    try:
        version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=True)
        major = int(version.stdout.strip().lstrip("v").split(".")[0])
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return None, f"node --version failed: {exc}"
    if major < NODE_MAJOR_MIN:
        return None, f"node {version.stdout.strip()} is too old for nats.js 3.x (needs >= {NODE_MAJOR_MIN})"
    if not _installed():
        if quick:
            return None, (
                f"--quick does not install nats.js; `python -m benchmarks --cases 1js` installs it "
                f"into {INSTALL_DIR.relative_to(HERE.parent)}/"
            )
        why = _install()
        if why:
            return None, why
    shutil.copyfile(SCRIPT, INSTALL_DIR / SCRIPT.name)  # resolves the packages from node_modules
    shown = ", ".join(f"{k} {v}" for k, v in versions().items())
    print(f"nats.js: {shown}", flush=True)
    return node, ""


def _install() -> str:
    """npm install PACKAGES into INSTALL_DIR; "" on success, else why it failed (one line)."""
    npm = shutil.which("npm")
    if npm is None:
        return "npm is not on PATH (needed once, to install nats.js)"
    INSTALL_DIR.mkdir(exist_ok=True)
    (INSTALL_DIR / "package.json").write_text(_package_json(), encoding="utf-8")
    print(f"installing nats.js with npm into {INSTALL_DIR} ...", flush=True)
    command = [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", "--no-save"]
    try:
        done = subprocess.run(
            command, cwd=INSTALL_DIR, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"npm install failed: {exc}"
    if done.returncode != 0 or not _installed():
        head = " ".join((done.stderr or done.stdout).split())[:200]  # npm names the cause first
        return f"npm install failed (exit {done.returncode}): {head}"
    return ""


def run_js(env: Env, job: dict[str, Any]) -> float:
    """Run one bench.mjs job; return its rate in msgs/s (Skip when nats.js cannot run here)."""
    node, why = _prepare(env.quick)
    if node is None:
        raise Skip(why)
    job = {"url": env.url, "timeout": env.timeout, **job}
    try:
        done = subprocess.run(
            [node, str(INSTALL_DIR / SCRIPT.name)],
            input=json.dumps(job),
            capture_output=True,
            text=True,
            timeout=env.timeout + START_SLACK,
            check=False,
            env={**os.environ, "NODE_ENV": "production"},
        )
    except subprocess.TimeoutExpired:
        raise BenchmarkError(
            f"bench.mjs {job['mode']} did not exit within {env.timeout + START_SLACK:g} s"
        ) from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise BenchmarkError(
            f"bench.mjs {job['mode']} exited {done.returncode}: {done.stderr.strip()[-2000:]}"
        )
    result = json.loads(lines[-1])
    if result.get("count") != job["count"]:
        raise BenchmarkError(f"bench.mjs {job['mode']}: expected {job['count']} messages, got {result}")
    return float(result["rate"])


# -------------------------------------------------------------------------------- cases


@case("1js", JS_ACK, "nats.js: consumer.consume() + m.ack() (node), the reference for case 1")
def nats_js_consume_ack(env: Env) -> list[Sample]:
    return _consume(env, ack=True)


@case("2js", JS_NOACK, "nats.js: consume() on an AckPolicy none consumer, the reference for case 2")
def nats_js_consume_noack(env: Env) -> list[Sample]:
    return _consume(env, ack=False)


def _consume(env: Env, *, ack: bool) -> list[Sample]:
    _prepare_or_skip(env)
    natspull_key = ITERATOR if ack else "iterator_noack"
    policy = natspull.AckPolicy.EXPLICIT if ack else natspull.AckPolicy.NONE
    samples = []
    for label, size, n in _runs(env):
        stream = env.filled_stream(size, n)  # the same streams as cases 1 and 2
        # No reader until node has started: keep the (ephemeral) consumer past its 5 s default.
        idle = env.timeout + START_SLACK
        with env.temp_consumer(stream, ack_policy=policy, inactive_threshold=idle) as name:
            mode = "consume_ack" if ack else "consume_noack"
            job = {"stream": stream, "consumer": name, "mode": mode, "count": n, "size": size}
            rate = run_js(env, job)
        samples.append(Sample(label, rate, MSGS_PER_S, n=n, versus=(natspull_key, label)))
    return samples


@case("8js", JS_PUBLISH, "nats.js: js.publish() with 256 PubAcks outstanding, the reference for case 8")
def nats_js_publish(env: Env) -> list[Sample]:
    _prepare_or_skip(env)
    n = env.sizes.publish
    with env.temp_stream() as stream:
        job = {"subject": f"{stream}.m", "mode": "publish", "count": n, "size": 128, "window": 256}
        rate = run_js(env, job)
        stored = env.js.stream_info(stream).state.messages
    if stored != n:
        raise BenchmarkError(f"expected {n} messages in the stream, found {stored}")
    return [Sample(JS_PUBLISH_ROW, rate, MSGS_PER_S, n=n, versus=(PUBLISH, NATSPULL_ROW))]


def _prepare_or_skip(env: Env) -> None:
    """Skip before filling streams when nats.js cannot run here."""
    node, why = _prepare(env.quick)
    if node is None:
        raise Skip(why)


# ------------------------------------------------------------------------------ targets

target(
    "case 1 >= 2.0x case 1js (nats.js consume() + ack), 128 B",
    lambda r: r.ratio(ITERATOR, SMALL, JS_ACK, SMALL),
    2.0,
    "x",
)
target(
    "case 2 >= 1.2x case 2js (nats.js consume(), no acks), 128 B",
    lambda r: r.ratio("iterator_noack", SMALL, JS_NOACK, SMALL),
    1.2,
    "x",
)
target(
    "case 8 publish_many >= 1.5x case 8js (nats.js pipelined publish)",
    lambda r: r.ratio(PUBLISH, NATSPULL_ROW, JS_PUBLISH, JS_PUBLISH_ROW),
    1.5,
    "x",
)
