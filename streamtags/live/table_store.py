"""Per-partition access to the Faust table that holds user states as raw bytes.

Faust writes a table value, and its changelog record, only from inside a
stream event and to that event's partition. streamtags coalesces writes
instead (one record per dirty user per flush, also from the deadline
timer), so it writes the store and the changelog itself, to the partition
the user belongs to, which is the partition of the user's input events
(co-partitioning). Reads never depend on a "current event" either. The
store internals this needs are wrapped in :mod:`streamtags.live.faust_internals`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator, Sequence
from typing import Any

from aiokafka.partitioner import murmur2
from rocksdict import WriteBatch

from streamtags.live.faust_internals import (
    forget_key_partition,
    kafka_producer,
    mark_persisted,
    memory_data,
    remember_key_partition,
    rocks_partition_db,
)
from streamtags.live.seams import Delivery

__all__ = ["TableStore", "partition_of"]


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (murmur2, as producers use)."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


class TableStore:
    """Raw-bytes get/put/scan on a Faust table, by partition.

    The production :class:`~streamtags.live.seams.StateStore`."""

    def __init__(self, table: Any, *, partitions: int) -> None:
        self.table = table
        self.partitions = partitions
        #: (changelog topic, partition) -> the highest offset confirmed since the last mark
        self._confirmed: dict[tuple[str, int], int] = {}

    @property
    def _store(self) -> Any:
        return self.table.data

    def get(self, partition: int, key: bytes) -> bytes | None:
        """The stored bytes of ``key`` in ``partition``, if any."""
        db = rocks_partition_db(self._store, partition)
        value = db.get(key) if db is not None else memory_data(self._store).get(key)
        return bytes(value) if value is not None else None

    async def put(self, partition: int, key: bytes, value: bytes) -> Delivery:
        """Store locally and queue the changelog record; returns its delivery future.

        Goes straight to the app's Kafka producer: Faust's per-record machinery
        (``Table.send_changelog``'s buffer, or ``Topic.send``) cost ~100 us a
        record and made changelog writes the worker's bottleneck. Faust still
        flushes this producer before it commits offsets.
        """
        store = self._store
        db = rocks_partition_db(store, partition)
        if db is not None:
            db.put(key, value)
            remember_key_partition(store, key, partition)
        else:
            memory_data(store)[key] = value
        table = self.table
        future = await table.app.producer.send(
            table.changelog_topic.get_topic_name(), key, value, partition, None, None
        )
        if db is not None:
            future.add_done_callback(self._persisted)
        return future  # type: ignore[no-any-return]

    async def put_many(
        self, partition: int, records: Sequence[tuple[bytes, bytes]]
    ) -> list[tuple[int, Delivery]]:
        """Store ``records`` locally and queue their changelog records as whole producer
        batches (``send_batch``): per record, that costs a fraction of :meth:`put`'s
        ``send``. Returns ``(n, delivery)`` pairs, each covering the next ``n`` records."""
        store = self._store
        db = rocks_partition_db(store, partition)
        if db is not None:
            # One write for all (one log append, not one per record: under load each
            # put's own append cost the worker ~10 % of its samples). Faust's key ->
            # partition index is a lookup cache for reads through the table, which
            # streamtags never makes; a key missing from it is searched.
            batch = WriteBatch(raw_mode=True)
            for key, value in records:
                batch.put(key, value)
            db.write(batch)
        else:
            memory_data(store).update(records)
        producer = kafka_producer(self.table.app)
        topic = self.table.changelog_topic.get_topic_name()
        deliveries: list[tuple[int, Delivery]] = []
        batch, count = producer.create_batch(), 0
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:  # full
                deliveries.append(
                    (count, await self._send(producer, batch, topic, partition, count, db))
                )
                batch, count = producer.create_batch(), 0
                batch.append(key=key, value=value, timestamp=None)  # a first record always fits
            count += 1
        if count:
            deliveries.append(
                (count, await self._send(producer, batch, topic, partition, count, db))
            )
        return deliveries

    async def _send(
        self, producer: Any, batch: Any, topic: str, partition: int, count: int, db: Any
    ) -> Delivery:
        future: asyncio.Future[Any] = await producer.send_batch(batch, topic, partition=partition)
        if db is not None:  # the batch's metadata names its first record's offset
            future.add_done_callback(functools.partial(self._persisted, last=count - 1))
        return future

    async def delete(self, partition: int, key: bytes) -> Delivery:
        """Delete locally and queue the tombstone (a null value): Faust's recovery deletes
        the key on reading it (RocksDB and memory stores alike), and log compaction
        removes the key from the changelog topic."""
        store = self._store
        db = rocks_partition_db(store, partition)
        if db is not None:
            db.delete(key)
            forget_key_partition(store, key)
        else:
            memory_data(store).pop(key, None)
        table = self.table
        future = await table.app.producer.send(
            table.changelog_topic.get_topic_name(), key, None, partition, None, None
        )
        if db is not None:
            future.add_done_callback(self._persisted)
        return future  # type: ignore[no-any-return]

    def _persisted(self, future: Any, *, last: int = 0) -> None:
        """A changelog record is confirmed. The store's persisted offset is itself a
        RocksDB write, so it is marked once per partition per pass of the event loop
        (a produce response confirms a whole batch of records at once)."""
        if future.cancelled() or future.exception() is not None:
            return
        metadata = future.result()
        where = (metadata.topic, metadata.partition)
        if not self._confirmed:
            asyncio.get_running_loop().call_soon(self._mark_confirmed)
        if metadata.offset + last > self._confirmed.get(where, -1):
            self._confirmed[where] = metadata.offset + last

    def _mark_confirmed(self) -> None:
        confirmed, self._confirmed = self._confirmed, {}
        for (topic, partition), offset in confirmed.items():
            mark_persisted(self._store, topic, partition, offset)

    def scan(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) stored for ``partition``, except reserved keys: ours
        (``\\x00...``) and Faust's own (its RocksDB offset marker ``__faust...``)."""
        db = rocks_partition_db(self._store, partition)
        if db is not None:
            items: Iterator[tuple[Any, Any]] = iter(db.items())
        else:
            items = (
                (key, value)
                for key, value in list(memory_data(self._store).items())
                if partition_of(key, self.partitions) == partition
            )
        for key, value in items:
            if value and not bytes(key).startswith((b"\x00", b"__faust")):
                yield bytes(key), bytes(value)
