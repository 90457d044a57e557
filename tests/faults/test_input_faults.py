"""Bad producers: one that keys messages wrongly, one whose user grows an oversized state.

Both are dead-lettered with the reason; everybody else is tagged, with zero wrong
coupons, zero tags lost on the topics and Redis complete within 10 s.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

import orjson

from tests.faults.shop import Shop, check_outcomes, wait_redis_complete
from tests.faults.test_dependency_faults import past_the_deadline
from tests.faults.test_worker_faults import ENV, owning_everything
from tests.integration.conftest import Names, Worker, consume, produce
from tests.integration.test_live import logins

#: The record limit of the oversized-record fault, bytes (the smallest allowed).
LIMIT = 16_384


async def test_a_mis_keyed_producer_is_dead_lettered_and_the_others_are_tagged(
    names: Names, worker_factory: Callable[..., Worker]
) -> None:
    worker = worker_factory(**ENV)
    worker.start()
    await owning_everything(worker)
    shop = Shop(names, "keyed")
    mis_keyed = [(b"someone-else", value) for _, value in logins("mis-keyed")]
    await produce(names.topic("logins"), mis_keyed)
    await shop.play()
    await past_the_deadline(shop)
    took = await wait_redis_complete(names, [shop], recovered_at=time.monotonic())
    letters = await consume(names.topic("dead-letter"), count=3, timeout_s=30, settle_s=1)
    assert [letter["error_kind"] for letter in letters] == ["wrong_key"] * 3
    assert {base64.b64decode(letter["key_b64"]) for letter in letters} == {b"someone-else"}
    await check_outcomes(names, [shop], log=worker.log())
    changes = await consume(names.topic("tags"), count=1, timeout_s=10, settle_s=1)
    assert not [c for c in changes if c["user_id"] in ("mis-keyed", "someone-else")]
    print(f"Redis complete {took:.1f} s after the deadline")


def search(user: str, offset: int, at_ms: int) -> tuple[bytes, bytes]:
    body: dict[str, Any] = {
        "event_id": f"{user}-search-{offset}",
        "user_id": user,
        "ts": at_ms,
        "action": "search",
        "query": "q" * 1000,
        "results_count": 3,
    }
    return user.encode(), orjson.dumps(body)


async def test_an_oversized_state_is_dead_lettered_and_every_other_write_lands(
    names: Names, worker_factory: Callable[..., Worker]
) -> None:
    worker = worker_factory(**ENV, STREAMTAGS_MAX_RECORD_BYTES=str(LIMIT))
    worker.start()
    await owning_everything(worker)
    shop = Shop(names, "sized")
    # Stamped a minute ahead, the searches wait in the user's state: ~20 KB of it.
    ahead_ms = int(time.time() * 1000) + 60_000
    await produce(names.topic("browse"), [search("big", i, ahead_ms) for i in range(20)])
    await shop.play()
    await past_the_deadline(shop)
    took = await wait_redis_complete(names, [shop], recovered_at=time.monotonic())
    letters = await consume(names.topic("dead-letter"), count=1, timeout_s=30, settle_s=1)
    [letter] = [x for x in letters if x["error_kind"] == "too_large"][:1]
    assert base64.b64decode(letter["key_b64"]) == b"big"
    assert letter["value_bytes"] > LIMIT and letter["value_truncated"]
    assert worker.metric("streamtags_oversized_records_total", kind="state") >= 1
    await check_outcomes(names, [shop], log=worker.log())
    assert "MessageSizeTooLarge" not in worker.log()
    assert worker.alive()
    print(f"Redis complete {took:.1f} s after the deadline")
