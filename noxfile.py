"""The Python version matrix: ``nox`` runs every session, ``nox -l`` lists them.

* ``portable-3.9``: mypy (strict, setup.cfg) for Python 3.9 and the whole suite on the oldest
  Python, on nats-py's public API only (NATSPULL_PORTABLE=1: the portable mode);
* ``tests-3.13``: mypy and the whole suite on the newest, on the fast path (CI runs the README's
  test command on 3.13 instead);
* ``core-3.9``, ``core-3.10``: the unit tests, the README examples and the core test files, on
  the fast path;
* ``compiled-3.12``: the compiled build (setup.py, ``NATSPULL_COMPILE=1``: mypyc) on Python 3.12,
  the same files and the fork file;
* ``oldest-server``: the compatibility file and the core files against the oldest supported
  nats-server (``OLDEST_SERVER``, downloaded once by ``natspull.testing.server_binary``).

Each session gets its own virtualenv under ``.nox/`` with ``pip install -e '.[test]'`` (done by
uv when it is installed); the resolver picks the newest releases that still support that Python.
Interpreters come from pyenv (``$PYENV_ROOT/versions/3.X.*/bin/python``, default ``~/.pyenv``)
or else ``python3.X`` on PATH; a session whose interpreter is missing fails and names the
version (it is never skipped).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
from collections.abc import Callable

import nox

nox.options.error_on_missing_interpreters = True
nox.options.download_python = "never"  # no interpreter downloads: use the machine's own
nox.options.reuse_venv = "yes"  # locally: keep .nox/ between runs (a clean clone creates them)
# uv (in the test extra) creates and fills a virtualenv several times faster than pip; without
# it nox falls back to virtualenv + pip.
nox.options.default_venv_backend = "uv|virtualenv"

CORE_TESTS = [
    "tests/unit",
    "tests/integration/test_readme.py",
    "tests/integration/test_client.py",
    "tests/integration/test_messages.py",
    "tests/integration/test_consume.py",
    "tests/integration/test_jetstream.py",
    "tests/integration/test_internals.py",
    # Half of these files' CPU: 30 interpreters signalled at random moments. The whole suite
    # runs it on the oldest and the newest Python; the sessions between leave it out.
    "--deselect",
    "tests/integration/test_messages.py::test_sigterm_drain_at_random_moments",
]
# The compiled build's files: the core ones and the fork file (see compiled_312).
COMPILED_TESTS = [*CORE_TESTS, "tests/integration/test_fork.py"]
ROOT = pathlib.Path(__file__).resolve().parent
# The oldest supported nats-server release (docs/guides/servers.md; checked by
# tests/unit/test_supported_servers.py), and what runs against it.
OLDEST_SERVER = "2.10.26"
OLDEST_SERVER_TESTS = [
    "tests/integration/test_compat.py",
    "tests/integration/test_client.py",
    "tests/integration/test_messages.py",
    "tests/integration/test_consume.py",
    "--deselect",
    "tests/integration/test_messages.py::test_sigterm_drain_at_random_moments",
]


def _interpreter(version: str) -> str | None:
    """The path of a CPython *version* ("3.9") interpreter, or None when there is none."""
    root = pathlib.Path(os.environ.get("PYENV_ROOT") or pathlib.Path.home() / ".pyenv")
    candidates = [str(p) for p in root.glob(f"versions/{version}.*/bin/python")]
    # Newest patch release first; then PATH (a pyenv shim for a version not selected fails below).
    candidates.sort(key=lambda p: [int(n) for n in pathlib.Path(p).parts[-3].split(".") if n.isdigit()])
    candidates.reverse()
    on_path = shutil.which(f"python{version}")
    if on_path:
        candidates.append(on_path)
    for candidate in candidates:
        probe = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


def _session(name: str, version: str) -> Callable[[Callable[[nox.Session], None]], object]:
    """Register the decorated function as session *name* on Python *version*.

    With the interpreter missing, the session runs without a virtualenv only to fail with a
    message naming the version.
    """
    python = _interpreter(version)

    def register(body: Callable[[nox.Session], None]) -> object:
        def run(session: nox.Session) -> None:
            if python is None:
                session.error(
                    f"Python {version} not found: install it with pyenv "
                    f"(~/.pyenv/versions/{version}.*/bin/python) or put python{version} on PATH"
                )
            body(session)

        run.__doc__ = body.__doc__
        return nox.session(name=name, python=python or False)(run)

    return register


def _install(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("python", "--version")


@_session("portable-3.9", "3.9")
def portable_39(session: nox.Session) -> None:
    """mypy for Python 3.9 (the last mypy that targets it) and the whole suite on Python 3.9 in
    the portable mode: nats-py's public API only (natspull/_transport/_wire.py)."""
    _install(session)
    session.run("mypy", "--python-version", "3.9")
    session.run("python", "-m", "pytest", *session.posargs, env={"NATSPULL_PORTABLE": "1"})


@_session("tests-3.13", "3.13")
def tests_313(session: nox.Session) -> None:
    """mypy and the whole suite on Python 3.13."""
    _install(session)
    session.run("mypy", "--python-version", "3.13")
    session.run("python", "-m", "pytest", *session.posargs)


@_session("core-3.9", "3.9")
def core_39(session: nox.Session) -> None:
    """The unit tests, README examples and core test files on Python 3.9 (the fast path)."""
    _install(session)
    session.run("python", "-m", "pytest", *CORE_TESTS, *session.posargs)


@_session("core-3.10", "3.10")
def core_310(session: nox.Session) -> None:
    """The unit tests, README examples and core test files on Python 3.10."""
    _install(session)
    session.run("python", "-m", "pytest", *CORE_TESTS, *session.posargs)


@_session("compiled-3.12", "3.12")
def compiled_312(session: nox.Session) -> None:
    """The compiled build (setup.py's COMPILED modules, by mypyc) on Python 3.12: the core test
    files and the fork file (a compiled class takes no weak reference), with
    NATSPULL_EXPECT_COMPILED=1 (tests/unit/test_build.py fails if the pure modules are imported).

    The wheel is built into the session's tmp folder and installed over the editable install;
    pytest runs from that folder, so that no interpreter a test starts (``python -m natspull``)
    finds the tree's pure sources first on ``sys.path``.
    """
    _install(session)
    session.install("pip", "mypy", "setuptools>=68", "wheel")
    wheels = pathlib.Path(session.create_tmp())
    build = ["python", "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w", str(wheels)]
    session.run_install(*build, str(ROOT), env={"NATSPULL_COMPILE": "1"})
    built = sorted(wheels.glob("natspull-*.whl"), key=lambda wheel: wheel.stat().st_mtime)
    if built:  # (with -R, nothing is built or installed: the last install is tested)
        session.install("--no-deps", "--reinstall", str(built[-1]))
    session.chdir(wheels)
    tests = [str(ROOT / t) if t.startswith("tests/") and "::" not in t else t for t in COMPILED_TESTS]
    env = {"NATSPULL_EXPECT_COMPILED": "1"}
    session.run("python", "-m", "pytest", "--rootdir", str(ROOT), *tests, *session.posargs, env=env)


@_session("oldest-server", "3.11")
def oldest_server(session: nox.Session) -> None:
    """The compatibility file and the core files against the oldest supported nats-server."""
    _install(session)
    env = {"NATSPULL_SERVER_VERSION": OLDEST_SERVER}
    session.run("python", "-m", "pytest", *OLDEST_SERVER_TESTS, *session.posargs, env=env)
