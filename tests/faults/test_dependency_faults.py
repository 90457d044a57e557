"""Kafka or Redis dying under a running worker, and coming back.

- The broker is SIGKILLed for 20 s, then started again: the worker survives,
  says so once (a handful of log lines), shows ``degraded: [kafka]`` on
  ``/health`` meanwhile, and loses nothing.
- Redis is SIGKILLed and comes back empty (its files deleted): tagging to
  Kafka goes on meanwhile, ``/health`` shows ``degraded: [redis]``, and Redis
  is complete again within 10 s of coming back (the worker restores every
  live tag from its states).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from tests.faults.conftest import Stack
from tests.faults.shop import DEADLINE_S, Shop, check_outcomes, wait_redis_complete
from tests.faults.test_worker_faults import ENV, health, owning_everything
from tests.integration.conftest import Names, Worker, wait_for

#: How long the broker stays dead, seconds.
BROKER_DOWN_S = 20.0
#: The most lines the worker may log per minute of outage (the repeat filter's window),
#: all told and at WARNING or worse (the outage used to log ~100 ERROR lines a second).
#: A broker with many topics can take over a minute to come back after SIGKILL.
OUTAGE_LOG_LINES = 15
OUTAGE_WARNINGS = 6
REPEAT_WINDOW_S = 60.0


async def past_the_deadline(shop: Shop) -> None:
    """Sleep until the round's cart deadlines (and the lateness) have passed."""
    await asyncio.sleep(max(0.0, shop.carts_at_ms / 1000 + DEADLINE_S + 1.5 - time.time()))


def degraded(worker: Worker) -> list[str]:
    return list(health(worker)["degraded"])


async def test_the_broker_killed_for_20_s_the_worker_survives_quietly_and_loses_nothing(
    names: Names, worker_factory: Callable[..., Worker], stack: Stack
) -> None:
    worker = worker_factory(**ENV)
    worker.start()
    await owning_everything(worker)
    before = Shop(names, "before")
    await before.play()
    events = 2 * len(before.leavers) + 3 * len(before.hoppers) + len(before.payers)
    await wait_for(
        lambda: worker.metric("streamtags_events_consumed_total") >= events,
        timeout_s=30,
        what="the round read before the broker dies",
    )
    lines_before = len(worker.log().splitlines())
    killed_at = time.monotonic()
    stack.kill("kafka")  # the round's deadlines fall due while it is dead
    await wait_for(lambda: degraded(worker) == ["kafka"], timeout_s=10, what="/health naming kafka")
    noticed_s = time.monotonic() - killed_at
    await asyncio.sleep(max(0.0, killed_at + BROKER_DOWN_S - time.monotonic()))
    await asyncio.to_thread(stack.up)
    await wait_for(lambda: degraded(worker) == [], timeout_s=60, what="/health ok again")
    recovered_at = await owning_everything(worker)
    outage_log = worker.log().splitlines()[lines_before:]
    after = Shop(names, "after")
    await after.play()
    took = await wait_redis_complete(names, [before], recovered_at=recovered_at)
    await past_the_deadline(after)
    await check_outcomes(names, [before, after], log=worker.log())
    assert worker.alive() and worker.starts == 1
    down_s = worker.metric("streamtags_dependency_down_seconds_total", dependency="kafka")
    assert down_s >= BROKER_DOWN_S - 5, down_s
    warnings = [line for line in outage_log if "[WARNING]" in line or "[ERROR]" in line]
    windows = max(1, math.ceil(down_s / REPEAT_WINDOW_S))
    assert len(warnings) <= OUTAGE_WARNINGS * windows, "\n".join(outage_log)
    assert len(outage_log) <= OUTAGE_LOG_LINES * windows, "\n".join(outage_log)
    print(
        f"kafka down noticed after {noticed_s:.1f} s; back and recovered "
        f"{recovered_at - killed_at:.1f} s after the kill; {down_s:.0f} s counted down; "
        f"{len(outage_log)} log lines meanwhile ({len(warnings)} warnings); Redis complete "
        f"{took:.1f} s after recovery\n" + "\n".join(outage_log)
    )


async def test_redis_killed_and_back_empty_is_complete_within_10_s(
    names: Names, worker_factory: Callable[..., Worker], stack: Stack
) -> None:
    worker = worker_factory(**ENV)
    worker.start()
    await owning_everything(worker)
    before = Shop(names, "before")
    await before.play()
    await past_the_deadline(before)
    await wait_redis_complete(names, [before], recovered_at=time.monotonic())
    stack.kill("redis")
    stack.forget_redis_data()
    await wait_for(lambda: degraded(worker) == ["redis"], timeout_s=10, what="/health naming redis")
    during = Shop(names, "during")  # tagged to Kafka while Redis is away
    await during.play()
    await past_the_deadline(during)
    await asyncio.to_thread(stack.up)
    recovered_at = time.monotonic()
    took = await wait_redis_complete(names, [before, during], recovered_at=recovered_at)
    await check_outcomes(names, [before, during], log=worker.log())
    await wait_for(lambda: degraded(worker) == [], timeout_s=10, what="/health ok again")
    assert worker.metric("streamtags_dependency_down_seconds_total", dependency="redis") > 0
    print(f"Redis complete {took:.1f} s after it came back empty")
