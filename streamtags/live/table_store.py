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

from collections.abc import Iterator
from typing import Any

from aiokafka.partitioner import murmur2

from streamtags.live.faust_internals import (
    forget_key_partition,
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

    def _persisted(self, future: Any) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        metadata = future.result()
        mark_persisted(self._store, metadata.topic, metadata.partition, metadata.offset)

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
