"""End to end on real Kafka and Redis: a worker tags users live, with windows shortened.

Time scale 1/240: 15 minutes -> 3.75 s, 1 hour -> 15 s, 10 minutes -> 2.5 s.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import redis

from streamtags.serving.lookup import AsyncTagClient, TagClient
from tests.integration.conftest import (
    REDIS_URL,
    ROOT,
    Names,
    Worker,
    consume,
    produce,
    wait_for,
)

SCALE = {
    "STREAMTAGS_TIME_SCALE": str(1 / 240),
    "STREAMTAGS_LATENESS_MS": "500",
    "STREAMTAGS_TICK_INTERVAL_S": "0.2",
    "STREAMTAGS_COMMIT_INTERVAL_S": "0.5",
    # the broker's minimum: a killed worker's partitions move after 6 s, not 30
    "STREAMTAGS_SESSION_TIMEOUT_S": "6",
}
CART_DEADLINE_S = 15 * 60 / 240


def owned(worker: Worker) -> list[int]:
    """The input partitions a worker says it owns."""
    return list(json.loads(worker.get("/health"))["partitions"])


async def two_workers(worker_factory: Callable[..., Worker]) -> tuple[Worker, Worker]:
    """Two RocksDB workers of one app, each owning some of the 4 partitions."""
    env = {**SCALE, "STREAMTAGS_STORE": "rocksdb://"}
    first = worker_factory(**env)
    first.start()
    second = worker_factory(**env)
    second.start()
    await wait_for(
        lambda: len(owned(first)) + len(owned(second)) == 4 and owned(first) and owned(second),
        timeout_s=60,
        what="both workers owning partitions",
    )
    return first, second


def now_ms() -> int:
    return int(time.time() * 1000)


def event(user: str, event_id: str, **fields: Any) -> tuple[bytes, bytes]:
    return user.encode(), orjson.dumps(
        {"event_id": event_id, "user_id": user, "ts": now_ms(), **fields}
    )


def cart(user: str, cart_id: str, sku: str = "gc-50", price: float = 50.0) -> tuple[bytes, bytes]:
    return event(
        user, f"{user}-add-{cart_id}", action="add_to_cart", cart_id=cart_id, sku=sku, price=price
    )


def logins(user: str) -> list[tuple[bytes, bytes]]:
    return [
        event(user, f"{user}-l{i}", outcome="success", ip=ip, country=country)
        for i, (ip, country) in enumerate(
            [("203.0.113.1", "SG"), ("198.51.100.2", "MY"), ("192.0.2.3", "TH")]
        )
    ]


def failed_payments(user: str) -> list[tuple[bytes, bytes]]:
    return [
        event(
            user,
            f"{user}-f{i}",
            order_id=f"{user}-o{i}",
            status="failed",
            amount=20,
            failure_reason="declined",
        )
        for i in range(3)
    ]


def tag_names(client: TagClient, user: str) -> set[str]:
    return {tag["tag"] for tag in client.tags(user)}


async def test_headline_tags_reach_redis_http_and_the_right_topics(
    names: Names, worker_factory: Callable[..., Worker]
) -> None:
    worker = worker_factory(**SCALE)
    worker.start()
    client = TagClient(redis_url=REDIS_URL, prefix=f"{names.prefix}:user:", timeout_ms=500)

    await produce(names.topic("browse"), [cart("shopper", "cart-1")])
    await produce(names.topic("logins"), logins("hopper"))
    await produce(names.topic("orders"), failed_payments("grumpy"))

    await wait_for(
        lambda: "ip_hopping" in tag_names(client, "hopper"),
        timeout_s=30,
        what="ip_hopping in Redis",
    )
    await wait_for(
        lambda: "frustrated" in tag_names(client, "grumpy"),
        timeout_s=30,
        what="frustrated in Redis",
    )
    # the shopper sends nothing more: the deadline fires for a quiet user
    await wait_for(
        lambda: "cart_abandoned" in tag_names(client, "shopper"),
        timeout_s=30,
        what="cart_abandoned in Redis for a quiet user",
    )

    body = json.loads(worker.get("/v1/users/hopper/tags"))
    assert body["user_id"] == "hopper"
    assert [t["tag"] for t in body["tags"]] == ["ip_hopping"]
    assert body["tags"][0]["evidence"]["figures"]["countries"] == 2  # fired at the 2nd login
    async with AsyncTagClient(redis_url=REDIS_URL, prefix=f"{names.prefix}:user:") as aclient:
        assert {t["tag"] for t in await aclient.tags("grumpy")} == {"frustrated"}

    changes = await consume(names.topic("tags"), count=3, timeout_s=20, settle_s=1)
    assert {(c["user_id"], c["tag"], c["action"]) for c in changes} == {
        ("shopper", "cart_abandoned", "applied"),
        ("hopper", "ip_hopping", "applied"),
        ("grumpy", "frustrated", "applied"),
    }
    risk = await consume(names.topic("risk-tags"), count=1, timeout_s=10, settle_s=1)
    assert [(r["user_id"], r["tag"]) for r in risk] == [("hopper", "ip_hopping")]
    triggers = await consume(names.topic("coupon-triggers"), count=1, timeout_s=10)
    assert triggers[0]["user_id"] == "shopper"
    assert triggers[0]["cart_id"] == "cart-1"
    assert triggers[0]["cart_value"] == 50.0
    assert triggers[0]["coupon"]["discount_pct"] == 10.0
    assert worker.metric("streamtags_coupon_triggers_total") == 1
    assert worker.metric("streamtags_deadline_fire_delay_seconds_count") >= 1
    print(
        "deadline fire delay sum (s):", worker.metric("streamtags_deadline_fire_delay_seconds_sum")
    )


async def test_an_order_before_the_deadline_cancels_the_coupon(
    names: Names, worker_factory: Callable[..., Worker]
) -> None:
    worker = worker_factory(**SCALE)
    worker.start()
    await produce(names.topic("browse"), [cart("buyer", "cart-b")])
    time.sleep(1.0)
    await produce(
        names.topic("orders"),
        [event("buyer", "buyer-o1", order_id="o1", cart_id="cart-b", status="created", amount=50)],
    )
    # a control user abandons a cart later; once its trigger is out, the buyer's deadline
    # (earlier) has long passed
    await produce(names.topic("browse"), [cart("control", "cart-c")])
    triggers = await consume(names.topic("coupon-triggers"), count=1, timeout_s=25, settle_s=2)
    assert [t["user_id"] for t in triggers] == ["control"]
    client = TagClient(redis_url=REDIS_URL, prefix=f"{names.prefix}:user:")
    assert "cart_abandoned" not in tag_names(client, "buyer")


async def test_risk_records_are_readable_with_only_the_json_schema(
    names: Names, worker_factory: Callable[..., Worker]
) -> None:
    worker = worker_factory(**SCALE)
    worker.start()
    await produce(names.topic("logins"), logins("schema-user"))
    records = await consume(names.topic("risk-tags"), count=1, timeout_s=30)
    schema = json.loads((ROOT / "schemas" / "tag-change.schema.json").read_text())
    jsonschema.validate(records[0], schema)
    assert records[0]["category"] == "risk"


async def test_redis_cli_reads_a_users_tags_by_the_documented_layout(
    names: Names, worker_factory: Callable[..., Worker]
) -> None:
    worker = worker_factory(**SCALE)
    worker.start()
    await produce(names.topic("orders"), failed_payments("cli-user"))
    key = f"{names.prefix}:user:cli-user"

    def fields() -> dict[str, dict[str, Any]]:
        out = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "--raw", "HGETALL", key],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        return {out[i]: json.loads(out[i + 1]) for i in range(0, len(out) - 1, 2)}

    await wait_for(lambda: "frustrated" in fields(), timeout_s=30, what="the hash field")
    value = fields()["frustrated"]
    assert value["expires_at_ms"] > now_ms()
    assert value["category"] == "service"
    assert value["evidence"]["figures"]["failed_payments"] == 3
    ttl = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "PTTL", key], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert int(ttl) > 0  # the key lapses with its last tag


async def test_a_worker_killed_mid_stream_loses_nothing_and_sends_no_trigger_twice(
    names: Names, worker_factory: Callable[..., Worker], tmp_path: Path
) -> None:
    env = {**SCALE, "STREAMTAGS_STORE": "rocksdb://"}
    worker = worker_factory(**env)
    worker.start()
    users = [f"kill-{i}" for i in range(30)]
    await produce(names.topic("browse"), [cart(u, f"cart-{u}") for u in users[:15]])
    time.sleep(CART_DEADLINE_S + 1.5)  # the first carts fire and their triggers go out
    await produce(names.topic("browse"), [cart(u, f"cart-{u}") for u in users[15:]])
    time.sleep(0.3)
    worker.stop(signal.SIGKILL)  # mid-stream: some carts fired, some pending, some unread
    await produce(names.topic("logins"), logins("while-down"))

    worker.start()
    triggers = await consume(names.topic("coupon-triggers"), count=30, timeout_s=40, settle_s=3)
    by_user: dict[str, int] = {}
    for trigger in triggers:
        by_user[trigger["user_id"]] = by_user.get(trigger["user_id"], 0) + 1
    assert set(by_user) == set(users), (
        f"missing: {set(users) - set(by_user)}\n{worker.log()[-6000:]}"
    )
    assert all(count == 1 for count in by_user.values()), by_user
    client = TagClient(redis_url=REDIS_URL, prefix=f"{names.prefix}:user:")
    await wait_for(
        lambda: "ip_hopping" in tag_names(client, "while-down"),
        timeout_s=30,
        what="events produced while the worker was down",
    )
    assert all("cart_abandoned" in tag_names(client, u) for u in users)
    assert worker.starts == 2 and worker.alive()


async def test_a_redis_outage_does_not_stop_tagging_and_redis_catches_up(
    names: Names, worker_factory: Callable[..., Worker], tmp_path: Path
) -> None:
    from tests.integration.conftest import free_port

    port = free_port()

    def start_redis() -> subprocess.Popen[bytes]:
        server = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        ping = redis.Redis(port=port, socket_timeout=0.2)
        for _ in range(50):
            try:
                ping.ping()
                return server
            except redis.RedisError:
                time.sleep(0.1)
        raise AssertionError("the test's redis-server did not start")

    server = start_redis()
    url = f"redis://127.0.0.1:{port}/0"
    worker = worker_factory(**SCALE, STREAMTAGS_REDIS_URL=url)
    worker.start()
    client = TagClient(redis_url=url, prefix=f"{names.prefix}:user:", timeout_ms=200)
    try:
        await produce(names.topic("orders"), failed_payments("before"))
        await wait_for(
            lambda: "frustrated" in tag_names(client, "before"),
            timeout_s=30,
            what="a tag while Redis is up",
        )
        server.terminate()
        server.wait()

        await produce(names.topic("logins"), logins("during"))
        changes = await consume(names.topic("risk-tags"), count=1, timeout_s=30)
        assert [c["user_id"] for c in changes] == ["during"]  # Kafka output did not wait
        assert client.tags("during") == []  # fail-open lookup while Redis is down
        await wait_for(
            lambda: worker.metric("streamtags_redis_errors_total") >= 1,
            timeout_s=15,
            what="the worker noticing the outage",
        )
        assert worker.alive()

        server = start_redis()
        await produce(names.topic("browse"), [event("after", "after-1", action="page_view")])
        await wait_for(
            lambda: "ip_hopping" in tag_names(client, "during"),
            timeout_s=30,
            what="Redis catching up after the outage",
        )
    finally:
        server.terminate()
        server.wait()


async def test_when_one_of_two_workers_dies_the_other_fires_its_deadlines(
    names: Names, worker_factory: Callable[..., Worker]
) -> None:
    first, second = await two_workers(worker_factory)
    users = [f"pair-{i}" for i in range(24)]
    await produce(names.topic("browse"), [cart(u, f"cart-{u}") for u in users])
    time.sleep(1.5)  # read and flushed; the deadlines are still 2 s away
    first.stop(signal.SIGKILL)
    await wait_for(
        lambda: len(owned(second)) == 4,
        timeout_s=60,
        what="the survivor taking over every partition",
    )
    triggers = await consume(names.topic("coupon-triggers"), count=24, timeout_s=40, settle_s=3)
    by_user: dict[str, int] = {}
    for trigger in triggers:
        by_user[trigger["user_id"]] = by_user.get(trigger["user_id"], 0) + 1
    assert set(by_user) == set(users), f"missing {set(users) - set(by_user)}"
    assert all(count == 1 for count in by_user.values()), by_user
