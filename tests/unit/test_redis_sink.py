"""The Redis sink on a real Redis: versioned writes, tombstones, revokes, pressure, catch-up.

Redis runs at 127.0.0.1:6379 (the test stack); every test uses its own key
prefix and deletes its keys afterwards. Tests that need Redis to go away and
come back run their own ``redis-server`` on a free port.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from streamtags.contracts.records import iso_ms
from streamtags.engine.partition import Engine
from streamtags.live.metrics import Metrics
from streamtags.live.tagger import LiveTagger, Senders
from streamtags.live.twins import MemoryStore, MemoryTagSink, MemoryTopic, MemoryTriggerLedger
from streamtags.rulebook.loader import load_rules
from streamtags.serving.lookup import TagClient
from streamtags.serving.redis_layout import decode_tags, marker_key, user_key
from streamtags.serving.redis_sink import RedisSink
from tests.redis_server import RedisServer

REDIS_URL = "redis://127.0.0.1:6379/0"
ROOT = Path(__file__).resolve().parents[2]
HOUR = 3_600_000
#: Event time near the wall clock: the sink drops values whose expiry passed the wall clock.
T0 = (int(time.time() * 1000) // 1000) * 1000


def change(
    user: str, action: str = "applied", at_ms: int = T0, *, tag: str = "ip_hopping", **extra: Any
) -> dict[str, Any]:
    """A tag change as the engine emits it, at event time ``at_ms``, TTL one hour."""
    return {
        "change_id": f"{user}-{tag}-{action}-{at_ms}",
        "user_id": user,
        "tag": tag,
        "action": action,
        "category": "risk",
        "severity": "high",
        "ts": iso_ms(at_ms),
        "emitted_at": iso_ms(at_ms),
        "expires_at": None if action == "cleared" else iso_ms(at_ms + HOUR),
        "rule": {"name": tag, "version": 1},
        "evidence": {"reason": f"{action} at {at_ms}", "figures": {}, "event_ids": []},
        **extra,
    }


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test's own; its keys (user hashes, markers) go afterwards."""
    name = f"ut{uuid.uuid4().hex[:10]}:user:"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{name}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
async def sink(prefix: str) -> AsyncIterator[RedisSink]:
    made = RedisSink(redis_url=REDIS_URL, prefix=prefix, timeout_ms=1000)
    yield made
    await made.close()


def fields(prefix: str, user: str) -> dict[str, dict[str, Any]]:
    """The user's hash as stored, each value decoded."""
    raw = redis.Redis.from_url(REDIS_URL).hgetall(user_key(user, prefix=prefix))
    return {
        key.decode() if isinstance(key, bytes) else key: orjson.loads(value)
        for key, value in raw.items()
    }


def live(prefix: str, user: str) -> list[str]:
    """The user's tags as the lookup client returns them."""
    with TagClient(redis_url=REDIS_URL, prefix=prefix, timeout_ms=1000) as client:
        return [tag["tag"] for tag in client.tags(user)]


# -- versions and tombstones -------------------------------------------------------


async def test_a_write_older_than_the_field_is_rejected_and_the_newer_value_stays(
    sink: RedisSink, prefix: str
) -> None:
    sink.add([change("ann", "applied", T0 + 2000)])
    assert await sink.flush()
    sink.add([change("ann", "renewed", T0 + 1000)])  # late: older than what Redis holds
    assert await sink.flush()
    stored = fields(prefix, "ann")["ip_hopping"]
    assert stored["version"] == T0 + 2000
    assert stored["evidence"]["reason"] == f"applied at {T0 + 2000}"
    assert (sink.written_fields, sink.rejected_fields) == (1, 1)


async def test_a_tombstone_stops_an_older_applied_from_resurrecting_the_tag(
    sink: RedisSink, prefix: str
) -> None:
    sink.add([change("ann", "applied", T0)])
    await sink.flush()
    sink.add([change("ann", "cleared", T0 + 1000)])
    await sink.flush()
    sink.add([change("ann", "applied", T0)])  # replayed after the clear
    await sink.flush()
    tombstone = fields(prefix, "ann")["ip_hopping"]
    assert tombstone["cleared"] is True and tombstone["version"] == T0 + 1000
    assert tombstone["until_ms"] == T0 + HOUR  # the former expiry
    assert live(prefix, "ann") == []


async def test_readers_never_return_a_tombstone(sink: RedisSink, prefix: str) -> None:
    """The documented rule (``expires_at_ms`` after the reader's clock) skips tombstones."""
    sink.add([change("ann", "applied", T0, tag="frustrated"), change("ann", "applied", T0)])
    sink.add([change("ann", "cleared", T0 + 1, tag="frustrated")])
    await sink.flush()
    stored = fields(prefix, "ann")
    assert set(stored) == {"frustrated", "ip_hopping"}
    assert stored["frustrated"]["expires_at_ms"] == 0
    now_ms = int(time.time() * 1000)
    assert [v["tag"] for v in stored.values() if v["expires_at_ms"] > now_ms] == ["ip_hopping"]
    assert live(prefix, "ann") == ["ip_hopping"]
    raw = {tag: orjson.dumps(value) for tag, value in stored.items()}
    assert [t["tag"] for t in decode_tags(raw, now_ms=now_ms)] == ["ip_hopping"]


async def test_a_clear_redis_knew_nothing_about_lasts_the_clear_time_plus_the_tags_ttl(
    prefix: str,
) -> None:
    sink = RedisSink(
        redis_url=REDIS_URL, prefix=prefix, timeout_ms=1000, ttl_ms_of_tag={"ip_hopping": 2 * HOUR}
    )
    sink.add([change("ann", "cleared", T0)])
    await sink.flush()
    await sink.close()
    assert fields(prefix, "ann")["ip_hopping"]["until_ms"] == T0 + 2 * HOUR
    pttl = redis.Redis.from_url(REDIS_URL).pttl(user_key("ann", prefix=prefix))
    assert 0 < pttl <= 2 * HOUR  # the key goes with its last tombstone


# -- queue: revokes and pressure -------------------------------------------------------


async def test_a_revoke_drops_queued_writes_of_the_revoked_partitions_only(prefix: str) -> None:
    partition = {"ann": 0, "bob": 1, "cid": 2}
    sink = RedisSink(
        redis_url=REDIS_URL, prefix=prefix, timeout_ms=1000, partition_of=partition.__getitem__
    )
    sink.add([change(user) for user in partition])
    assert sink.drop_partitions([1]) == 1
    await sink.flush()
    await sink.close()
    assert {user: live(prefix, user) for user in partition} == {
        "ann": ["ip_hopping"],
        "bob": [],
        "cid": ["ip_hopping"],
    }


async def test_the_tagger_drops_queued_sink_writes_when_it_gives_up_a_partition() -> None:
    sink = MemoryTagSink(partition_of=lambda user: 1 if user.startswith("p1") else 0)
    topic = MemoryTopic("any")
    tagger = LiveTagger(
        Engine(load_rules(ROOT / "rules"), lateness_ms=1000),
        MemoryStore(),
        senders=Senders(tags=topic, risk_tags=topic, coupon_triggers=topic, dead_letter=topic),
        sink=sink,
        guard=MemoryTriggerLedger(),
        metrics=Metrics(),
        commit_interval_s=1.0,
    )
    await tagger.assign([0, 1])
    sink.fault.down()
    sink.add([change("p0-ann"), change("p1-bob")])
    await tagger.assign([0])
    sink.fault.up()
    await sink.flush()
    assert set(sink.tags) == {"p0-ann"}


async def test_clears_survive_queue_pressure_and_shed_sets_ask_for_a_resync(prefix: str) -> None:
    sink = RedisSink(redis_url=REDIS_URL, prefix=prefix, timeout_ms=1000, max_queued_users=10)
    sink.add([change("cleared-first", "cleared", T0)])  # the oldest queued user
    sink.add([change(f"set-{i}") for i in range(30)])
    sink.add([change(f"cleared-{i}", "cleared", T0) for i in range(15)])
    assert sink.resync_needed
    assert sink.queued_users >= 16  # every clear is still queued, past the cap
    assert await sink.drain()
    await sink.close()
    for user in ["cleared-first", *(f"cleared-{i}" for i in range(15))]:
        assert fields(prefix, user)["ip_hopping"]["cleared"] is True, user


# -- catch-up ------------------------------------------------------------------------


async def test_a_catch_up_goes_out_in_chunks_and_a_flush_sends_a_bounded_share(
    prefix: str,
) -> None:
    sink = RedisSink(
        redis_url=REDIS_URL, prefix=prefix, timeout_ms=1000, chunk_users=10, flush_max_users=30
    )
    users = [f"u{i:03d}" for i in range(95)]
    sink.add([change(user) for user in users])
    assert await sink.flush()
    assert (sink.chunks_sent, sink.queued_users) == (3, 65)
    assert await sink.drain()
    assert (sink.chunks_sent, sink.queued_users) == (10, 0)
    await sink.close()
    assert all(live(prefix, user) == ["ip_hopping"] for user in users)


# -- outages and data loss -------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    made = RedisServer(tmp_path)
    made.start()
    yield made
    made.stop()


async def test_an_outage_logs_one_warning_backs_off_and_logs_one_info_when_redis_is_back(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="streamtags.redis")
    sink = RedisSink(redis_url=server.url, prefix="p:", timeout_ms=200)
    assert await sink.check() is False
    server.stop()
    sink.add([change("ann")])
    assert await sink.flush() is False
    errors = sink.errors
    assert await sink.flush() is False  # backing off: Redis is not even tried
    assert sink.errors == errors
    for _ in range(3):
        assert await sink.check() is False  # the probe ignores the backoff, and fails
    server.start()
    assert await sink.check() is True  # answering again, but empty: the marker is gone
    assert sink.resync_needed
    assert await sink.flush()
    await sink.close()
    records = [r for r in caplog.records if r.name == "streamtags.redis"]
    assert [r.levelname for r in records] == ["WARNING", "INFO"], [r.message for r in records]
    assert sink.errors >= 4


async def test_the_marker_vanishing_means_redis_lost_data(sink: RedisSink, prefix: str) -> None:
    assert await sink.check() is False  # sets this run's marker
    assert await sink.check() is False  # still there
    redis.Redis.from_url(REDIS_URL).delete(marker_key(sink.run_id, prefix=prefix))
    assert await sink.check() is True
    assert sink.resync_needed
    assert await sink.check() is False  # set again


async def test_a_marker_behind_what_this_run_wrote_means_redis_went_back_to_a_snapshot(
    sink: RedisSink, prefix: str
) -> None:
    for _ in range(3):
        assert await sink.check() is False
    redis.Redis.from_url(REDIS_URL).set(marker_key(sink.run_id, prefix=prefix), b"1")
    assert await sink.check() is True
