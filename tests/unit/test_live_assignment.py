"""Where a new owner's backlog starts: the group's committed offset, not the consumer's
position (which may already be past records the agent has not handled)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from faust.types import TP

from streamtags.live.app import _backlog_ends

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
