"""Bounded state on twins: idle users are deleted with a tombstone, rebuilds yield to the loop.

Event time throughout; the twins' wall clock is moved by the test.
"""

from __future__ import annotations

import asyncio

import pytest

import streamtags.live.tagger as tagger_module
from streamtags.engine.deadlines import MARKER_RETENTION_MS
from streamtags.engine.partition import Engine
from streamtags.engine.state import StateOutline, UserState
from tests.unit.test_live_tagger import (
    LATENESS_MS,
    RULES,
    STREAMS,
    T0,
    World,
    cart,
    ev,
    fire_carts,
    whale,
)

DAY_MS = 86_400_000
HORIZON_MS = Engine(RULES, lateness_ms=LATENESS_MS).idle_horizon_ms


def page_view(user: str, offset: int = 1) -> object:
    return ev("browse", offset, 0, user, action="page_view")


async def settled(world: World, users: list[str], label: str = "batch-1") -> None:
    """Feed one quiet event per user, apply it and flush (the acks run)."""
    await world.feed(
        [ev("browse", i + 1, 0, u, action="page_view") for i, u in enumerate(users)], label
    )
    await world.release()
    await world.tagger.flush()


def later(world: World, ms: int) -> None:
    world.clock.set_ms(int(world.clock() * 1000) + ms)


def users_in(world: World) -> set[str]:
    return {key.decode() for key, _ in world.store.scan(0)}


def test_the_idle_horizon_covers_every_window_marker_and_lifetime_of_the_rules() -> None:
    """The catalogue's longest window is 180 days (churn_risk, brand_loyal)."""
    assert HORIZON_MS >= 180 * DAY_MS
    assert HORIZON_MS >= MARKER_RETENTION_MS + LATENESS_MS
    assert max(max(rule.ttl_ms, rule.cooldown_ms) for rule in RULES.rules) <= HORIZON_MS


async def test_an_idle_user_is_deleted_locally_and_tombstoned_in_the_changelog() -> None:
    world = World()
    await world.assign([0])
    await settled(world, ["ann", "bob"])
    assert await world.tagger.sweep() == 0  # nothing is idle yet
    later(world, HORIZON_MS + LATENESS_MS + 1)
    await world.feed([ev("browse", 9, HORIZON_MS, "bob", action="page_view")], "bob-again")
    await world.release()
    await world.tagger.flush()
    assert await world.tagger.sweep() == 1
    assert users_in(world) == {"bob"}
    assert world.store.changelog[-1] == (0, b"ann", None)  # the tombstone
    assert World(store=world.store.restarted()).durable_users() == {"bob"}
    assert world.metric("streamtags_idle_users_deleted_total") == 1


async def test_users_with_a_live_tag_an_armed_deadline_or_an_opt_out_are_kept() -> None:
    world = World()
    await world.assign([0])
    opt_out = ev("accounts", 1, 0, "cat", action="consent_changed", personalization=False)
    await world.feed([whale("ann"), cart("bob"), opt_out], "batch-1")
    await world.release()
    await world.tagger.flush()
    await world.tagger.sweep()
    later(world, HORIZON_MS + LATENESS_MS + 1)
    # No tick ran: ann's whale tag and bob's cart deadline are still in their states.
    assert await world.tagger.sweep() == 0
    assert users_in(world) == {"ann", "bob", "cat"}
    await world.tagger.tick()  # the tag lapses and the cart fires, then its tag lapses too
    await world.tagger.flush()
    await world.tagger.sweep()
    later(world, HORIZON_MS + LATENESS_MS + 1)
    assert await world.tagger.sweep() == 2
    assert users_in(world) == {"cat"}, "an opt-out must never be forgotten"


async def test_a_user_whose_events_are_not_yet_committed_is_kept() -> None:
    """Deleting a user whose last event could still be redelivered would count it anew."""
    world = World()
    await world.assign([0])
    await settled(world, ["ann"])
    later(world, HORIZON_MS + LATENESS_MS + 1)
    assert await world.tagger.sweep() == 0  # acked, but only since the previous sweep
    assert await world.tagger.sweep() == 1


async def test_a_user_who_comes_back_after_deletion_starts_afresh_after_the_tombstone() -> None:
    world = World()
    await world.assign([0])
    await settled(world, ["ann"])
    await world.tagger.sweep()
    later(world, HORIZON_MS + LATENESS_MS + 1)
    assert await world.tagger.sweep() == 1
    back = ev("orders", 7, HORIZON_MS + LATENESS_MS, "ann", status="paid", amount=2500)
    await world.feed([back], "back")
    await world.release()
    await world.tagger.flush()
    ann = [value is None for _, key, value in world.store.changelog if key == b"ann"]
    assert ann[-2:] == [True, False]  # the tombstone, then the new state
    state = UserState.from_bytes(world.store.durable(0)[b"ann"], world.tagger.engine.features)
    assert state.offsets == {"orders": 7}  # nothing of before the deletion
    assert "whale" in {c["tag"] for c in world.tags.values()}


async def test_a_tombstone_the_broker_did_not_confirm_is_not_counted() -> None:
    world = World()
    await world.assign([0])
    await settled(world, ["ann"])
    await world.tagger.sweep()
    later(world, HORIZON_MS + LATENESS_MS + 1)
    world.store.fault.down()
    assert await world.tagger.sweep() == 0
    assert world.tagger.health.degraded() == ["kafka"]
    world.store.fault.up()
    assert await world.tagger.sweep() == 0, "no deletions while Kafka is reported down"


def test_a_state_outline_read_from_bytes_agrees_with_the_state_in_memory() -> None:
    engine = Engine(RULES, lateness_ms=LATENESS_MS)
    part = engine.partition()
    events = [whale("ann"), cart("bob"), ev("browse", 2, 5, "cat", action="page_view")]
    part.process(events, T0 + 20_000)
    part.process([ev("logins", 3, 30_000, "cat", ip="10.0.0.1")], T0 + 20_000)  # waits
    for user in ("ann", "bob", "cat"):
        data = part.dump(user)
        assert StateOutline.read(data) == StateOutline.of(
            UserState.from_bytes(data, engine.features)
        )
        assert StateOutline.read(data).busy, user  # a tag, a deadline, a waiting event


async def test_a_rebuild_yields_to_the_event_loop_between_slices_and_keeps_deadlines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tagger_module, "REBUILD_SLICE_S", 0.0)  # yield as often as it may
    source = World()
    await source.assign([0])
    await source.feed([cart("bob")], "batch-1")
    await source.release()
    await source.tagger.flush()
    await settled(source, ["quiet"])
    stored = source.store.local[0]
    world = World()
    world.store.local[0] = {f"user-{i}".encode(): stored[b"quiet"] for i in range(10_000)}
    for key in (b"bob", b"\x00clock:0"):  # bob's deadline, and the partition's clock
        world.store.local[0][key] = stored[key]
    turns = 0

    async def other_task() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    running = asyncio.create_task(other_task())
    await world.tagger.assign([0])
    running.cancel()
    assert turns >= 100, f"the loop ran {turns} times while 10,001 users were read"
    world.tagger.expect_backlog({(0, s): (0, 0) for s in STREAMS})
    await fire_carts(world)
    assert [t["user_id"] for t in world.triggers.values()] == ["bob"]
