"""Fork safety: objects created before ``os.fork()`` refuse to work in the child.

``fork()`` copies the calling thread only. In the child a natspull client has no
event-loop thread (a call handed to it waits for nothing), its socket is the
parent's (writing there would interleave with the parent's traffic), its
buffered messages are the parent's deliveries, and a lock some other thread
held at the fork (the loop thread buffering a burst, a worker acking) stays
held forever. So every inherited object is marked at fork time, in the child:

* :func:`track` puts an object in a registry (a ``WeakSet``; a compiled class, which takes
  no weak reference, through a handle it keeps); one
  ``os.register_at_fork(after_in_child=...)`` hook calls each tracked object's
  ``_after_fork_in_child()``. That replaces the object's locks with fresh ones
  (none can be inherited held, so even ``stats()`` cannot hang), drops what
  belongs to the parent, and makes every later call raise :class:`ForkedError`.
  Module-level locks (``_msg._ack_lock``) are replaced by their own hooks.
* The hooks run in the child before ``os.fork()`` returns there, while it has
  a single thread, so replacing a lock races with nobody. Nothing is acquired
  before the fork: the child never uses what an inherited lock guards (it is
  dropped or frozen), so consistency at the fork buys nothing, and acquiring
  every queue's lock would stall the parent's fork behind its loop thread (or
  deadlock a fork made from a signal handler that interrupted a lock holder).
* Hot paths pay nothing: ``MsgQueue.get()`` sees a CLOSED queue whose terminal
  error is the ForkedError, ``Outbox.put()`` (``Msg.ack()``, ``publish()``)
  sees its existing ``_closed`` flag set; slower paths compare a state field.
  No call checks ``os.getpid()``, a real system call since glibc 2.25.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Protocol

from ..errors import ForkedError

__all__ = ["forked_error", "pid", "track"]

log = logging.getLogger("natspull")

#: This process's id: cached here (no system call per use), updated in each child.
#: Read it as ``_fork.pid`` (a ``from`` import would keep the value of import time).
pid = os.getpid()


class _Inheritable(Protocol):
    def _after_fork_in_child(self) -> None:
        """Child process, single-threaded: replace locks, drop the parent's state, refuse calls."""


# Every live object holding locks or parent-owned state. Added to from any thread
# (a set add is atomic); iterated only in a fresh child, which has one thread.
_tracked: weakref.WeakSet[_Inheritable] = weakref.WeakSet()


def track(obj: _Inheritable) -> object:
    """Have ``obj._after_fork_in_child()`` called in every child forked while *obj* lives. Any thread.

    Returns None; or, for an object that takes no weak reference (a class of the compiled
    build, see setup.py), a handle that *obj* must keep in an attribute: the registry holds
    the handle weakly, the handle holds *obj*, and the cyclic collector frees the two together.
    """
    try:
        _tracked.add(obj)
    except TypeError:  # cannot create weak reference
        handle = _Handle(obj)
        _tracked.add(handle)
        return handle
    return None


class _Handle:
    """Stands in the registry for an object that takes no weak reference."""

    __slots__ = ("__weakref__", "obj")

    def __init__(self, obj: _Inheritable) -> None:
        self.obj = obj

    def _after_fork_in_child(self) -> None:
        self.obj._after_fork_in_child()


def forked_error(what: str, created_in: int) -> ForkedError:
    """The error for a call on *what* (e.g. "this Client"), created in process *created_in*."""
    return ForkedError(
        f"{what} was created in process {created_in} before os.fork(); natspull clients cannot "
        f"cross a fork: call natspull.connect() in the child (pid {pid})"
    )


def _after_fork_in_child() -> None:
    global pid
    pid = os.getpid()
    for obj in list(_tracked):
        try:
            obj._after_fork_in_child()
        except Exception:  # a bug in one object must not leave the others unmarked
            log.exception("natspull: preparing %r for the forked child failed", obj)


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)
