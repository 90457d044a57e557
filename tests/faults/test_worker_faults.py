"""Workers dying: one killed with cancelling orders in its backlog, one of two killed.

Each leaves zero wrong coupons, zero tags lost on the topics, and Redis complete
within 10 s of the recovery (the moment a worker owns every partition again).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from typing import Any

from tests.faults.shop import DEADLINE_S, Shop, check_outcomes, wait_redis_complete
from tests.integration.conftest import Names, Worker, wait_for
from tests.integration.test_live import SCALE

ENV = {**SCALE, "STREAMTAGS_STORE": "rocksdb://"}
PARTITIONS = 4  # the integration fixtures' worker_factory


def health(worker: Worker) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(worker.get("/health"))
    return body


async def owning_everything(*workers: Worker, timeout_s: float = 90) -> float:
    """When (time.monotonic) ``workers`` together own every partition, settled."""

    def settled() -> bool:
        bodies = [health(worker) for worker in workers]
        owned = sum(len(body["partitions"]) for body in bodies)
        return owned == PARTITIONS and not any(body["rebalancing"] for body in bodies)

    await wait_for(settled, timeout_s=timeout_s, what="every partition owned again")
    return time.monotonic()


async def test_a_worker_killed_with_cancelling_orders_in_its_backlog_loses_nothing(
    names: Names, worker_factory: Callable[..., Worker]
) -> None:
    worker = worker_factory(**ENV)
    worker.start()
    shop = Shop(names, "kill")
    await shop.add_carts()
    await shop.hop()
    await asyncio.sleep(1.5)  # read, applied and flushed; the deadlines are 2 s away
    worker.stop(signal.SIGKILL)
    await shop.pay(share_of_deadline=0.9)  # into the backlog: nobody reads it yet
    await asyncio.sleep(max(0.0, shop.carts_at_ms / 1000 + DEADLINE_S + 3 - time.time()))
    worker.start()
    recovered_at = await owning_everything(worker)
    took = await wait_redis_complete(names, [shop], recovered_at=recovered_at)
    await check_outcomes(names, [shop], log=worker.log())
    print(f"Redis complete {took:.1f} s after the restarted worker owned every partition")


async def test_one_of_two_workers_killed_loses_nothing(
    names: Names, worker_factory: Callable[..., Worker]
) -> None:
    first, second = worker_factory(**ENV), worker_factory(**ENV)
    first.start()
    second.start()
    await wait_for(
        lambda: bool(health(first)["partitions"]) and bool(health(second)["partitions"]),
        timeout_s=60,
        what="both workers owning partitions",
    )
    await owning_everything(first, second)
    shop = Shop(names, "pair", size=12)
    await shop.add_carts()
    await shop.hop()
    await asyncio.sleep(1.5)
    first.stop(signal.SIGKILL)  # its payers' orders wait for the survivor
    await shop.pay(share_of_deadline=0.9)
    recovered_at = await owning_everything(second)
    took = await wait_redis_complete(names, [shop], recovered_at=recovered_at)
    await check_outcomes(names, [shop], log=second.log())
    assert second.alive()
    print(f"Redis complete {took:.1f} s after the survivor owned every partition")
