"""Projecting live tags from state into a real Redis: restores fill gaps, never overwrite.

Redis runs at 127.0.0.1:6379 (the test stack); every test uses its own key
prefix and deletes its keys afterwards. States live in the in-memory store twin.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from streamtags.contracts.records import iso_ms
from streamtags.engine.output import digest
from streamtags.engine.partition import Engine, Partition
from streamtags.engine.state import LiveTag, UserState
from streamtags.live.twins import MemoryStore
from streamtags.rulebook.loader import load_rules
from streamtags.serving.projection import RESTORED_REASON, Projector
from streamtags.serving.redis_layout import user_key
from streamtags.serving.redis_sink import RedisSink

REDIS_URL = "redis://127.0.0.1:6379/0"
ROOT = Path(__file__).resolve().parents[2]
ENGINE = Engine(load_rules(ROOT / "rules"), lateness_ms=1000)
HOUR = 3_600_000
#: Event time near the wall clock: Redis drops values whose expiry passed the wall clock.
T0 = (int(time.time() * 1000) // 1000) * 1000
#: The states' settled time (epoch ms): the version of every restore.
SETTLED = T0 + 5000


def state(*tags: str, applied_ms: int = T0, expires_ms: int = T0 + HOUR) -> UserState:
    """A state holding ``tags``, settled at SETTLED."""
    made = UserState()
    made.latest_ts = made.processed_to_ms = SETTLED
    for tag in tags:
        made.tags[tag] = LiveTag(applied_ms, expires_ms)
    return made


@dataclass
class Worker:
    """What the projector sees of a worker: owned partitions and their stored states."""

    store: MemoryStore = field(default_factory=MemoryStore)
    owned: dict[int, Partition] = field(default_factory=dict)

    def own(self, number: int) -> Partition:
        self.owned[number] = ENGINE.partition(number=number)
        return self.owned[number]

    def stored(self, number: int, user: str, user_state: UserState) -> None:
        self.store.local.setdefault(number, {})[user.encode()] = user_state.to_bytes(
            ENGINE.features
        )


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"ut{uuid.uuid4().hex[:10]}:user:"
    yield name
    delete_keys(name)


def delete_keys(prefix: str) -> int:
    """Delete every key of ``prefix`` (user hashes and run markers), as a data loss would."""
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()
    return len(keys)


@pytest.fixture
async def sink(prefix: str) -> AsyncIterator[RedisSink]:
    made = RedisSink(redis_url=REDIS_URL, prefix=prefix, timeout_ms=1000)
    yield made
    await made.close()


def projector(sink: RedisSink, worker: Worker) -> Projector:
    return Projector(sink, engine=ENGINE, owned=lambda: worker.owned, scan=worker.store.scan)


def fields(prefix: str, user: str) -> dict[str, dict[str, Any]]:
    raw = redis.Redis.from_url(REDIS_URL).hgetall(user_key(user, prefix=prefix))
    return {
        key.decode() if isinstance(key, bytes) else key: orjson.loads(value)
        for key, value in raw.items()
    }


def change(user: str, action: str, at_ms: int, tag: str = "ip_hopping") -> dict[str, Any]:
    """A live tag change, TTL one hour."""
    return {
        "change_id": f"live-{action}-{at_ms}",
        "user_id": user,
        "tag": tag,
        "action": action,
        "category": "risk",
        "severity": "high",
        "ts": iso_ms(at_ms),
        "expires_at": None if action == "cleared" else iso_ms(at_ms + HOUR),
        "rule": {"name": tag, "version": 1},
        "evidence": {"reason": "live", "figures": {"countries": 2}, "event_ids": ["e1"]},
    }


async def test_every_live_tag_of_the_owned_partitions_is_restored_from_state(
    sink: RedisSink, prefix: str
) -> None:
    worker = Worker()
    worker.own(0)
    worker.stored(0, "ann", state("ip_hopping"))
    worker.stored(0, "bob", state("ip_hopping", "frustrated"))
    worker.stored(0, "cid", state())
    worker.stored(1, "dan", state("ip_hopping"))  # partition 1 is another worker's
    done = await projector(sink, worker).tick()
    assert done is not None and (done.users, done.tags, done.complete) == (2, 3, True)
    assert set(fields(prefix, "bob")) == {"ip_hopping", "frustrated"}
    assert fields(prefix, "cid") == {} and fields(prefix, "dan") == {}
    restored = fields(prefix, "ann")["ip_hopping"]
    rule = ENGINE.tags.by_tag["ip_hopping"]
    assert restored == {
        "tag": "ip_hopping",
        "category": rule.category,
        "severity": rule.severity,
        "applied_at": iso_ms(T0),
        "expires_at": iso_ms(T0 + HOUR),
        "expires_at_ms": T0 + HOUR,
        "rule": {"name": rule.name, "version": rule.version},
        "evidence": {"reason": RESTORED_REASON, "figures": {}, "event_ids": []},
        "change_id": digest("ann", "ip_hopping", "applied", rule.version, T0),
        "version": SETTLED,
    }


async def test_projecting_twice_writes_nothing_the_second_time(
    sink: RedisSink, prefix: str
) -> None:
    worker = Worker()
    worker.own(0)
    worker.stored(0, "ann", state("ip_hopping"))
    project = projector(sink, worker)
    await project.project([0])
    before = fields(prefix, "ann")
    written = sink.written_fields
    await project.project([0])
    assert sink.written_fields == written and sink.rejected_fields == 1
    assert fields(prefix, "ann") == before


async def test_a_restore_never_overwrites_newer_data_nor_a_field_that_agrees_with_state(
    sink: RedisSink, prefix: str
) -> None:
    sink.add(
        [
            change("ann", "cleared", SETTLED + 1000),  # cleared after the state was settled
            change("bob", "applied", T0),  # what the state says, with its evidence
            change("cid", "applied", T0 - 60_000),  # a renewal since was lost
        ]
    )
    assert await sink.flush()
    worker = Worker()
    worker.own(0)
    for user in ("ann", "bob", "cid"):
        worker.stored(0, user, state("ip_hopping"))
    await projector(sink, worker).project([0])
    assert fields(prefix, "ann")["ip_hopping"]["cleared"] is True
    assert fields(prefix, "bob")["ip_hopping"]["evidence"]["reason"] == "live"
    cid = fields(prefix, "cid")["ip_hopping"]
    assert (cid["expires_at_ms"], cid["evidence"]["reason"]) == (T0 + HOUR, RESTORED_REASON)


async def test_the_projector_projects_again_only_when_redis_lost_its_data(
    sink: RedisSink, prefix: str
) -> None:
    worker = Worker()
    worker.own(0)
    worker.stored(0, "ann", state("ip_hopping"))
    project = projector(sink, worker)
    assert await project.tick() is not None  # a newly owned partition
    assert await project.tick() is None  # nothing lost, nothing to do
    assert delete_keys(prefix) == 2  # the user's hash and this run's marker
    done = await project.tick()
    assert done is not None and done.tags == 1
    assert set(fields(prefix, "ann")) == {"ip_hopping"}


async def test_a_cached_state_is_projected_rather_than_the_older_stored_one(
    sink: RedisSink, prefix: str
) -> None:
    worker = Worker()
    part = worker.own(0)
    worker.stored(0, "ann", state("ip_hopping"))
    part.states["ann"] = state("ip_hopping", expires_ms=T0 + 2 * HOUR)  # renewed, not flushed
    await projector(sink, worker).project([0])
    assert fields(prefix, "ann")["ip_hopping"]["expires_at_ms"] == T0 + 2 * HOUR


async def test_a_newly_owned_partition_is_projected_once_and_a_reassigned_one_again(
    sink: RedisSink, prefix: str
) -> None:
    worker = Worker()
    worker.own(0)
    worker.stored(0, "ann", state("ip_hopping"))
    worker.stored(1, "bob", state("ip_hopping"))
    project = projector(sink, worker)
    await project.tick()
    worker.own(1)
    done = await project.tick()
    assert done is not None and done.users == 1  # only partition 1's bob
    del worker.owned[0]
    worker.own(0)  # revoked and assigned again: a new engine partition
    done = await project.tick()
    assert done is not None and done.users == 1
    assert set(fields(prefix, "bob")) == {"ip_hopping"}
