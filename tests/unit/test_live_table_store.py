"""TableStore on Faust's real RocksDB and memory stores: per-partition reads, writes, scans.

The Kafka producer is the one stand-in: it records what TableStore queues and
answers like a broker would (a future that resolves to the record's offset).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
from aiokafka.structs import RecordMetadata
from faust.types import TP

from streamtags.live.table_store import TableStore, partition_of


class RecordingProducer:
    """Queues nothing anywhere: each send resolves at once with the next offset."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes, int]] = []

    async def send(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        partition: int,
        timestamp: float | None,
        headers: Any,
    ) -> asyncio.Future[RecordMetadata]:
        offset = len(self.sent)
        self.sent.append((topic, key, value, partition))
        future: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        metadata = RecordMetadata(topic, partition, TP(topic, partition), offset, -1, 0, None)
        future.set_result(metadata)
        return future

    @property
    def _producer(self) -> RecordingProducer:
        return self  # the aiokafka producer behind Faust's: batches go through it too

    def create_batch(self) -> RecordingBatch:
        return RecordingBatch()

    async def send_batch(
        self, batch: RecordingBatch, topic: str, *, partition: int
    ) -> asyncio.Future[RecordMetadata]:
        first = len(self.sent)
        self.sent += [(topic, key, value, partition) for key, value in batch.records]
        future: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        future.set_result(
            RecordMetadata(topic, partition, TP(topic, partition), first, -1, 0, None)
        )
        return future


class RecordingBatch:
    """An aiokafka batch builder that holds three records at most."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes]] = []

    def append(self, *, key: bytes, value: bytes, timestamp: None) -> object | None:
        if len(self.records) == 3:
            return None
        self.records.append((key, value))
        return object()


def table_store(tmp_path: Path, store: str) -> tuple[TableStore, Any, RecordingProducer]:
    app = faust.App(
        f"table-{store[:4]}", broker="kafka://127.0.0.1:9", store=store, datadir=str(tmp_path)
    )
    table = app.Table("state", key_type=bytes, value_type=bytes, partitions=2)
    producer = RecordingProducer()
    facade = SimpleNamespace(
        data=table.data,
        changelog_topic=table.changelog_topic,
        app=SimpleNamespace(producer=producer),
    )
    return TableStore(facade, partitions=2), table, producer


async def test_rocksdb_writes_go_to_the_users_partition_and_its_changelog(tmp_path: Path) -> None:
    store, table, producer = table_store(tmp_path, "rocksdb://")
    delivery = await store.put(1, b"ann", b"state-1")
    await delivery
    await asyncio.sleep(0)  # done-callbacks run on the next loop turn,
    await asyncio.sleep(0)  # and the persisted offset is marked on the one after
    changelog = table.changelog_topic.get_topic_name()
    assert producer.sent == [(changelog, b"ann", b"state-1", 1)]
    assert store.get(1, b"ann") == b"state-1"
    assert store.get(0, b"ann") is None
    assert table.data.persisted_offset(TP(changelog, 1)) == 0  # a restart replays only the tail


async def test_put_many_sends_whole_batches_and_marks_the_last_offset_persisted(
    tmp_path: Path,
) -> None:
    store, table, producer = table_store(tmp_path, "rocksdb://")
    records = [(f"user-{i}".encode(), f"state-{i}".encode()) for i in range(7)]
    deliveries = await store.put_many(1, records)
    assert [count for count, _ in deliveries] == [3, 3, 1]  # full batches, then the rest
    for _, delivery in deliveries:
        await delivery
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    changelog = table.changelog_topic.get_topic_name()
    assert producer.sent == [(changelog, key, value, 1) for key, value in records]
    assert all(store.get(1, key) == value for key, value in records)
    assert table.data.persisted_offset(TP(changelog, 1)) == 6  # the last record's offset


async def test_scans_leave_out_reserved_keys_and_other_partitions(tmp_path: Path) -> None:
    for kind in ("rocksdb://", "memory://"):
        store, _, _ = table_store(tmp_path / kind[:4], kind)
        users = [f"user-{i}".encode() for i in range(20)]
        for user in users:
            await store.put(partition_of(user, 2), user, b"state")
        await store.put(0, b"\x00clock:0", b"[]")
        for number in (0, 1):
            scanned = {key for key, _ in store.scan(number)}
            assert scanned == {u for u in users if partition_of(u, 2) == number}, kind
        assert store.get(0, b"\x00clock:0") == b"[]"
