"""Record sizes and the state cache's memory budget, on twins.

A record over the producer's limit is refused alone, dead-lettered as ``too_large``;
the other users' writes, their outputs and the acks go on. Cached states stay within
their memory budget, and an evicted user reads back what it had.
"""

from __future__ import annotations

import base64
from typing import Any

from streamtags.engine.state import UserState
from streamtags.live.cache import MEMORY_PER_STORED_BYTE, CacheBudget
from tests.unit.test_live_tagger import T0, World, ev, whale

#: Small enough that a few waiting 1 KiB searches make one user's state too large.
SMALL_LIMIT = 3000


def search(user: str, offset: int, query: str = "gift card") -> Any:
    return ev("browse", offset, 0, user, action="search", query=query, results_count=3)


def letters(world: World) -> list[dict[str, Any]]:
    return list(world.dead.values())


async def test_a_flush_with_one_oversized_state_writes_every_other_users_state_and_acks() -> None:
    world = World(options={"max_record_bytes": SMALL_LIMIT})
    await world.assign([0])
    big = [search("big", offset, "q" * 1000) for offset in range(1, 4)]  # waiting: stored
    others = [search(f"user-{i}", 10 + i) for i in range(5)]
    await world.feed([*big, *others], "batch-1")
    assert await world.tagger.flush() == 5
    assert world.acked == ["batch-1"]
    assert world.durable_users() == {f"user-{i}" for i in range(5)}
    await world.tagger.flush()  # the dead letter queued by the first flush lands
    [letter] = letters(world)
    assert letter["error_kind"] == "too_large" and letter["offset"] == -1
    assert base64.b64decode(letter["key_b64"]) == b"big"
    assert "'big'" in letter["reason"] and f"{SMALL_LIMIT}-byte" in letter["reason"]
    assert letter["value_bytes"] > SMALL_LIMIT
    assert world.metric("streamtags_oversized_records_total", kind="state") == 1


async def test_an_oversized_tag_change_is_dead_lettered_instead_of_sent() -> None:
    """A 200-character user id makes the whale change ~1 KB; ann's is ~600 bytes."""
    long_id = "x" * 200
    world = World(options={"max_record_bytes": 1000})
    await world.assign([0])
    await world.feed([whale(long_id), whale("ann", offset=2)], "batch-1")
    await world.release()
    await world.tagger.flush()
    await world.tagger.flush()
    assert [change["user_id"] for change in world.tags.values()] == ["ann"]
    assert set(world.sink.tags) == {"ann"}  # Redis follows what was sent
    [letter] = letters(world)
    assert letter["error_kind"] == "too_large" and letter["topic"] == "tags"
    assert world.acked == ["batch-1"]
    assert world.durable_users() == {long_id, "ann"}
    assert world.metric("streamtags_oversized_records_total", kind="tag_change") == 1


def test_the_cache_budget_evicts_clean_users_least_recently_used_first() -> None:
    budget = CacheBudget(max_bytes=10 * MEMORY_PER_STORED_BYTE * 100)
    for i in range(12):
        budget.note(0, f"u{i}", 100)
    budget.note(0, "u0", 100)  # read again: now the most recent
    evicted = budget.evictions({0: {"u1"}})
    assert evicted == {0: ["u2", "u3", "u4"]}  # u1 is dirty, u0 was used again
    budget.forget(0, evicted[0])
    assert budget.total <= budget.max_bytes
    assert budget.evictions({}) == {}


def product_view(user: str, offset: int) -> Any:
    return ev("browse", offset, 0, user, action="product_view", sku="gc-50")


async def test_cached_states_stay_within_the_budget_and_evicted_users_read_back() -> None:
    world = World()
    await world.assign([0])
    await world.feed([product_view(f"user-{i}", i + 1) for i in range(100)], "batch-1")
    await world.release()
    await world.tagger.flush()
    part = world.tagger.partitions[0]
    assert len(part.states) == 100  # within the default budget
    stored = max(len(value) for value in world.store.local[0].values())
    world.tagger.cache.max_bytes = 20 * MEMORY_PER_STORED_BYTE * stored
    await world.tagger.flush()
    assert len(part.states) <= 20
    assert world.tagger.cache.total <= world.tagger.cache.max_bytes
    assert world.metric("streamtags_state_cache_evictions_total") >= 80
    evicted = next(f"user-{i}" for i in range(100) if f"user-{i}" not in part.states)
    now = int(world.clock() * 1000) - T0  # after the time already settled
    await world.feed([ev("browse", 500, now, evicted, action="product_view", sku="gc-50")], "b2")
    await world.release()
    await world.tagger.flush()
    state = UserState.from_bytes(
        world.store.local[0][evicted.encode()], world.tagger.engine.features
    )
    assert state.offsets == {"browse": 500}
    views = [data for data in state.features.values() if len(data) == 2]
    assert views, f"the view before the eviction is not counted: {state.features}"
