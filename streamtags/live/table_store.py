"""Per-partition access to the Faust table that holds user states as raw bytes.

Faust writes a table value, and its changelog record, only from inside a
stream event and to that event's partition. streamtags coalesces writes
instead (one record per dirty user per flush, also from the deadline
timer), so it writes the store and the changelog itself, to the partition
the user belongs to, which is the partition of the user's input events
(co-partitioning). Reads never depend on a "current event" either.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiokafka.partitioner import murmur2
from faust.types import TP

__all__ = ["TableStore", "partition_of"]


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (murmur2, as producers use)."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


class TableStore:
    """Raw-bytes get/put/scan on a Faust table, by partition."""

    def __init__(self, table: Any, *, partitions: int) -> None:
        self.table = table
        self.partitions = partitions

    @property
    def _store(self) -> Any:
        return self.table.data

    def _rocks(self, partition: int) -> Any | None:
        store = self._store
        if hasattr(store, "_db_for_partition"):
            return store._db_for_partition(partition)
        return None

    def get(self, partition: int, key: bytes) -> bytes | None:
        """The stored bytes of ``key`` in ``partition``, if any."""
        db = self._rocks(partition)
        if db is not None:
            value = db.get(key)
            return bytes(value) if value is not None else None
        value = self._store.data.get(key)
        return bytes(value) if value is not None else None

    async def put(self, partition: int, key: bytes, value: bytes) -> Any:
        """Store locally and queue the changelog record; returns its delivery future.

        Goes straight to the app's Kafka producer: Faust's per-record machinery
        (``Table.send_changelog``'s buffer, or ``Topic.send``) cost ~100 us a
        record and made changelog writes the worker's bottleneck. Faust still
        flushes this producer before it commits offsets.
        """
        db = self._rocks(partition)
        if db is not None:
            db.put(key, value)
            self._store._key_index[key] = partition
        else:
            self._store.data[key] = value
        table = self.table
        future = await table.app.producer.send(
            table.changelog_topic.get_topic_name(), key, value, partition, None, None
        )
        if db is not None:
            future.add_done_callback(self._persisted)
        return future

    def _persisted(self, future: Any) -> None:
        # What Faust's own changelog callback does: remember how far RocksDB holds
        # the changelog, so a restart replays only the tail.
        if future.cancelled() or future.exception() is not None:
            return
        metadata = future.result()
        self._store.set_persisted_offset(TP(metadata.topic, metadata.partition), metadata.offset)

    def scan(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) stored for ``partition``, except reserved keys: ours
        (``\\x00...``) and Faust's own (its RocksDB offset marker ``__faust...``)."""
        db = self._rocks(partition)
        if db is not None:
            items: Iterator[tuple[Any, Any]] = iter(db.items())
        else:
            items = (
                (key, value)
                for key, value in list(self._store.data.items())
                if partition_of(key, self.partitions) == partition
            )
        for key, value in items:
            if value and not bytes(key).startswith((b"\x00", b"__faust")):
                yield bytes(key), bytes(value)
