"""The live tagger on in-memory twins: flush-and-ack order, outages, the trigger guard, revokes.

No broker and no Redis: every collaborator is a twin from
:mod:`streamtags.live.twins`, told when to be slow, held, down or timing out.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamtags.contracts.codec import decode_event
from streamtags.contracts.ingest import Decoded
from streamtags.engine.partition import Engine
from streamtags.live.metrics import Metrics
from streamtags.live.tagger import Ack, LiveTagger, Senders
from streamtags.live.twins import (
    MemoryStore,
    MemoryTagSink,
    MemoryTopic,
    MemoryTriggerLedger,
)
from streamtags.rulebook.loader import load_rules

ROOT = Path(__file__).resolve().parents[2]
RULES = load_rules(ROOT / "rules")
T0 = 1_795_341_600_000  # event time, epoch ms
MINUTE = 60_000
LATENESS_MS = 10_000
COMMIT_INTERVAL_S = 1.0
STREAMS = ("orders", "browse", "logins", "accounts")


class Clock:
    """A wall clock the test moves (epoch seconds)."""

    def __init__(self, now_ms: int) -> None:
        self.now_s = now_ms / 1000

    def __call__(self) -> float:
        return self.now_s

    def set_ms(self, now_ms: int) -> None:
        self.now_s = now_ms / 1000


@dataclass
class World:
    """A tagger wired to twins, and what it did."""

    store: MemoryStore = field(default_factory=MemoryStore)
    sink: MemoryTagSink = field(default_factory=MemoryTagSink)
    ledger: MemoryTriggerLedger = field(default_factory=MemoryTriggerLedger)
    tags: MemoryTopic = field(default_factory=lambda: MemoryTopic("tags"))
    risk: MemoryTopic = field(default_factory=lambda: MemoryTopic("risk-tags"))
    triggers: MemoryTopic = field(default_factory=lambda: MemoryTopic("coupon-triggers"))
    dead: MemoryTopic = field(default_factory=lambda: MemoryTopic("dead-letter"))
    clock: Clock = field(default_factory=lambda: Clock(T0))
    metrics: Metrics = field(default_factory=Metrics)
    acked: list[str] = field(default_factory=list)
    #: further LiveTagger keyword arguments (limits, budgets)
    options: dict[str, Any] = field(default_factory=dict)
    tagger: LiveTagger = field(init=False)

    def __post_init__(self) -> None:
        self.tagger = LiveTagger(
            Engine(RULES, lateness_ms=LATENESS_MS),
            self.store,
            senders=Senders(
                tags=self.tags,
                risk_tags=self.risk,
                coupon_triggers=self.triggers,
                dead_letter=self.dead,
            ),
            sink=self.sink,
            guard=self.ledger,
            metrics=self.metrics,
            commit_interval_s=COMMIT_INTERVAL_S,
            clock=self.clock,
            topic_of_stream={s: f"in.{s}" for s in STREAMS},
            **self.options,
        )

    def ack(self, label: str) -> Ack:
        """An ack that records ``label`` when it runs."""

        async def ack() -> None:
            self.acked.append(label)

        return ack

    async def feed(self, events: list[Decoded], label: str, partition: int = 0) -> None:
        """What the intake does with a batch: process, then settle its acks."""
        receipt = await self.tagger.process(events, acks={partition: self.ack(label)})
        await self.tagger.settle(receipt)

    async def assign(self, numbers: list[int]) -> None:
        """Own ``numbers``, with no backlog to wait for (nothing is behind)."""
        await self.tagger.assign(numbers)
        self.tagger.expect_backlog({(n, s): (0, 0) for n in numbers for s in STREAMS})

    async def release(self) -> None:
        """Let the wall clock pass the lateness and tick: waiting events are applied."""
        self.clock.set_ms(int(self.clock() * 1000) + LATENESS_MS + 1)
        await self.tagger.tick()

    def durable_users(self, partition: int = 0) -> set[str]:
        """Users whose state the broker confirmed on ``partition``'s changelog."""
        durable = self.store.durable(partition)
        return {key.decode() for key in durable if not key.startswith(b"\x00")}

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


def ev(
    stream: str, offset: int, at_ms: int, user: str = "u1", partition: int = 0, **fields: Any
) -> Decoded:
    """A valid event of ``stream`` at event time T0 + ``at_ms``."""
    body = {"event_id": f"{stream}-{user}-{offset}", "user_id": user, "ts": T0 + at_ms, **fields}
    if stream == "orders":
        body.setdefault("order_id", f"o{offset}")
        body.setdefault("amount", 10)
    if stream == "logins":
        body.setdefault("outcome", "success")
    return Decoded(partition, stream, offset, decode_event(stream, orjson.dumps(body)))


def whale(user: str, offset: int = 1, partition: int = 0) -> Decoded:
    """A paid order big enough for the ``whale`` tag: one tag change at once."""
    return ev("orders", offset, 0, user, partition, status="paid", amount=2500)


def cart(user: str, offset: int = 1, partition: int = 0) -> Decoded:
    """An add-to-cart whose coupon trigger fires 15 minutes (event time) later."""
    return ev(
        "browse",
        offset,
        0,
        user,
        partition,
        action="add_to_cart",
        cart_id=f"cart-{user}",
        sku="gc-50",
        price=50,
    )


async def spin(rounds: int = 50) -> None:
    """Let every runnable task run until it blocks."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def fire_carts(world: World) -> None:
    """Move the wall clock past the cart deadline and the lateness, then tick."""
    world.clock.set_ms(T0 + 16 * MINUTE)
    await world.tagger.tick()


# -- flush and ack ---------------------------------------------------------------


async def test_events_are_acked_only_once_the_changelog_confirms_their_state() -> None:
    world = World()
    await world.assign([0])
    world.store.fault.slow(0.05)
    await world.feed([whale("ann")], "batch-1")
    flushing = asyncio.create_task(world.tagger.flush())
    await asyncio.sleep(0.02)
    assert world.acked == [] and world.durable_users() == set()
    assert await flushing == 1
    assert world.acked == ["batch-1"]
    assert world.durable_users() == {"ann"}


async def test_a_flush_waits_for_another_tasks_flush_before_acking() -> None:
    """Issue 9 item 2: a timer flush took the dirty users of a batch that registered
    its acks afterwards; the agent's flush must not ack them before those writes land."""
    world = World()
    await world.assign([0])
    world.store.fault.hold()
    world.sink.fault.hold()  # the batch stops in the middle: state changed, acks not yet in
    batch = asyncio.create_task(world.feed([whale("ann")], "batch-1"))
    await spin()
    timer_flush = asyncio.create_task(world.tagger.flush())  # takes ann, waits for the broker
    await spin()
    world.sink.fault.release()
    await batch  # its acks are registered now; ann's state is still in flight
    agent_flush = asyncio.create_task(world.tagger.flush())
    await spin()
    assert world.acked == [], "acked before the changelog confirmed the state"
    world.store.fault.release()
    await asyncio.gather(timer_flush, agent_flush)
    assert world.acked == ["batch-1"]
    assert world.durable_users() == {"ann"}


async def test_batches_go_on_while_a_background_flush_waits_for_the_broker() -> None:
    """The agent starts a flush and goes on tagging; the flush writes and acks only what
    came before it, the later batch waits for the next flush."""
    world = World()
    await world.assign([0])
    await world.feed([whale("ann")], "batch-1")
    world.store.fault.hold()
    world.tagger.flush_in_background()
    await spin()
    async with world.tagger.batch():  # not held up by the flush waiting for the broker
        await asyncio.wait_for(world.feed([whale("bob")], "batch-2"), timeout=1)
    world.tagger.flush_in_background()  # one is running: no second one
    world.store.fault.release()
    await spin()
    assert world.acked == ["batch-1"]
    assert world.durable_users() == {"ann"}
    assert await world.tagger.flush() == 1
    assert world.acked == ["batch-1", "batch-2"]


async def test_a_flush_snapshots_between_batches_never_inside_one() -> None:
    """A state written ahead of its batch's outputs could outlive them in a crash (the
    redelivered event is then a duplicate): the flush waits for the batch (here a tick
    that applies a waiting whale) to finish."""
    world = World()
    await world.assign([0])
    await world.feed([whale("ann")], "batch-1")  # waits in ann's reorder buffer
    world.clock.set_ms(T0 + LATENESS_MS + 1)
    world.sink.fault.hold()  # the tick stops in the middle: ann tagged, Redis not written
    ticking = asyncio.create_task(world.tagger.tick())
    await spin()
    flushing = asyncio.create_task(world.tagger.flush())
    await spin()
    assert world.store.puts == 0, "the flush took a snapshot in the middle of a tick"
    assert world.metric("streamtags_flush_pause_seconds_count") == 0
    world.sink.fault.release()
    await ticking
    assert await flushing == 1
    assert world.acked == ["batch-1"]
    assert [change["tag"] for change in world.tags.values()] == ["whale"]
    assert world.metric("streamtags_flush_pause_seconds_count") == 1  # its pause, timed


async def test_a_flush_writes_each_state_as_its_batches_left_it() -> None:
    """A flush's pause between two batches does not grow with the users it writes: a user
    is dumped once a batch goes by without changing it, and the flush takes that."""
    world = World()
    await world.assign([0])
    await world.feed([whale("ann")], "batch-1")  # waits in ann's reorder buffer
    await world.release()  # the tick applies it: ann changed again, not dumped yet
    assert "ann" not in world.tagger._dumped.get(0, {})
    await world.feed([whale("bob", offset=2)], "batch-2")  # ann settled: dumped now
    settled = world.tagger._dumped[0]["ann"]
    assert await world.tagger.flush() == 2  # bob's state dumped by the flush
    assert world.store.durable(0)[b"ann"] == settled
    assert world.tagger._dumped == {}


async def test_a_stream_with_unread_events_does_not_follow_the_wall_clock() -> None:
    """Under load the consumer knows of orders not handled yet: the orders stream's time
    stays at its highest read event instead of running ahead of them with the clock."""
    ends = {"orders": 2}  # offsets 0 and 1; only 0 is read
    world = World(options={"partition_end": lambda number, stream: ends.get(stream, 0)})
    await world.assign([0])
    await world.feed([ev("orders", 0, -5_000, status="created")], "batch-1")  # read 5 s late
    world.tagger.note_read([(0, "orders", 0)])  # what the intake tells it
    part = world.tagger.partitions[0]
    world.clock.set_ms(T0 + 3_000)
    await world.tagger.tick()
    assert part.watermark(T0 + 3_000) == T0 - 5_000 - LATENESS_MS  # behind: its own time
    ends["orders"] = 1  # nothing unread any more
    await world.tagger.tick()
    assert part.watermark(T0 + 3_000) == T0 + 3_000 - LATENESS_MS  # idle: the wall clock


async def test_a_stream_that_read_everything_follows_the_wall_clock_from_its_batch_on() -> None:
    """A sparse stream's last event was read late: once nothing more is unread, the stream
    stops holding the partition at that event's time right after the batch, not from the
    next tick (which used to bound every tag's latency)."""
    ends = {"orders": 1}  # offset 0 is all there is
    world = World(options={"partition_end": lambda number, stream: ends.get(stream, 0)})
    await world.assign([0])
    world.tagger.note_read([(0, "orders", 0)])  # what the intake tells it, then the batch
    await world.feed([ev("orders", 0, -5_000, status="created")], "batch-1")  # read 5 s late
    part = world.tagger.partitions[0]
    assert part.watermark(T0) == T0 - LATENESS_MS  # no tick ran: the wall clock already


async def test_a_changelog_write_that_fails_keeps_its_events_unacked_until_a_retry_lands() -> None:
    world = World()
    await world.assign([0])
    await world.feed([whale("ann")], "batch-1")
    world.store.fault.down()
    assert await world.tagger.flush() == 0
    assert world.acked == [] and world.durable_users() == set()
    assert world.metric("streamtags_flush_failures_total") == 1
    world.store.fault.up()
    assert await world.tagger.flush() == 1
    assert world.acked == ["batch-1"]
    assert world.durable_users() == {"ann"}


async def test_a_lost_tag_change_is_sent_again_before_its_events_are_acked() -> None:
    world = World()
    await world.assign([0])
    world.tags.fault.down()
    await world.feed([whale("ann")], "batch-1")
    await world.release()
    await world.tagger.flush()
    assert world.acked == [] and world.tags.records == []
    world.tags.fault.up()
    await world.tagger.flush()
    assert world.acked == ["batch-1"]
    assert [change["tag"] for change in world.tags.values()] == ["whale"]


async def test_dead_letters_land_before_the_events_behind_them_are_acked() -> None:
    world = World()
    await world.assign([0])
    world.dead.fault.hold()
    receipt = await world.tagger.process([], acks={0: world.ack("rejects")})
    await world.tagger.settle(receipt, dead_letters=[(b"k", b"{}")])
    flushing = asyncio.create_task(world.tagger.flush())
    await spin()
    assert world.acked == []
    world.dead.fault.release()
    await flushing
    assert world.acked == ["rejects"] and world.dead.records == [(b"k", b"{}")]


async def test_a_flush_is_due_only_with_work_waiting_and_the_commit_interval_past() -> None:
    world = World()
    await world.assign([0])
    world.clock.set_ms(T0 + 5_000)
    assert not world.tagger.flush_due()  # nothing waiting
    await world.feed([whale("ann")], "batch-1")
    assert world.tagger.flush_due()
    await world.tagger.flush()
    assert not world.tagger.flush_due()
    await world.feed([whale("bob")], "batch-2")
    assert not world.tagger.flush_due()  # the interval has not passed
    world.clock.set_ms(T0 + 5_000 + int(COMMIT_INTERVAL_S * 1000))
    assert world.tagger.flush_due()


# -- the tag sink (Redis) ----------------------------------------------------------


@pytest.mark.parametrize("outage", ["down", "timeout"])
async def test_a_sink_outage_keeps_tagging_and_the_queue_drains_when_it_is_back(
    outage: str,
) -> None:
    world = World()
    await world.assign([0])
    if outage == "down":
        world.sink.fault.down()
    else:
        world.sink.fault.time_out(0.01)
    await world.feed([whale("ann")], "batch-1")
    await world.release()
    await world.tagger.flush()
    assert [change["user_id"] for change in world.tags.values()] == ["ann"]
    assert world.acked == ["batch-1"]  # Kafka output and acks did not wait for Redis
    assert world.sink.queued_users == 1 and world.sink.tags == {}
    assert world.metric("streamtags_redis_errors_total") >= 1
    world.sink.fault.up()
    await world.tagger.tick()  # nothing due: the tick alone retries the queue
    assert world.sink.queued_users == 0
    assert set(world.sink.tags["ann"]) == {"whale"}
    assert world.metric("streamtags_redis_pending_users") == 0


# -- the trigger guard ---------------------------------------------------------------


async def test_a_trigger_is_sent_and_recorded_as_sent_once_delivered() -> None:
    world = World()
    await world.assign([0])
    await world.feed([cart("ann")], "batch-1")
    await fire_carts(world)
    [trigger] = world.triggers.values()
    assert world.ledger.states == {trigger["trigger_id"]: "sent"}


async def test_a_trigger_recorded_sent_is_never_sent_again_after_a_crash() -> None:
    first = World()
    await first.assign([0])
    await first.feed([cart("ann")], "batch-1")
    await fire_carts(first)
    # Crash before the flush: the fired deadline never reached the changelog.
    second = World(store=first.store.restarted(), ledger=first.ledger)
    await second.assign([0])
    await second.feed([cart("ann")], "replayed")
    await fire_carts(second)
    await second.tagger.flush()
    assert len(first.triggers.records) == 1
    assert second.triggers.records == []
    assert second.acked == ["replayed"]


async def test_a_trigger_left_pending_is_sent_again_after_a_crash() -> None:
    first = World()
    await first.assign([0])
    first.triggers.fault.hold()  # claimed, never delivered: the worker dies here
    await first.feed([cart("ann")], "batch-1")
    firing = asyncio.create_task(fire_carts(first))
    await spin()
    assert list(first.ledger.states.values()) == ["pending"]
    firing.cancel()
    second = World(store=first.store.restarted(), ledger=first.ledger)
    await second.assign([0])
    await second.feed([cart("ann")], "replayed")
    await fire_carts(second)
    assert len(second.triggers.records) == 1
    assert list(second.ledger.states.values()) == ["sent"]


@pytest.mark.parametrize("outage", ["down", "timeout"])
async def test_an_unreachable_guard_lets_triggers_through(outage: str) -> None:
    world = World()
    await world.assign([0])
    if outage == "down":
        world.ledger.fault.down()
    else:
        world.ledger.fault.time_out(0.01)
    await world.feed([cart("ann")], "batch-1")
    await fire_carts(world)
    await world.tagger.flush()
    assert len(world.triggers.records) == 1
    assert world.acked == ["batch-1"]
    assert world.ledger.states == {}


# -- revoked partitions ------------------------------------------------------------------


async def test_a_revoke_waits_for_the_running_flush_which_loses_nothing() -> None:
    """The rule: ownership changes wait for a running flush; that flush writes and acks
    everything it took; changes and acks of a partition revoked after it are dropped,
    never written or acked here (the new owner re-reads those events)."""
    world = World()
    await world.assign([0, 1])
    await world.feed([whale("ann", partition=0)], "p0", partition=0)
    await world.feed([whale("bob", partition=1)], "p1", partition=1)
    world.store.fault.hold()
    flushing = asyncio.create_task(world.tagger.flush())
    await spin()
    revoking = asyncio.create_task(world.tagger.assign([0]))
    await world.feed([whale("cat", partition=1)], "p1-late", partition=1)
    await spin()
    assert not revoking.done(), "ownership changed under a running flush"
    world.store.fault.release()
    await flushing
    await revoking
    assert sorted(world.acked) == ["p0", "p1"]
    assert world.durable_users(0) == {"ann"} and world.durable_users(1) == {"bob"}
    puts_before = world.store.puts
    await world.tagger.flush()
    assert sorted(world.acked) == ["p0", "p1"]  # p1-late is never acked here
    assert world.store.puts == puts_before  # nothing written for partition 1, not even queued
    assert list(world.tagger.partitions) == [0]


@pytest.mark.parametrize("comes_back", [False, True])
async def test_a_batch_whose_partition_is_revoked_while_it_runs_is_not_acked(
    comes_back: bool,
) -> None:
    world = World()
    await world.assign([0, 1])
    world.sink.fault.hold()
    batch = asyncio.create_task(world.feed([whale("bob", partition=1)], "p1", partition=1))
    await spin()
    await world.assign([0])
    if comes_back:  # revoked and assigned again: its unwritten changes are gone all the same
        await world.assign([0, 1])
    world.sink.fault.release()
    await batch
    await world.tagger.flush()
    assert world.acked == []
    assert world.durable_users(1) == set()


async def test_a_partition_assigned_again_rebuilds_its_deadlines_from_the_store() -> None:
    world = World()
    await world.assign([0])
    await world.feed([cart("ann")], "batch-1")
    await world.tagger.flush()
    await world.assign([])
    await world.assign([0])
    await fire_carts(world)
    assert [trigger["user_id"] for trigger in world.triggers.values()] == ["ann"]


async def test_after_a_restart_no_deadline_is_judged_before_the_backlog_behind_it_is_read() -> None:
    """Issue 9: the cart's order sat in the backlog while the worker was down."""
    world = World()
    await world.assign([0])
    await world.feed([cart("ann")], "batch-1")
    world.clock.set_ms(T0 + 20_000)  # the cart event is applied and stored
    await world.tagger.tick()
    await world.tagger.flush()
    await world.assign([])  # the worker goes away ...
    world.clock.set_ms(T0 + 60 * MINUTE)  # ... and comes back long after the deadline
    await world.tagger.assign([0])
    world.tagger.expect_backlog({(0, s): (0, 5 if s == "orders" else 0) for s in STREAMS})
    await world.tagger.tick()
    assert world.triggers.values() == []  # the orders backlog is unread: nothing is due
    order = ev("orders", 4, 14 * MINUTE, "ann", status="created", cart_id="cart-ann")
    world.tagger.note_read([(0, "orders", 4)])  # the backlog's last message
    await world.feed([order], "batch-2")
    world.clock.set_ms(T0 + 61 * MINUTE)
    await world.tagger.tick()
    assert world.triggers.values() == []  # the order in the backlog cancelled the cart
    assert "cart_abandoned" not in {c["tag"] for c in world.tags.values()}


async def test_a_stream_with_nothing_to_read_follows_the_clock_at_once_after_assignment() -> None:
    world = World()
    await world.assign([0])
    await world.feed([cart("ann")], "batch-1")
    await world.tagger.flush()
    await world.assign([])
    await world.assign([0])  # every stream's backlog is empty
    await fire_carts(world)
    assert [trigger["user_id"] for trigger in world.triggers.values()] == ["ann"]


async def test_a_caught_up_rare_stream_stops_holding_back_tags_of_a_drained_backlog() -> None:
    ends = {("accounts", 0): 1, ("orders", 0): 2}
    world = World()
    world.tagger.positions.partition_end = lambda number, stream: ends.get((stream, number))
    await world.assign([0])
    old_consent = ev(
        "accounts", 0, -60 * MINUTE, "ann", action="consent_changed", personalization=True
    )
    world.tagger.note_read([(0, "accounts", 0), (0, "orders", 1)])
    await world.feed([old_consent, whale("ann")], "batch-1")
    world.clock.set_ms(T0 + LATENESS_MS + 1)
    await world.tagger.tick()  # both topics are read to their end: the old event holds nothing
    await world.tagger.flush()
    assert [change["tag"] for change in world.tags.values()] == ["whale"]


async def test_a_new_partition_whose_backlog_end_is_unknown_releases_only_itself() -> None:
    """The broker did not say where partition 1's backlog ends: it is judged as before,
    while partition 0, kept from an earlier assignment, still waits for its orders."""
    world = World()
    await world.tagger.assign([0])
    world.tagger.expect_backlog({(0, s): (0, 5 if s == "orders" else 0) for s in STREAMS})
    await world.tagger.assign([0, 1])
    world.tagger.release_backlogs([1])
    assert world.tagger.partitions[0].clock.held == {"orders"}
    assert world.tagger.partitions[1].clock.held == set()
