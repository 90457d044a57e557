"""The batching drain (streamtags.live.drain): Faust's loop as copied, and rebalances.

The consumer here is the real one Faust builds for the app (no broker is
needed: delivery goes from the consumer to the agent's channel).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from pathlib import Path
from typing import Any, cast

import faust
import pytest
from aiokafka import TopicPartition
from faust.transport.consumer import Consumer
from faust.types import TP, Message

from streamtags.live import drain
from streamtags.live.drain import (
    BatchingConsumer,
    BatchRoute,
    FetchLimits,
    install,
    seek_to_committed_or_earliest,
)

#: SHA-256 of faust-streaming 0.15.3's ``Consumer._drain_messages`` source, the loop
#: BatchingConsumer copies: a Faust upgrade that changes it fails here, not in a worker.
FAUST_DRAIN_SHA256 = "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417"


def message(offset: int) -> Message:
    return Message(
        "orders", 0, offset, timestamp=0.0, timestamp_type=0, headers=[], key=b"k",
        value=b"{}", checksum=None, tp=TP("orders", 0),
    )  # fmt: skip


def routed_app(tmp_path: Path) -> tuple[faust.App, Any, Any]:
    """An app whose consumer batches ``orders`` into a one-fetch channel, and the
    subscriber of that channel (what the agent's stream reads)."""
    app = faust.App("drain-test", broker="kafka://127.0.0.1:9", datadir=str(tmp_path))
    fetches = app.channel(maxsize=1)
    install(app, BatchRoute({"orders"}, fetches))
    app.flow_control.resume()  # as a worker does once it owns partitions
    return app, app.consumer, fetches.__aiter__()


def test_faust_drain_loop_is_the_one_batching_consumer_copies() -> None:
    source = inspect.getsource(Consumer._drain_messages)
    assert hashlib.sha256(source.encode()).hexdigest() == FAUST_DRAIN_SHA256, (
        "Faust changed Consumer._drain_messages: compare it with "
        "streamtags.live.drain.BatchingConsumer._drain_messages and update both"
    )


async def test_the_app_consumer_is_the_batching_one_with_the_route(tmp_path: Path) -> None:
    _, consumer, _ = routed_app(tmp_path)
    assert isinstance(consumer, BatchingConsumer)
    assert consumer.route is not None and consumer.route.topics == {"orders"}


async def test_the_consumer_thread_creates_its_kafka_consumer_with_the_fetch_limits(
    tmp_path: Path,
) -> None:
    app = faust.App("drain-test", broker="kafka://127.0.0.1:9", datadir=str(tmp_path))
    install(app, BatchRoute({"orders"}, app.channel()), FetchLimits(65536, 10))
    consumer = app.consumer
    assert isinstance(consumer, BatchingConsumer)
    thread = consumer._new_consumer_thread()
    kafka = thread._create_worker_consumer(cast(Any, app.transport))  # built, not started
    fetcher_limits = (kafka._fetch_min_bytes, kafka._fetch_max_wait_ms)
    assert fetcher_limits == (65536, 10), "the consumer thread ignored the fetch limits"


async def test_a_fetch_is_delivered_as_one_list(tmp_path: Path) -> None:
    _, consumer, subscriber = routed_app(tmp_path)
    batch = [message(0), message(1)]
    assert await asyncio.wait_for(consumer.deliver(batch), timeout=1)
    event = subscriber.queue.get_nowait()
    assert event.value == batch


async def test_a_rebalance_interrupts_a_delivery_blocked_on_a_full_channel(tmp_path: Path) -> None:
    """A revoke stops the consumer's flow first (App._on_partitions_revoked): a delivery
    waiting for room on the channel gives up, and its messages are not delivered."""
    _, consumer, subscriber = routed_app(tmp_path)
    assert await consumer.deliver([message(0)])  # the channel is now full
    blocked = asyncio.ensure_future(consumer.deliver([message(1)]))
    await asyncio.sleep(0.1)
    assert not blocked.done(), "the delivery should wait while the channel is full"
    consumer.stop_flow()
    assert await asyncio.wait_for(blocked, timeout=1) is False
    assert subscriber.queue.qsize() == 1  # only the first fetch


async def test_an_interrupted_delivery_lets_go_of_its_messages(tmp_path: Path) -> None:
    """Faust's revoke waits until every tracked message is acked or gone: a list that
    was not delivered is emptied, so nothing keeps its messages alive."""
    _, consumer, _ = routed_app(tmp_path)
    assert await consumer.deliver([message(0)])  # the channel is now full
    batch = [message(1), message(2)]
    blocked = asyncio.ensure_future(consumer.deliver(batch))
    await asyncio.sleep(0.05)
    consumer.stop_flow()
    assert await asyncio.wait_for(blocked, timeout=1) is False
    assert batch == []


async def test_a_revoke_clearing_the_channel_fails_a_blocked_delivery(tmp_path: Path) -> None:
    """Faust's revoke clears the agents' queues (flow_control.clear), which cancels a
    put waiting for room: the delivery fails and lets go of its messages; the drain
    goes on (it crashed the worker before)."""
    app, consumer, _ = routed_app(tmp_path)
    assert await consumer.deliver([message(0)])  # the channel is now full
    batch = [message(1)]
    blocked = asyncio.ensure_future(consumer.deliver(batch))
    await asyncio.sleep(0.05)
    app.flow_control.clear()
    assert await asyncio.wait_for(blocked, timeout=1) is False
    assert batch == []


async def test_the_consumer_thread_seeks_with_the_batched_topics(tmp_path: Path) -> None:
    """A rebalance ends with Faust's seek to the committed offsets; the worker's thread
    makes it :func:`seek_to_committed_or_earliest` for the routed topics (the real-broker
    behaviour is in tests/integration/test_drain_seek.py)."""
    _, consumer, _ = routed_app(tmp_path)
    thread = consumer._new_consumer_thread()
    kafka = object()
    calls: list[tuple[Any, ...]] = []

    async def call_thread(fun: Any, *args: Any) -> dict[TP, int]:
        calls.append((fun, *args))
        return {}

    thread._consumer = kafka
    thread.call_thread = call_thread
    assert await thread.seek_to_committed() == {}
    assert calls == [(seek_to_committed_or_earliest, kafka, frozenset({"orders"}))]


class FakeKafka:
    """The aiokafka consumer calls the seek makes; ``revoke`` goes while offsets are asked."""

    def __init__(self, committed: dict[TopicPartition, int | None], revoke: set[TopicPartition]):
        self.offsets, self.revoke = committed, revoke
        self.assigned = set(committed)
        self.sought: dict[TopicPartition, int] = {}
        self.to_beginning: list[TopicPartition] = []

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    async def committed(self, tp: TopicPartition) -> int | None:
        self.assigned -= self.revoke
        return self.offsets[tp]

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.sought[tp] = offset

    async def seek_to_beginning(self, *tps: TopicPartition) -> bool:
        self.to_beginning += tps
        await asyncio.Event().wait()  # the fetcher never gets to the reset
        return True


async def test_the_seek_moves_what_is_still_assigned_and_does_not_wait_on_the_reset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(drain, "RESET_WAIT_S", 0.05)
    kept, zero, fresh, revoked = (TopicPartition("orders", n) for n in range(4))
    table = TopicPartition("app-user-state-changelog", 0)
    kafka = FakeKafka({kept: 7, zero: 0, fresh: None, revoked: None, table: None}, {revoked})
    committed = await asyncio.wait_for(
        seek_to_committed_or_earliest(cast(Any, kafka), {"orders"}), timeout=1
    )
    assert committed == {kept: 7, zero: 0, fresh: None, table: None}  # not the revoked one
    assert kafka.sought == {kept: 7}
    assert sorted(kafka.to_beginning) == [zero, fresh]  # a changelog is left where it is
