"""Input messages to the agent a fetch at a time: Faust's consumer drain, patched.

Faust's consumer loop (``Consumer._drain_messages``, faust-streaming 0.15.3)
hands every message to the topic conductor with
``await self.wait_first(callback(message), self.suspend_flow.wait())``,
which creates tasks and futures per message, and the agent's stream then
takes each event in turn: scheduling per event, not work. It cost a no-op
agent about 70 µs of CPU per event (``docs/decisions/0007-live-path.md``).

:class:`BatchingConsumer` keeps Faust's loop as it is (``getmany``, read
offsets, gaps, the commit cadence, the pause between fetches) and changes one
thing: the messages of the **batched topics** (the four inputs) of one fetch
are tracked as Faust tracks them (so ``wait_empty`` and commits see them) and
delivered to the agent's channel as **one list**. The delivery still races
``suspend_flow``: a rebalance interrupts a delivery blocked on a full channel
exactly as it interrupts Faust's per-message one; the batch is then dropped,
its messages stay unacked, and they are read again from the committed offset
(the earliest where nothing was committed: :func:`seek_to_committed_or_earliest`,
the seek the rebalance ends with).
Messages of every other topic (table changelogs) take Faust's own path.

The agent acks each message (Faust's public ``Consumer.ack``) once the
flush covering it is on the broker, and empties each delivered list once
handled: on a revoke Faust waits until every tracked message is acked or
gone (``Consumer.wait_empty``), and a list still referenced somewhere (the
stream's current event) would hold that wait, and the rebalance, forever. The consumer Faust's
thread builds also gets :class:`FetchLimits` (Faust asks the broker for one
byte per fetch: under a trickle of events, a fetch per few records;
``docs/decisions/0010-latency-under-a-trickle.md``). Installed on
an app by :func:`install`; ``tests/unit/test_drain.py`` checks the loop it
replaces is still the one copied here, and that a rebalance interrupts a
blocked delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, cast

import faust
from aiokafka import AIOKafkaConsumer as AIOKafkaClient
from aiokafka import TopicPartition
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP, Message
from mode import Service

from streamtags.live.faust_internals import tune_fetches

__all__ = [
    "BatchRoute",
    "BatchingConsumer",
    "FetchLimits",
    "install",
    "seek_to_committed_or_earliest",
]

#: Messages drained between two yields to the event loop (Faust's own figure).
YIELD_EVERY = 100

#: How long a rebalance's seek waits for the reset of never-committed inputs, seconds.
RESET_WAIT_S = 1.0


class BatchRoute:
    """Where the batched topics' messages go: one list per fetch, into ``channel``."""

    def __init__(self, topics: set[str], channel: Any) -> None:
        #: names of the topics whose messages are batched
        self.topics = frozenset(topics)
        #: the Faust channel the agent reads (one value per fetch: ``list[Message]``)
        self.channel = channel

    async def deliver(self, messages: list[Message]) -> None:
        """Put one fetch's messages on the channel (waits while it is full)."""
        await self.channel.send(value=messages)


@dataclass(frozen=True, slots=True)
class FetchLimits:
    """How much a fetch asks the broker for: at least ``min_bytes``, waiting at most
    ``max_wait_ms`` for them. Faust asks for 1 byte (waiting up to 1.5 s for it), so
    under a trickle of events every few records cost a fetch round trip, its response
    parsed for every assigned partition, and a hand-off to the agent."""

    min_bytes: int = 1
    max_wait_ms: int = 1500


async def seek_to_committed_or_earliest(
    consumer: AIOKafkaClient, batched: Collection[str]
) -> dict[TopicPartition, int | None]:
    """Seek every assigned partition to its group's committed offset, and a partition of
    a ``batched`` topic with nothing (or 0) committed to its earliest offset, where the
    worker's ``consumer_auto_offset_reset="earliest"`` starts it; returns the committed
    offsets of the partitions still assigned (None: nothing committed), as aiokafka's
    ``seek_to_committed`` does.

    aiokafka's own leaves a partition with nothing committed where its fetcher is.
    Faust relies on this seek to read again what a rebalance dropped: its ``getmany``
    drops a fetch whose flow stopped, also one of the new assignment taken before the
    flow stopped again (the drain drops a delivery it interrupted). So a new owner of
    a partition nobody had committed lost the records of that fetch, and its stream
    waited for them forever (tests/integration/test_drain_seek.py)."""
    committed: dict[TopicPartition, int | None] = {}
    for tp in consumer.assignment():
        committed[tp] = await consumer.committed(tp)
    # Seek only what is still assigned after those round trips (a revoke may have come).
    assigned = consumer.assignment()
    committed = {tp: offset for tp, offset in committed.items() if tp in assigned}
    never: list[TopicPartition] = []
    for tp, offset in committed.items():
        if offset is not None and offset > 0:
            consumer.seek(tp, offset)
        elif tp.topic in batched:
            never.append(tp)
    if never:
        # The reset is requested at once and no record is fetched before it is done;
        # waiting for it could hold Faust's recovery up to the request timeout (90 s).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(consumer.seek_to_beginning(*never), timeout=RESET_WAIT_S)
    return committed


class _FetchTunedThread(AIOKafkaConsumerThread):
    """Faust's consumer thread, with the consumer's fetch limits set before it starts,
    and a seek to the committed offsets that also moves never-committed inputs."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        limits = cast(BatchingConsumer, self.consumer).fetch_limits
        tune_fetches(consumer, min_bytes=limits.min_bytes, max_wait_ms=limits.max_wait_ms)
        return consumer

    async def seek_to_committed(self) -> Mapping[TP, int]:
        route = cast(BatchingConsumer, self.consumer).route
        batched = route.topics if route is not None else frozenset()
        consumer = self._ensure_consumer()
        committed = await self.call_thread(seek_to_committed_or_earliest, consumer, batched)
        return cast(Mapping[TP, int], committed)


class BatchingConsumer(AIOKafkaConsumer):
    """Faust's aiokafka consumer whose drain delivers batched topics a fetch at a time."""

    #: set by :func:`install` before the worker starts; None drains as Faust does
    route: BatchRoute | None = None
    #: set by :func:`install`: the fetch limits of the consumer the thread creates
    fetch_limits: FetchLimits = FetchLimits()

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return _FetchTunedThread(self, loop=self.loop, beacon=self.beacon)

    async def deliver(self, messages: list[Message]) -> bool:
        """Hand ``messages`` to the route unless flow stops first (a rebalance);
        returns whether they were delivered."""
        assert self.route is not None
        route_delivery = self.route.deliver(messages)
        try:
            outcome = await self.wait_first(route_delivery, self.suspend_flow.wait())
            if route_delivery in outcome.done:
                return True
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this drain is being cancelled (the worker stops)
            # A revoke cleared the channel, which cancels a put waiting for room: the
            # delivery failed, like one interrupted by suspend_flow.
        # Emptied, not just dropped: during a revoke Faust waits until every tracked
        # message is acked or gone, and this list may still be referenced (a frame, the
        # cancelled send); its messages are read again from the committed offset.
        messages.clear()
        return False

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - the worker's loop
        # Faust's loop (see the module docstring and test_drain.py), with the batched
        # topics' messages collected per fetch instead of delivered one by one.
        route = self.route
        if route is None:
            await super()._drain_messages(fetcher)
            return None
        batched, callback, getmany = route.topics, self.callback, self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                ait = getmany(timeout=1.0)
                await self.sleep(0)  # Faust's: getmany may not release the loop
                if not self.should_stop:
                    batch = await self._take_fetch(ait, batched, callback)
                    if batch:
                        await self.deliver(batch)
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return None
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return None
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)
        return None

    async def _take_fetch(
        self,
        ait: AsyncIterator[tuple[TP, Message]],
        batched: frozenset[str],
        callback: Callable[[Message], Any],
    ) -> list[Message]:
        """One fetch: Faust's per-message checks; batched topics' messages are tracked
        and returned, the others delivered one by one as Faust does."""
        read_offsets, commit_every = self._read_offset, self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        batch: list[Message] = []
        since_yield = 0
        async for tp, message in ait:
            since_yield += 1
            if since_yield > YIELD_EVERY:
                await asyncio.sleep(0)
                since_yield = 0
            offset = message.offset
            r_offset = read_offsets[tp]
            if r_offset is not None and offset < r_offset:
                continue  # Faust drops (and logs at dev level) an offset read before
            if r_offset and offset - r_offset > 1 and acks_enabled_for(message.topic):
                await self._add_gap(tp, r_offset + 1, offset)
            if commit_every is not None and self._n_acked >= commit_every:
                self._n_acked = 0
                await self.commit()
            if message.topic in batched:
                message.tracked = True
                self.track_message(message)
                batch.append(message)
            else:
                await self.wait_first(callback(message), self.suspend_flow.wait())
            read_offsets[tp] = offset
        return batch


def install(app: faust.App, route: BatchRoute, limits: FetchLimits | None = None) -> None:
    """Make ``app``'s consumer a :class:`BatchingConsumer` that feeds ``route`` and
    fetches within ``limits`` (Faust's own when None).

    Call before the worker starts (the consumer is created at start-up).
    The batched topics must still be registered with the app's conductor
    (``app.topics.add``) so the consumer subscribes to them and acks count."""
    consumer_class = type(
        "RoutedBatchingConsumer",
        (BatchingConsumer,),
        {"route": route, "fetch_limits": limits or FetchLimits()},
    )
    cast(Any, app.transport).Consumer = consumer_class
