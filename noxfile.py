"""The Python version matrix: ``nox`` runs every session, ``nox -l`` lists them.

* ``mypy-3.9``, ``mypy-3.13``: mypy (strict, setup.cfg) for the two ends of the range;
* ``core-3.10``, ``core-3.12``: the README examples and the core test files in between;
* ``tests-3.9``, ``tests-3.13``: the whole test suite on the oldest and newest supported Python.

They run in this order, quickest first; a failed session does not stop the others.

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
    "tests/test_readme.py",
    "tests/test_client.py",
    "tests/test_messages.py",
    "tests/test_consume.py",
    "tests/test_queue.py",
    "tests/test_jetstream.py",
    "tests/test_internals.py",
    "tests/test_translate.py",
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


@_session("mypy-3.9", "3.9")
def mypy_39(session: nox.Session) -> None:
    """mypy for Python 3.9, run by 3.9 (the resolver picks the last mypy that targets 3.9)."""
    _install(session)
    session.run("mypy", "--python-version", "3.9")


@_session("mypy-3.13", "3.13")
def mypy_313(session: nox.Session) -> None:
    """mypy for Python 3.13."""
    _install(session)
    session.run("mypy", "--python-version", "3.13")


@_session("core-3.10", "3.10")
def core_310(session: nox.Session) -> None:
    """README examples and the core test files on Python 3.10."""
    _install(session)
    session.run("python", "-m", "pytest", *CORE_TESTS, *session.posargs)


@_session("core-3.12", "3.12")
def core_312(session: nox.Session) -> None:
    """README examples and the core test files on Python 3.12."""
    _install(session)
    session.run("python", "-m", "pytest", *CORE_TESTS, *session.posargs)


@_session("tests-3.9", "3.9")
def tests_39(session: nox.Session) -> None:
    """The whole test suite on Python 3.9."""
    _install(session)
    session.run("python", "-m", "pytest", *session.posargs)


@_session("tests-3.13", "3.13")
def tests_313(session: nox.Session) -> None:
    """The whole test suite on Python 3.13."""
    _install(session)
    session.run("python", "-m", "pytest", *session.posargs)
