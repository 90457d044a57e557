"""Where a new owner's backlog starts: the group's committed offset, not the consumer's
position (which may already be past records the agent has not handled)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from faust.types import TP

from streamtags.live.app import _backlog_ends, own_assigned_partitions
from tests.unit.test_live_tagger import STREAMS, World

ORDERS = TP("shop.orders", 2)
BROWSE = TP("shop.browse", 2)
LOGINS = TP("shop.logins", 2)
STREAM_OF_TOPIC = {"shop.orders": "orders", "shop.browse": "browse", "shop.logins": "logins"}


class Consumer:
    """The consumer calls `_backlog_ends` makes: the fetcher ran ahead to every end."""

    def __init__(self, ends: dict[TP, int], earliest: dict[TP, int], committed: dict[TP, int]):
        self.ends, self.earliest = ends, earliest
        kafka = SimpleNamespace(committed=self._committed)
        self._committed_offsets = committed
        self._thread = SimpleNamespace(call_thread=self._call, _ensure_consumer=lambda: kafka)

    async def _call(self, method: Any, *args: Any) -> Any:
        return await method(*args)

    async def _committed(self, tp: TP) -> int | None:
        return self._committed_offsets.get(tp)

    async def highwaters(self, *tps: TP) -> dict[TP, int]:
        return {tp: self.ends[tp] for tp in tps}

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        return {tp: self.earliest[tp] for tp in tps}

    async def position(self, tp: TP) -> int:
        return self.ends[tp]  # fetched to the end, not necessarily handled


async def test_the_backlog_starts_at_the_committed_offset_or_the_earliest() -> None:
    consumer = Consumer(
        ends={ORDERS: 3_000, BROWSE: 18_000, LOGINS: 40},
        earliest={ORDERS: 0, BROWSE: 0, LOGINS: 10},
        committed={ORDERS: 1_200, LOGINS: 4},  # browse: nothing committed yet
    )
    app = SimpleNamespace(consumer=consumer)
    ends = await _backlog_ends(app, [ORDERS, BROWSE, LOGINS], STREAM_OF_TOPIC)  # type: ignore[arg-type]
    assert ends == {
        (2, "orders"): (1_200, 3_000),  # not (3_000, 3_000): its backlog is still unread
        (2, "browse"): (0, 18_000),  # nothing committed: read from the earliest
        (2, "logins"): (10, 40),  # committed below what the log still holds
    }


#: the input topics of the tagger World builds
INPUTS = {f"in.{stream}": stream for stream in STREAMS}


class RebalancingConsumer(Consumer):
    """Answers as the group rebalances again (the app's generation moves on) meanwhile."""

    app: Any = None

    async def highwaters(self, *tps: TP) -> dict[TP, int]:
        self.app.consumer_generation_id += 1
        return await super().highwaters(*tps)


def assigned_app(consumer: Consumer, partitions: list[int]) -> Any:
    actives = {TP(topic, n) for topic in INPUTS for n in partitions}
    assignor = SimpleNamespace(assigned_actives=lambda: actives)
    return SimpleNamespace(consumer=consumer, assignor=assignor, consumer_generation_id=1)


def all_streams(value: int) -> dict[TP, int]:
    return {TP(topic, n): value for topic in INPUTS for n in (1, 2)}


async def test_ends_learnt_for_an_assignment_a_rebalance_replaced_are_not_used() -> None:
    """Faust does not cancel the recovery callback when the group rebalances again: the
    ends it learnt belong to the old assignment. Its partitions keep waiting, and the
    new assignment's call learns theirs."""
    world = World()
    stale = RebalancingConsumer(ends=all_streams(40), earliest=all_streams(0), committed={})
    stale.app = app = assigned_app(stale, [2])
    await own_assigned_partitions(app, world.tagger, set(INPUTS), INPUTS)
    assert world.tagger.awaiting_backlog == {2}
    assert world.tagger.positions.backlog_ends == {}
    assert world.tagger.partitions[2].clock.held == set(INPUTS.values())

    fresh = Consumer(ends=all_streams(50), earliest=all_streams(0), committed={})
    app = assigned_app(fresh, [1, 2])
    await own_assigned_partitions(app, world.tagger, set(INPUTS), INPUTS)
    assert world.tagger.awaiting_backlog == set()
    assert world.tagger.positions.backlog_ends == {
        (n, stream): 50 for n in (1, 2) for stream in INPUTS.values()
    }


async def test_a_backlog_end_the_broker_does_not_give_releases_only_the_waiting() -> None:
    world = World()
    first = Consumer(ends=all_streams(50), earliest=all_streams(0), committed={})
    await own_assigned_partitions(assigned_app(first, [1]), world.tagger, set(INPUTS), INPUTS)
    silent = Consumer(ends={}, earliest={}, committed={})  # every lookup raises KeyError
    await own_assigned_partitions(assigned_app(silent, [1, 2]), world.tagger, set(INPUTS), INPUTS)
    assert world.tagger.partitions[1].clock.held == set(INPUTS.values())
    assert world.tagger.partitions[2].clock.held == set()
    assert world.tagger.awaiting_backlog == set()
