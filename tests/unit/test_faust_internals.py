"""The private Faust APIs streamtags relies on still exist and behave as it uses them.

Every one of them goes through :mod:`streamtags.live.faust_internals`. When a
Faust upgrade removes or changes one, a test here fails and names the API,
instead of a running worker failing mid-stream.
"""

from __future__ import annotations

import asyncio
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
    take_unacked,
)

#: No broker is contacted: nothing here starts the app's consumer or producer.
BROKER = "kafka://127.0.0.1:9"
#: sha256 (first 16 hex digits) of the faust-streaming 0.15.3 sources that
#: docs/decisions/0004-batching-helper.md compares take_unacked with.
TAKE_EVENTS_SHA = "607d48aead118ba8"
NOACK_TAKE_SHA = "f2cc2dbfc162d200"
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
        ("faust.streams:Stream._enable_passive", ["self", "channel", "*declare"]),
        ("faust.stores.rocksdb:Store._db_for_partition", ["self", "partition"]),
        ("faust.stores.rocksdb:Store.set_persisted_offset", ["self", "tp", "offset"]),
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


def test_stream_processors_is_the_list_add_processor_appends_to() -> None:
    app = faust.App("internals-stream", broker=BROKER)
    stream = app.stream(app.channel())

    def processor(value: Any) -> Any:
        return value

    stream.add_processor(processor)
    processors = getattr(stream, "_processors", None)
    assert isinstance(processors, list) and processors[-1] is processor, (
        f"Faust changed {PRIVATE_APIS[1]}: take_unacked removes its processor from it; {FIX}"
    )


async def test_take_unacked_yields_batches_without_acking_and_empty_ones_when_idle() -> None:
    app = faust.App("internals-take", broker=BROKER, store="memory://")
    batches: list[list[Any]] = []

    @app.agent()
    async def agent(stream: Any) -> None:
        async for events in take_unacked(stream, max_events=100, within_s=0.01):
            batches.append([(event.value, event.message.acked) for event in events])

    async with agent.test_context() as context:
        await asyncio.sleep(0.1)
        idle = len(batches)
        for value in range(5):
            await context.put(value)
        await asyncio.sleep(0.1)
    assert idle >= 3, "take_unacked stopped yielding empty batches on an idle stream"
    taken = [item for batch in batches for item in batch]
    assert taken == [(value, False) for value in range(5)], (
        f"take_unacked must yield every event once, unacked; got {taken}"
    )


def test_rocksdb_store_internals_write_read_and_persist_offsets(tmp_path: Path) -> None:
    state = table(tmp_path, "rocksdb://")
    store = state.data
    assert isinstance(store, resolve("faust.stores.rocksdb:Store"))
    db = rocks_partition_db(store, 1)
    assert db is not None, f"{PRIVATE_APIS[2]} is gone; {FIX}"
    db.put(b"user", b"state")
    assert db.get(b"user") == b"state"
    remember_key_partition(store, b"user", 1)
    key_index = getattr(store, "_key_index", {})
    assert key_index.get(b"user") == 1, f"Faust changed {PRIVATE_APIS[3]}; {FIX}"
    forget_key_partition(store, b"user")
    assert key_index.get(b"user") is None, f"Faust changed {PRIVATE_APIS[3]}; {FIX}"
    changelog = state.changelog_topic.get_topic_name()
    mark_persisted(store, changelog, 1, 42)
    assert store.persisted_offset(TP(changelog, 1)) == 42, f"Faust changed {PRIVATE_APIS[4]}; {FIX}"


def test_memory_store_keeps_its_values_in_a_dict(tmp_path: Path) -> None:
    store = table(tmp_path, "memory://").data
    assert isinstance(store, resolve("faust.stores.memory:Store"))
    assert rocks_partition_db(store, 0) is None
    data = memory_data(store)
    store[b"user"] = b"state"  # Faust's own write path lands in the same dict
    assert isinstance(data, dict) and data.get(b"user") == b"state", (
        f"Faust changed {PRIVATE_APIS[5]}; {FIX}"
    )


async def test_the_producers_aiokafka_client_is_reachable_once_it_exists() -> None:
    app = faust.App("internals-producer", broker=BROKER)
    assert producer_client(app) is None  # not started: no client yet
    producer: Any = app.producer
    producer._producer = producer._new_producer()  # what Producer.on_start does
    found = producer_client(app)
    assert found is producer._producer.client and hasattr(found, "fetch_all_metadata"), (
        f"Faust changed {PRIVATE_APIS[6]}; {FIX}"
    )


def test_the_stream_helpers_take_unacked_is_compared_with_are_unchanged() -> None:
    """take_unacked is take_events without acks plus empty yields; noack_take does not
    yield when idle. If either source changed, re-read both and the decision record."""
    why = "re-compare streamtags.live.faust_internals.take_unacked and docs/decisions/0004"
    take_events = resolve("faust.streams:Stream.take_events")
    noack_take = resolve("faust.streams:Stream.noack_take")
    assert source_sha(take_events) == TAKE_EVENTS_SHA, f"Stream.take_events changed: {why}"
    assert source_sha(noack_take) == NOACK_TAKE_SHA, f"Stream.noack_take changed: {why}"
