"""``nats-server`` child processes that die with their parent, and stale temporary dirs.

Used by :mod:`natspull.testing`. A server started by natspull must not outlive the program that
started it, however that program ends:

* On Linux the child asks the kernel for ``PR_SET_PDEATHSIG`` = SIGKILL before it execs
  ``nats-server``. ``subprocess``'s ``preexec_fn`` could do that, but it is unsafe in a
  multi-threaded parent (every natspull program is one), so the child runs a small trampoline
  instead: ``python -c _TRAMPOLINE`` calls ``prctl`` through ``ctypes``, checks that its parent is
  still the process that started it (the parent may have died before ``prctl``), then
  ``execv``s the server. SIGKILL rather than SIGTERM: an orphan must go even if it would hang in a
  graceful shutdown; nobody is left to wait for it, and JetStream's file store recovers from a
  kill as from a crash.
* ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child ends, not the process. The
  main thread lives as long as the process, so it starts servers itself; any other thread hands
  the start to :class:`_Launcher`, a thread that stays alive until every server it started has
  been reaped.
* A program killed by SIGKILL, or by a signal it does not handle (Python's default SIGTERM and
  SIGHUP skip ``atexit``), cannot remove its temporary store dir. Each such dir holds an owner
  file naming the program and its server; :func:`remove_stale_dirs` removes dirs whose owner and
  server are both gone when the next temporary dir is made.

Elsewhere (macOS, Windows) there is no ``PR_SET_PDEATHSIG``: the server is started directly and
outlives a parent that is killed without stopping it; its dir is removed as stale once that
server has exited too.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from typing import IO, Any

from .._transport._loop import keep_signals_for_main_thread

__all__ = ["mark_owner", "no_release", "remove_stale_dirs", "spawn"]

_LINUX = sys.platform.startswith("linux")
_OWNER_NAME = "natspull-owner.json"

# argv: the pid that must still be the parent, then the server's argv. The parent check comes
# after prctl: a parent that died before it would never send the signal. SIGPIPE and SIGXFSZ go
# back to SIG_DFL because Python ignores them at start-up and exec keeps an ignored signal
# ignored (subprocess does the same for a direct exec: restore_signals=True).
_TRAMPOLINE = """\
import os, signal, sys
try:
    import ctypes
    if ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0) != 0:  # PR_SET_PDEATHSIG
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
except (ImportError, OSError, AttributeError) as err:
    print(f"natspull: nats-server will not die with its parent: prctl failed: {err}", file=sys.stderr)
if os.getppid() != int(sys.argv[1]):
    sys.exit("natspull: the process that started nats-server is gone; not starting it")
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
try:
    os.execv(sys.argv[2], sys.argv[2:])
except OSError as err:
    sys.exit(f"natspull: cannot run {sys.argv[2]}: {err}")
"""


def no_release() -> None:
    """The release function of a process that needs none (see :func:`spawn`)."""
    return None


class _Launcher:
    """A thread ``natspull-server-parent`` that starts servers for threads other than the main one.

    It runs while any process it started is not yet released (reaped), and ends after the last
    release; the next request starts a new one. It is a daemon thread so that a program which
    never stops its servers can still exit (``weakref.finalize`` of each server kills and releases
    it at exit). Thread-safe.
    """

    def __init__(self) -> None:
        self._forget()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        """Start afresh: also in a forked child, which has neither the thread nor its processes."""
        # Guards _requests, _children and _thread. Leaf lock: nothing else is taken under it, and
        # Popen runs outside it.
        self._cond = threading.Condition(threading.Lock())
        self._requests: collections.deque[
            tuple[list[str], dict[str, Any], concurrent.futures.Future[subprocess.Popen[bytes]]]
        ] = collections.deque()
        self._children = 0  # requested and not yet released; the thread runs while > 0
        self._thread: threading.Thread | None = None

    def popen(self, argv: list[str], kwargs: dict[str, Any]) -> subprocess.Popen[bytes]:
        """Start ``Popen(argv, **kwargs)`` on the launcher thread; the caller must ``release()``.

        Blocks until the process is started. Raises what ``Popen`` raised (then nothing is left
        to release). Any thread.
        """
        future: concurrent.futures.Future[subprocess.Popen[bytes]] = concurrent.futures.Future()
        with self._cond:
            self._requests.append((argv, kwargs, future))
            self._children += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="natspull-server-parent", daemon=True)
                self._thread.start()
            self._cond.notify()
        try:
            return future.result()
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """A process started by :meth:`popen` was reaped (or never started). Any thread."""
        with self._cond:
            self._children -= 1
            self._cond.notify()

    def _run(self) -> None:
        keep_signals_for_main_thread()  # signals for the program go to its main thread
        while True:
            with self._cond:
                while not self._requests and self._children > 0:
                    self._cond.wait()
                if not self._requests:  # every child was released: nothing left to outlive
                    self._thread = None
                    return
                argv, kwargs, future = self._requests.popleft()
            try:
                proc = subprocess.Popen(argv, **kwargs)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(proc)


_launcher = _Launcher()


def spawn(
    argv: Sequence[str], *, stdout: IO[bytes], start_new_session: bool
) -> tuple[subprocess.Popen[bytes], Callable[[], None]]:
    """Start ``argv`` (a ``nats-server`` command line) so that it dies with this process.

    Returns the process and a function to call once it has been reaped (``wait()`` returned);
    call it exactly once. stdin is ``/dev/null``; stdout and stderr go to ``stdout``. Blocks until
    the process is started (a trampoline execs the server moments later: a missing binary shows
    as exit status 1 with a message in the output). Raises what ``subprocess.Popen`` raises. Any
    thread; see the module docstring for why the thread matters.
    """
    kwargs: dict[str, Any] = {
        "stdin": subprocess.DEVNULL,
        "stdout": stdout,
        "stderr": subprocess.STDOUT,
        "start_new_session": start_new_session,
    }
    if not _LINUX or not sys.executable:
        return subprocess.Popen(list(argv), **kwargs), no_release
    trampoline = [sys.executable, "-I", "-S", "-c", _TRAMPOLINE, str(os.getpid()), *argv]
    if threading.current_thread() is threading.main_thread():
        return subprocess.Popen(trampoline, **kwargs), no_release
    return _launcher.popen(trampoline, kwargs), _launcher.release


# ------------------------------------------------------------------ stale temporary dirs


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) of a Linux process, None when /proc has no such pid."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rpartition(")")[2].split()
        return fields[0], int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _start_time(pid: int) -> int | None:
    found = _stat(pid) if _LINUX else None
    return found[1] if found else None


def _alive(pid: int, start: int | None) -> bool:
    """Whether ``pid`` is still the process whose start time was ``start`` (None: unknown).

    In doubt the answer is True: a dir is only removed when both its processes are surely gone.
    """
    if _LINUX:
        found = _stat(pid)
        if found is None:
            return False
        state, now = found
        return state not in ("Z", "X") and (start is None or now == start)  # Z: dead, not reaped
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: someone else's process
        return True
    return True


def _namespace() -> dict[str, str | None]:
    """Where pids mean something: a /tmp shared with another host or pid namespace (a container)
    holds dirs whose processes this one cannot see, and must not take for gone."""
    try:
        pid_ns: str | None = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_ns = None
    return {"host": platform.node(), "pid_ns": pid_ns}


def mark_owner(directory: str, server_pid: int) -> None:
    """Record in ``directory`` that this process and ``server_pid`` use it (atomic replace).

    Call it after each start of a server in a temporary dir. Raises OSError when the file cannot
    be written.
    """
    owner = os.getpid()
    record = {
        "owner": owner,
        "owner_start": _start_time(owner),
        "server": server_pid,
        "server_start": _start_time(server_pid),
        **_namespace(),
    }
    path = os.path.join(directory, _OWNER_NAME)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(record, f)
    os.replace(path + ".tmp", path)


def _is_pid(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _stale(directory: str) -> bool:
    """Whether the owner file of ``directory`` names an owner and a server that are both gone."""
    try:
        with open(os.path.join(directory, _OWNER_NAME), encoding="utf-8") as f:
            record = json.load(f)
        owner, server = record["owner"], record["server"]
        owner_start, server_start = record["owner_start"], record["server_start"]
        here = all(record[key] == value for key, value in _namespace().items())
    except (OSError, ValueError, KeyError, TypeError):  # not ours, being written, or damaged
        return False
    if not (here and _is_pid(owner) and _is_pid(server) and owner != os.getpid()):
        return False
    for start in (owner_start, server_start):
        if not (start is None or (isinstance(start, int) and not isinstance(start, bool))):
            return False
    return not _alive(owner, owner_start) and not _alive(server, server_start)


def remove_stale_dirs(prefix: str) -> None:
    """Remove the dirs ``<tempdir>/<prefix>*`` whose owner file names two processes that are gone.

    Only real dirs (no symlinks) owned by this user with a readable owner file are considered.
    Never raises for a dir it cannot read or remove. Any thread.
    """
    root = tempfile.gettempdir()
    uid = os.getuid() if hasattr(os, "getuid") else None
    try:
        with os.scandir(root) as scan:
            entries = list(scan)
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
            if uid is not None and entry.stat(follow_symlinks=False).st_uid != uid:
                continue
        except OSError:
            continue
        if _stale(entry.path):
            shutil.rmtree(entry.path, ignore_errors=True)
