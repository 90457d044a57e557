"""The seek a rebalance ends with, on the real broker: records a rebalance dropped are
read again, also from an input partition nobody committed yet.

Faust ends each rebalance by seeking every partition to its committed offset, and
counts on that seek to read again what the rebalance dropped (its ``getmany`` drops
a fetch whose flow stopped). aiokafka's ``seek_to_committed`` leaves a partition with
nothing committed where its fetcher is, so a worker taking over such a partition
lost the records fetched during the rebalance and held its stream for them forever:
``test_restarts.py``'s survivor gave no coupon on that partition, about one run in
three on a loaded machine. :func:`seek_to_committed_or_earliest` is the seek the
worker's consumer thread uses instead.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from streamtags.live.drain import seek_to_committed_or_earliest
from streamtags.live.topics import ensure_topics
from tests.integration.conftest import KAFKA, produce

RECORDS = 4


@pytest.fixture
async def fetched() -> AsyncIterator[tuple[AIOKafkaConsumer, TopicPartition, TopicPartition]]:
    """A group's consumer that fetched every record of an input partition and of another
    topic's partition (nothing committed for either), as a rebalance might have."""
    prefix = f"it{uuid.uuid4().hex[:10]}"
    inputs, other = TopicPartition(f"{prefix}.orders", 0), TopicPartition(f"{prefix}.other", 0)
    await ensure_topics([inputs.topic, other.topic], bootstrap=KAFKA, partitions=1)
    for tp in (inputs, other):
        await produce(tp.topic, [(b"user", b"{}")] * RECORDS)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=KAFKA,
        group_id=f"{prefix}-app",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        consumer.assign([inputs, other])
        await fetch_all(consumer, inputs, other)
        yield consumer, inputs, other
    finally:
        await consumer.stop()


async def fetch_all(consumer: AIOKafkaConsumer, *tps: TopicPartition) -> list[int]:
    """Fetch until each partition's position is at its end; the offsets fetched."""
    offsets: list[int] = []
    for _ in range(50):
        positions = [await consumer.position(tp) for tp in tps]
        if all(position == RECORDS for position in positions):
            return offsets
        batches = await consumer.getmany(*tps, timeout_ms=200)
        offsets += [record.offset for records in batches.values() for record in records]
    raise AssertionError("the records were not fetched")


async def test_an_input_partition_nobody_committed_is_read_again_from_its_earliest(
    fetched: tuple[AIOKafkaConsumer, TopicPartition, TopicPartition],
) -> None:
    consumer, inputs, other = fetched
    # What Faust's seek did: nothing to seek to, so the dropped records stay behind.
    await consumer.seek_to_committed()
    assert await consumer.position(inputs) == RECORDS

    committed = await seek_to_committed_or_earliest(consumer, {inputs.topic})

    assert committed == {inputs: None, other: None}
    assert await consumer.position(inputs) == 0
    assert await consumer.position(other) == RECORDS, "only the batched topics move"
    assert await fetch_all(consumer, inputs) == list(range(RECORDS))


async def test_a_committed_partition_is_read_again_from_its_committed_offset(
    fetched: tuple[AIOKafkaConsumer, TopicPartition, TopicPartition],
) -> None:
    consumer, inputs, _ = fetched
    await consumer.commit({inputs: 2})

    committed = await seek_to_committed_or_earliest(consumer, {inputs.topic})

    assert committed[inputs] == 2
    assert await consumer.position(inputs) == 2
