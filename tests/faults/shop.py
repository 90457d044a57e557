"""The fault suite's workload: shoppers whose right outcome is known, and its checks.

A round of shoppers has three kinds of users (time scale 1/240, as in
``tests/integration``: the cart deadline is 3.75 s):

- *leavers* add a cart and never order: exactly one coupon each, and a
  ``cart_abandoned`` tag;
- *payers* add a cart and order before the deadline: no coupon, ever;
- *hoppers* log in from three countries: ``ip_hopping`` at once, on the tags
  and risk-tags topics.

:func:`check_outcomes` asserts what every fault must leave intact: zero
wrong coupons (none for a payer, none twice), zero tags lost on the topics,
and Redis complete within 10 s of the recovery.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from streamtags.serving.lookup import TagClient
from tests.integration.conftest import REDIS_URL, Names, consume, produce
from tests.integration.test_live import logins
from tests.integration.test_restarts import (
    DEADLINE_S,
    add_to_cart,
    coupons_by_user,
    now_ms,
    order_created,
)

__all__ = ["DEADLINE_S", "REDIS_COMPLETE_S", "Shop", "check_outcomes", "wait_redis_complete"]

#: How soon after the recovery Redis must hold every live tag again, seconds.
REDIS_COMPLETE_S = 10.0


@dataclass
class Shop:
    """One round of shoppers (see the module docstring)."""

    names: Names
    label: str
    size: int = 8
    carts_at_ms: int = 0
    leavers: list[str] = field(init=False)
    payers: list[str] = field(init=False)
    hoppers: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.leavers = [f"{self.label}-leaver-{i}" for i in range(self.size)]
        self.payers = [f"{self.label}-payer-{i}" for i in range(self.size)]
        self.hoppers = [f"{self.label}-hopper-{i}" for i in range(self.size // 2)]

    async def add_carts(self) -> None:
        """Every leaver and payer adds a cart now (event time: the wall clock)."""
        self.carts_at_ms = now_ms()
        carts = [add_to_cart(user, self.carts_at_ms) for user in self.leavers + self.payers]
        await produce(self.names.topic("browse"), carts)

    async def pay(self, *, share_of_deadline: float = 0.5) -> None:
        """Every payer orders, stamped ``share_of_deadline`` of the way to the deadline."""
        at_ms = self.carts_at_ms + int(DEADLINE_S * 1000 * share_of_deadline)
        await produce(self.names.topic("orders"), [order_created(u, at_ms) for u in self.payers])

    async def hop(self) -> None:
        """Every hopper logs in from three countries."""
        await produce(self.names.topic("logins"), [m for u in self.hoppers for m in logins(u)])

    async def play(self) -> None:
        """The whole round, in the usual order, without waiting for the deadline."""
        await self.add_carts()
        await self.hop()
        await self.pay()

    def expected_tags(self) -> set[tuple[str, str]]:
        """(user, tag) every round must leave on the tags topic and in Redis."""
        return {(u, "cart_abandoned") for u in self.leavers} | {
            (u, "ip_hopping") for u in self.hoppers
        }


def redis_missing(names: Names, shops: list[Shop]) -> set[tuple[str, str]]:
    """Expected (user, tag) pairs Redis does not hold now."""
    client = TagClient(redis_url=REDIS_URL, prefix=f"{names.prefix}:user:", timeout_ms=500)
    missing = set()
    for shop in shops:
        for user, tag in shop.expected_tags():
            if tag not in {t["tag"] for t in client.tags(user)}:
                missing.add((user, tag))
    return missing


async def wait_redis_complete(names: Names, shops: list[Shop], *, recovered_at: float) -> float:
    """Seconds from ``recovered_at`` (time.monotonic) until Redis held every expected tag;
    fails once :data:`REDIS_COMPLETE_S` has passed."""
    while True:
        missing = redis_missing(names, shops)
        took = time.monotonic() - recovered_at
        if not missing:
            return took
        assert took <= REDIS_COMPLETE_S, (
            f"Redis still misses {len(missing)} tags {took:.1f} s after the recovery: "
            f"{sorted(missing)[:6]}"
        )
        await asyncio.sleep(0.2)


async def check_outcomes(names: Names, shops: list[Shop], *, log: str = "") -> None:
    """Zero wrong coupons and zero tags lost on the topics, over every round."""
    leavers = [u for shop in shops for u in shop.leavers]
    payers = {u for shop in shops for u in shop.payers}
    by_user = await coupons_by_user(names, expected=len(leavers))
    wrong = {u: n for u, n in by_user.items() if u in payers or n != 1}
    assert not wrong, f"wrong coupons {wrong}\n{log[-4000:]}"
    assert set(by_user) == set(leavers), f"missing coupons {set(leavers) - set(by_user)}"
    expected = set().union(*(shop.expected_tags() for shop in shops))
    changes = await consume(names.topic("tags"), count=len(expected), timeout_s=60, settle_s=2)
    applied = {(c["user_id"], c["tag"]) for c in changes if c["action"] == "applied"}
    assert expected <= applied, f"tags lost on the topic: {sorted(expected - applied)[:6]}"
    assert not {(u, t) for u, t in applied if u in payers and t == "cart_abandoned"}
    hoppers = {u for shop in shops for u in shop.hoppers}
    risk = await consume(names.topic("risk-tags"), count=len(hoppers), timeout_s=30, settle_s=1)
    assert {r["user_id"] for r in risk if r["tag"] == "ip_hopping"} == hoppers
