"""The private Faust APIs streamtags relies on still exist and behave as it uses them.

Every one of them goes through :mod:`streamtags.live.faust_internals`. When a
Faust upgrade removes or changes one, a test here fails and names the API,
instead of a running worker failing mid-stream.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.types import TP

from streamtags.live.faust_internals import (
    PRIVATE_APIS,
    forget_key_partition,
    mark_persisted,
    memory_data,
    producer_client,
    remember_key_partition,
    rocks_partition_db,
)

#: No broker is contacted: nothing here starts the app's consumer or producer.
BROKER = "kafka://127.0.0.1:9"
FIX = "update streamtags/live/faust_internals.py (and PRIVATE_APIS) to the new Faust"


def parameters(function: Callable[..., Any]) -> list[str]:
    """Parameter names, keyword-only ones marked ``*name``."""
    return [
        f"*{p.name}" if p.kind is inspect.Parameter.KEYWORD_ONLY else p.name
        for p in inspect.signature(function).parameters.values()
    ]


def source_sha(function: Callable[..., Any]) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]


def table(tmp_path: Path, store: str) -> Any:
    app = faust.App(f"internals-{store[:4]}", broker=BROKER, store=store, datadir=str(tmp_path))
    return app.Table("state", key_type=bytes, value_type=bytes, partitions=2)


def resolve(path: str) -> Any:
    """``module.Class.attribute`` imported, or a failure that names it."""
    module_name, _, rest = path.partition(":")
    found: Any = importlib.import_module(module_name)
    for name in rest.split("."):
        if not hasattr(found, name):
            pytest.fail(f"Faust no longer has {module_name}.{rest}: {name} is gone; {FIX}")
        found = getattr(found, name)
    return found


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("faust.stores.rocksdb:Store._db_for_partition", ["self", "partition"]),
        ("faust.stores.rocksdb:Store.set_persisted_offset", ["self", "tp", "offset"]),
        (
            "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._create_worker_consumer",
            ["self", "transport"],
        ),
        ("faust.transport.drivers.aiokafka:Consumer._new_consumer_thread", ["self"]),
        ("faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._ensure_consumer", ["self"]),
        ("aiokafka:AIOKafkaConsumer.committed", ["self", "partition"]),
        # public, but called positionally by TableStore.put and ProducerSender.send
        (
            "faust.transport.drivers.aiokafka:Producer.send",
            [
                "self",
                "topic",
                "key",
                "value",
                "partition",
                "timestamp",
                "headers",
                "*transactional_id",
            ],
        ),
    ],
)
def test_the_methods_streamtags_calls_keep_their_signatures(path: str, expected: list[str]) -> None:
    function = resolve(path)
    assert parameters(function) == expected, (
        f"Faust changed {path}: now {inspect.signature(function)}; {FIX}"
    )


def test_rocksdb_store_internals_write_read_and_persist_offsets(tmp_path: Path) -> None:
    state = table(tmp_path, "rocksdb://")
    store = state.data
    assert isinstance(store, resolve("faust.stores.rocksdb:Store"))
    db = rocks_partition_db(store, 1)
    assert db is not None, f"{PRIVATE_APIS[0]} is gone; {FIX}"
    db.put(b"user", b"state")
    assert db.get(b"user") == b"state"
    remember_key_partition(store, b"user", 1)
    key_index = getattr(store, "_key_index", {})
    assert key_index.get(b"user") == 1, f"Faust changed {PRIVATE_APIS[1]}; {FIX}"
    forget_key_partition(store, b"user")
    assert key_index.get(b"user") is None, f"Faust changed {PRIVATE_APIS[1]}; {FIX}"
    changelog = state.changelog_topic.get_topic_name()
    mark_persisted(store, changelog, 1, 42)
    assert store.persisted_offset(TP(changelog, 1)) == 42, f"Faust changed {PRIVATE_APIS[2]}; {FIX}"


def test_memory_store_keeps_its_values_in_a_dict(tmp_path: Path) -> None:
    store = table(tmp_path, "memory://").data
    assert isinstance(store, resolve("faust.stores.memory:Store"))
    assert rocks_partition_db(store, 0) is None
    data = memory_data(store)
    store[b"user"] = b"state"  # Faust's own write path lands in the same dict
    assert isinstance(data, dict) and data.get(b"user") == b"state", (
        f"Faust changed {PRIVATE_APIS[3]}; {FIX}"
    )


async def test_the_producers_aiokafka_client_is_reachable_once_it_exists() -> None:
    app = faust.App("internals-producer", broker=BROKER)
    assert producer_client(app) is None  # not started: no client yet
    producer: Any = app.producer
    producer._producer = producer._new_producer()  # what Producer.on_start does
    found = producer_client(app)
    assert found is producer._producer.client and hasattr(found, "fetch_all_metadata"), (
        f"Faust changed {PRIVATE_APIS[4]}; {FIX}"
    )
