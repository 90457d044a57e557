"""Restarts and failovers on the real stack: no coupon for a cart whose order was in the backlog.

A customer adds a cart; the worker dies; the customer orders (before the
deadline) while no worker runs; a worker comes back after the deadline. It
must read the order before it judges the cart. Every test also has a control
group whose carts really were abandoned: each of those gets exactly one coupon.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import orjson

from tests.integration.conftest import Names, Worker, consume, produce, wait_for
from tests.integration.test_live import SCALE, owned, two_workers

#: The cart deadline on the scaled clock (15 minutes x 1/240), seconds.
DEADLINE_S = 15 * 60 / 240


def now_ms() -> int:
    return int(time.time() * 1000)


def add_to_cart(user: str, at_ms: int) -> tuple[bytes, bytes]:
    return user.encode(), orjson.dumps(
        {
            "event_id": f"{user}-add",
            "user_id": user,
            "ts": at_ms,
            "action": "add_to_cart",
            "cart_id": f"cart-{user}",
            "sku": "gc-50",
            "price": 50,
        }
    )


def order_created(user: str, at_ms: int) -> tuple[bytes, bytes]:
    return user.encode(), orjson.dumps(
        {
            "event_id": f"{user}-order",
            "user_id": user,
            "ts": at_ms,
            "order_id": f"order-{user}",
            "cart_id": f"cart-{user}",
            "status": "created",
            "amount": 50,
        }
    )


async def coupons_by_user(names: Names, expected: int) -> dict[str, int]:
    triggers = await consume(
        names.topic("coupon-triggers"), count=expected, timeout_s=60, settle_s=4
    )
    by_user: dict[str, int] = {}
    for trigger in triggers:
        by_user[trigger["user_id"]] = by_user.get(trigger["user_id"], 0) + 1
    return by_user


async def test_a_restarted_worker_reads_the_backlog_before_judging_a_cart(
    names: Names, worker_factory: Callable[..., Worker]
) -> None:
    worker = worker_factory(**SCALE, STREAMTAGS_STORE="rocksdb://")
    worker.start()
    payers = [f"payer-{i}" for i in range(12)]
    leavers = [f"leaver-{i}" for i in range(12)]
    carts_at = now_ms()
    await produce(names.topic("browse"), [add_to_cart(u, carts_at) for u in payers + leavers])
    time.sleep(1.5)  # read, applied and flushed; the deadlines are 2 s away
    worker.stop(signal.SIGKILL)
    # While no worker runs: the payers order, 90 % of the way to the deadline.
    before_deadline = carts_at + int(DEADLINE_S * 1000 * 0.9)
    await produce(names.topic("orders"), [order_created(u, before_deadline) for u in payers])
    time.sleep(max(0.0, carts_at / 1000 + DEADLINE_S + 3 - time.time()))  # past the deadline
    worker.start()
    by_user = await coupons_by_user(names, expected=len(leavers))
    assert not set(by_user) & set(payers), (
        f"coupons for paying customers: {sorted(set(by_user) & set(payers))}\n"
        f"{worker.log()[-4000:]}"
    )
    assert by_user == dict.fromkeys(leavers, 1), by_user


async def test_a_survivor_taking_over_reads_the_backlog_before_judging_a_cart(
    names: Names, worker_factory: Callable[..., Worker]
) -> None:
    first, second = await two_workers(worker_factory)
    payers = [f"payer-{i}" for i in range(16)]
    leavers = [f"leaver-{i}" for i in range(16)]
    carts_at = now_ms()
    await produce(names.topic("browse"), [add_to_cart(u, carts_at) for u in payers + leavers])
    time.sleep(1.5)
    # The survivor's own users' orders are read live; the dead worker's wait in the
    # backlog until the survivor takes over, after the deadline (session timeout 6 s).
    first.stop(signal.SIGKILL)
    before_deadline = carts_at + int(DEADLINE_S * 1000 * 0.9)
    await produce(names.topic("orders"), [order_created(u, before_deadline) for u in payers])
    await wait_for(lambda: len(owned(second)) == 4, timeout_s=60, what="the survivor taking over")
    by_user = await coupons_by_user(names, expected=len(leavers))
    assert not set(by_user) & set(payers), (
        f"coupons for paying customers: {sorted(set(by_user) & set(payers))}\n"
        f"{second.log()[-4000:]}"
    )
    assert by_user == dict.fromkeys(leavers, 1), by_user
