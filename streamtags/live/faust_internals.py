"""Every private Faust API streamtags relies on, in one place (faust-streaming 0.15.3).

Nothing else in streamtags touches a Faust name that starts with an
underscore or an attribute of a store's implementation.
``tests/unit/test_faust_internals.py`` checks each of them against the
installed Faust (existence, signature, and the behaviour used here), so an
upgrade that removes or changes one fails there, with the API named,
instead of in a running worker. :data:`PRIVATE_APIS` lists them.

- :func:`take_unacked`: batching without acks, copied from
  ``Stream.take_events`` (``Stream._enable_passive``, ``Stream._processors``);
  why not ``Stream.noack_take``: ``docs/decisions/0004-batching-helper.md``.
- :func:`rocks_partition_db`, :func:`remember_key_partition`,
  :func:`mark_persisted`: the RocksDB store's ``_db_for_partition``,
  ``_key_index`` and ``set_persisted_offset``, used to write a partition's
  state outside a stream event (:mod:`streamtags.live.table_store`).
- :func:`forget_key_partition`: the same ``_key_index``, for a deleted key.
- :func:`memory_data`: the memory store's ``data`` dict.
- :func:`producer_client`: the aiokafka client behind the app's producer
  (``faust.transport.drivers.aiokafka.Producer._producer``), which the
  Kafka health probe asks for metadata.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

from faust.types import TP
from mode.utils.futures import notify

__all__ = [
    "PRIVATE_APIS",
    "forget_key_partition",
    "mark_persisted",
    "memory_data",
    "producer_client",
    "remember_key_partition",
    "rocks_partition_db",
    "take_unacked",
]

PRIVATE_APIS: tuple[str, ...] = (
    "faust.streams.Stream._enable_passive(channel, *, declare=False)",
    "faust.streams.Stream._processors (list of processors)",
    "faust.stores.rocksdb.Store._db_for_partition(partition)",
    "faust.stores.rocksdb.Store._key_index (key -> partition)",
    "faust.stores.rocksdb.Store.set_persisted_offset(tp, offset)",
    "faust.stores.memory.Store.data (dict)",
    "faust.transport.drivers.aiokafka.Producer._producer (AIOKafkaProducer | None)",
)
"""The private Faust APIs used here, as the test names them."""


async def take_unacked(stream: Any, max_events: int, within_s: float) -> AsyncIterator[list[Any]]:
    """Batches of a Faust stream's events, which the caller acks.

    Yields a list of at most ``max_events`` events at least every
    ``within_s`` seconds: an empty list when nothing arrived, so the caller
    can still flush and ack on time. Faust's ``Stream.take_events`` with two
    changes: no acking, and the yield when empty.
    """
    events: list[Any] = []
    full = asyncio.Event()
    consumed = asyncio.Event()
    consuming: asyncio.Future[None] | None = None

    async def add(value: Any) -> Any:
        nonlocal consuming
        if consuming is not None:
            try:
                await consuming
            finally:
                consuming = None
        events.append(stream.current_event)
        if len(events) >= max_events:
            full.set()
            consumed.clear()
            await stream.wait(consumed)
        return value

    stream.enable_acks = False
    stream.add_processor(add)
    stream._enable_passive(stream.channel.__aiter__())
    try:
        while not stream.should_stop:
            await stream.wait_for_stopped(full, timeout=within_s)
            consuming = stream.loop.create_future()
            try:
                yield list(events)
            finally:
                events.clear()
                notify(consuming)
                full.clear()
                consumed.set()
    finally:
        stream._processors.remove(add)


def rocks_partition_db(store: Any, partition: int) -> Any | None:
    """The RocksDB database of ``partition`` when ``store`` is a RocksDB store, else None."""
    if hasattr(store, "_db_for_partition"):
        return store._db_for_partition(partition)
    return None


def remember_key_partition(store: Any, key: bytes, partition: int) -> None:
    """Tell a RocksDB store which partition holds ``key`` (as its own writes do)."""
    store._key_index[key] = partition


def forget_key_partition(store: Any, key: bytes) -> None:
    """Tell a RocksDB store that ``key`` was deleted (its partition index forgets it)."""
    store._key_index.pop(key, None)


def mark_persisted(store: Any, topic: str, partition: int, offset: int) -> None:
    """Record in a RocksDB store how far it holds the changelog, so a restart
    replays only the tail (what Faust's own changelog callback does)."""
    store.set_persisted_offset(TP(topic, partition), offset)


def memory_data(store: Any) -> MutableMapping[bytes, bytes]:
    """The dict behind a memory store (all partitions together)."""
    data: MutableMapping[bytes, bytes] = store.data
    return data


def producer_client(app: Any) -> Any | None:
    """The aiokafka client of the app's running producer, or None before it started."""
    producer = getattr(app.producer, "_producer", None)
    return producer.client if producer is not None else None
