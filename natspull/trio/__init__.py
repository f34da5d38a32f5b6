"""natspull for trio programs: the same client, consumers and iterator, without blocking trio.

Needs the ``trio`` extra (``pip install 'natspull[trio]'``)::

    import trio
    import natspull.trio

    async def main() -> None:
        async with natspull.trio.open_client("nats://127.0.0.1:4222") as client:
            js = client.jetstream()
            consumer = await js.consumer("ORDERS", "worker")
            async with consumer.messages() as msgs:
                async for msg in msgs:
                    print(msg.data)
                    msg.ack()

    trio.run(main)

The objects here wrap the blocking ones (``.sync`` gives them back) and run nothing new on the
network: nats-py still lives on the client's loop thread (``_loop.py``), and the pull engine
(``_pull.py``) still feeds the iterator's :class:`~natspull._engine._queue.MsgQueue`. The trio side
lives in ``_trio_messages.py`` (the iterator, the waker, :class:`Msg`) and ``_trio_client.py``
(client, JetStream, consumer).

Messages are :class:`natspull.trio.Msg`, a ``__slots__`` wrapper of :class:`natspull.Msg`:
``ack()``, ``nak()``, ``term()`` and ``in_progress()`` return at once and stay plain methods;
``await msg.ack_sync()`` is the one that waits for the server. ``msg.sync`` is the wrapped one.

``await js.ordered_consumer(stream, ...)`` gives an :class:`OrderedConsumer` (a wrapped
:class:`natspull.OrderedConsumer`): ``messages()`` (an :class:`OrderedMessages`), ``fetch()``,
``next()`` and ``aclose()``; its messages cannot be acked (OrderedConsumerUsageError).

Who waits where
---------------
* **Short, bounded calls** - connect, close, stream/consumer management, ``publish``,
  ``info()``, starting an iterator, ``Msg.ack_sync()`` - run the blocking natspull call on a
  trio worker thread (``trio.to_thread.run_sync``, ``abandon_on_cancel=False``): a
  cancellation waits for the call, which its own timeout bounds, so no half-done operation is
  orphaned on a thread. ``close`` is also shielded: leaving ``open_client`` always closes.
* **Receiving blocks no thread at all.** ``Messages`` never calls ``queue.get()``. It takes a
  burst with ``queue.get_many_nowait(limit, lease=True)`` into a trio-local deque and hands
  messages from there to tasks; a task that finds nothing parks in a trio ``ParkingLot``.
  ``fetch()``/``next()`` likewise wait for their one-shot queue on the trio side.

Wake-ups, one per burst
-----------------------
The loop thread calls ``queue.on_ready`` once per burst it buffers, once per state change and
once per notice (a missed heartbeat); the iterator sets it to ``Waker.on_ready``
(``_trio_messages.py``), which does nothing while no task waits and
otherwise schedules ``wake`` with ``trio_token.run_sync_soon(wake, idempotent=True)``: never
blocking, coalesced (a burst of any size, seen by any number of waiting tasks, costs one trio
wake-up), and ignored once the trio run has ended (``trio.RunFinishedError``). ``wake``
unparks every waiting task; each re-checks in a ``while`` loop and parks again if another task
was faster, like waiters on a condition variable.

No lost wake-up: a task counts itself in ``Waker.sleepers`` *before* its last look at the
queue, and ``put_many`` buffers a burst *before* calling ``on_ready``; so either the look sees
the burst or ``on_ready`` sees the sleeper. Everything trio-side (the local deque, the parking
lot) is touched only on the trio thread - by tasks or by ``run_sync_soon`` callbacks - and the
look and ``park()`` have no ``await`` between them, so nothing else runs in between.

Cancellation is exact
---------------------
``Messages.next()`` is ``checkpoint_if_cancelled()``, then a synchronous ``_take()`` that
either hands exactly one message over (pop it from the deque, ``queue.release()`` it) or takes
nothing, then - only when it took nothing - ``park()``, and after a successful take only
``cancel_shielded_checkpoint()`` (a schedule point that cannot raise) before ``return``. So
``trio.Cancelled`` (a cancel scope, ``move_on_after``, ``fail_after``, a nursery cancel) can
only be raised where the task holds nothing: a message never leaves the deque for a task that
will not return it, and the next receive gets it. ``next()`` and ``__anext__()`` are
KI-protected, so trio delivers Ctrl-C at the same two points only.

Flow control: messages taken into the deque are *leased* - they keep counting against
``max_messages``/``max_bytes`` until a task receives them - so the deque never lets the
server push more than the iterator's limits.

How an iterator ends
--------------------
======================== ==================================================================
``drain()``              no new pulls; tasks still get the deque, the queue and what is in
                         flight; then ``next()`` raises IteratorClosedError and
                         ``async for`` ends
``stop()``, leaving      ends at once; the deque and the queue's buffer are NAKed (and
``async with``           released), so the server redelivers them now, not after ack_wait
it broke                 (ConsumerDeletedError, ConnectionClosedError, ...) the deque is
                         NAKed when possible; every ``next()`` raises the error (sticky)
======================== ==================================================================

``stop()`` and ``drain()`` never block and may be called from any task or thread. In a trio
program, react to signals with ``trio.open_signal_receiver`` and call them from a task.
"""

try:
    import trio as _trio  # noqa: F401  # only to fail early, with the name of the extra
except ImportError as exc:
    raise ImportError("natspull.trio needs trio: pip install 'natspull[trio]'") from exc

from ._client import Client, Consumer, JetStream, OrderedConsumer, open_client
from ._iterator import Messages, MessagesStats, Msg, OrderedMessages

__all__ = [
    "Client",
    "Consumer",
    "JetStream",
    "Messages",
    "MessagesStats",
    "Msg",
    "OrderedConsumer",
    "OrderedMessages",
    "open_client",
]
