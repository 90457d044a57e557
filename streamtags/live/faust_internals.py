"""Every private Faust API streamtags relies on, in one place (faust-streaming 0.15.3).

Nothing else in streamtags touches a Faust name that starts with an
underscore or an attribute of a store's implementation, except the consumer
drain patch (:mod:`streamtags.live.drain`), which overrides
``Consumer._drain_messages`` and is checked against Faust's source by
``tests/unit/test_drain.py``.
``tests/unit/test_faust_internals.py`` checks each of them against the
installed Faust (existence, signature, and the behaviour used here), so an
upgrade that removes or changes one fails there, with the API named,
instead of in a running worker. :data:`PRIVATE_APIS` lists them.

- :func:`rocks_partition_db`, :func:`remember_key_partition`,
  :func:`mark_persisted`: the RocksDB store's ``_db_for_partition``,
  ``_key_index`` and ``set_persisted_offset``, used to write a partition's
  state outside a stream event (:mod:`streamtags.live.table_store`).
- :func:`forget_key_partition`: the same ``_key_index``, for a deleted key.
- :func:`memory_data`: the memory store's ``data`` dict.
- :func:`committed_offset`: the group's committed offset of a partition, asked
  through the consumer thread's aiokafka consumer
  (``AIOKafkaConsumerThread._ensure_consumer`` and ``call_thread``): where the
  partition's new owner starts reading (:mod:`streamtags.live.app`).
- :func:`tune_fetches`: the fetch limits aiokafka's consumer keeps until it starts
  (``AIOKafkaConsumer._fetch_min_bytes`` and ``_fetch_max_wait_ms``), which Faust
  creates with fixed values in ``AIOKafkaConsumerThread._create_worker_consumer``
  (overridden: :mod:`streamtags.live.drain`).
- :func:`producer_client`, :func:`kafka_producer`: the aiokafka producer
  behind the app's producer (``faust.transport.drivers.aiokafka.Producer._producer``):
  the Kafka health probe asks its client for metadata, and the state store
  sends changelog records through it in whole batches.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from faust.types import TP

__all__ = [
    "PRIVATE_APIS",
    "committed_offset",
    "forget_key_partition",
    "kafka_producer",
    "mark_persisted",
    "memory_data",
    "producer_client",
    "remember_key_partition",
    "rocks_partition_db",
    "tune_fetches",
]

PRIVATE_APIS: tuple[str, ...] = (
    "faust.stores.rocksdb.Store._db_for_partition(partition)",
    "faust.stores.rocksdb.Store._key_index (key -> partition)",
    "faust.stores.rocksdb.Store.set_persisted_offset(tp, offset)",
    "faust.stores.memory.Store.data (dict)",
    "faust.transport.drivers.aiokafka.Producer._producer (AIOKafkaProducer | None)",
    "faust.transport.consumer.Consumer._drain_messages (overridden: streamtags.live.drain)",
    "faust.transport.drivers.aiokafka.AIOKafkaConsumerThread._create_worker_consumer(transport)"
    " (overridden: streamtags.live.drain)",
    "aiokafka.AIOKafkaConsumer._fetch_min_bytes, _fetch_max_wait_ms (read at start)",
    "faust.transport.drivers.aiokafka.AIOKafkaConsumerThread._ensure_consumer()"
    " (with call_thread: committed_offset)",
)
"""The private Faust APIs used here, as the test names them."""


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


def kafka_producer(app: Any) -> Any:
    """The app's running aiokafka producer (for ``create_batch``/``send_batch``)."""
    producer = app.producer._producer
    if producer is None:
        raise RuntimeError("the app's producer has not started")
    return producer


def producer_client(app: Any) -> Any | None:
    """The aiokafka client of the app's running producer, or None before it started."""
    producer = getattr(app.producer, "_producer", None)
    return producer.client if producer is not None else None


def tune_fetches(consumer: Any, *, min_bytes: int, max_wait_ms: int) -> None:
    """Make a not yet started aiokafka consumer ask the broker for at least ``min_bytes``
    per fetch, waiting at most ``max_wait_ms`` for them (its fetcher reads both at start)."""
    if not hasattr(consumer, "_fetch_min_bytes") or not hasattr(consumer, "_fetch_max_wait_ms"):
        raise RuntimeError("aiokafka's consumer no longer keeps its fetch limits")
    consumer._fetch_min_bytes = min_bytes
    consumer._fetch_max_wait_ms = max_wait_ms


async def committed_offset(app: Any, tp: TP) -> int | None:
    """The app's consumer group's committed offset of ``tp`` (None when nothing was
    committed), asked of the broker through the consumer's own thread."""
    thread = app.consumer._thread
    offset = await thread.call_thread(thread._ensure_consumer().committed, tp)
    return None if offset is None else int(offset)
