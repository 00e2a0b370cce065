"""The worker consumer: Faust's, with its per-message hand-off made cheap.

Faust's fetch loop (``Consumer._drain_messages``) hands every message to the conductor with
``await self.wait_first(callback(message), self.suspend_flow.wait())``: four tasks per message
(the callback, the flow, the service's stopped and crashed events), an ``asyncio.wait`` and the
cancellation of the three losers. The callback almost always finishes without suspending (it takes
an uncontended lock and puts the message on a stream queue with room), so on two shared cores this
machinery cost more of a worker's main thread than the Redis counting of the same events.

Here the callback runs eagerly to its first suspension point. If it finished, the message is
handed off and nothing else happens. If it suspended (a full stream queue: backpressure), the
rest of the coroutine goes through Faust's own ``wait_first`` with the flow event, exactly as
before, so a rebalance that suspends the flow still cancels a hand-off stuck on a full queue.
The callback's first step ran in a task before too, so nothing runs earlier than it did, only
without the tasks.

The rest of the loop is Faust's (faust-streaming 0.15.3, pinned with aiokafka):
``tests/streams/test_consumer.py`` fails when a new Faust changes the loop this copies.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Generator, Mapping
from types import CoroutineType
from typing import Any, cast

from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as driver
from faust.types import TP
from mode import Service, ServiceT

__all__ = ["Consumer", "install", "resume"]


class _Resume:
    """Awaitable that continues ``coro`` from its first suspension (it yielded ``first``).

    A task awaiting it sees what the coroutine yielded (the future it waits on), and what the task
    sends or throws back (the wake-up, a cancellation) goes on into the coroutine, as if the task
    had run it from the start."""

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self._coro, self._first = coro, first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self._coro, self._first
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # a cancellation, or the awaited future's error
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


async def resume(coro: Coroutine[Any, Any, Any], first: Any) -> Any:
    """The rest of ``coro`` after its first step yielded ``first`` (see :class:`_Resume`)."""
    return await _Resume(coro, first)


class Consumer(driver.Consumer):
    """Faust's aiokafka consumer; only the per-message hand-off of the fetch loop differs (module doc)."""

    async def _drain_messages(self, fetcher: ServiceT) -> None:  # pragma: no cover - Faust's loop
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set

        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = faust_consumer.CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for

        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait = cast(AsyncIterator[Any], getmany(timeout=1.0))
                # getmany can return at once again and again: the loop must let others run
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0

                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset:  # a gap in the offsets: compacted, or transactions
                                acks_enabled = acks_enabled_for(message.topic)
                                if acks_enabled:
                                    await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            coro = callback(message)
                            if type(coro) is not CoroutineType:  # another awaitable: Faust's way
                                await self.wait_first(coro, self.suspend_flow.wait())
                            else:
                                try:
                                    first = coro.send(None)
                                except StopIteration:
                                    pass  # handed off without suspending: no task, no wait
                                else:
                                    await self.wait_first(resume(coro, first), self.suspend_flow.wait())
                            set_read_offset(tp, offset)
                        else:
                            self.log.dev("DROPPED MESSAGE ROFF %r: k=%r v=%r", offset, message.key, message.value)
                    unset_flag(flag_consumer_fetching)

        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """Seek every assigned partition to its committed offset, and a partition with none to its
        first offset.

        Faust calls this to take back what a fetch returned while the flow was suspended: it drops
        those records, and the seek is what makes the broker send them again. aiokafka seeks only
        partitions whose committed offset is above 0, so a partition nothing was ever committed on
        kept its position past the dropped records and lost them. That is the partition a
        rebalance moves to a worker while its first events arrive (a worker stalled before it
        consumed any): its first fetch on the new owner races the recovery that resumes the flow.
        Seeking it to its beginning is what ``consumer_auto_offset_reset="earliest"`` (the worker's
        setting) would have read anyway; records handed to the agents before the rebalance come
        again and the windows count each event once."""
        committed = await super().seek_to_committed()
        if self.app.conf.consumer_auto_offset_reset == "earliest":
            fresh = [tp for tp, offset in committed.items() if offset is None or offset <= 0]
            if fresh:
                await self._thread.seek_to_beginning(*fresh)
        return committed


def install() -> None:
    """Make :class:`Consumer` the one Faust's aiokafka transport builds (idempotent)."""
    driver.Transport.Consumer = Consumer
