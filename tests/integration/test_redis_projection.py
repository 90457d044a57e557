"""Redis is a projection that heals itself: a real worker restores live tags Redis lost,
and ``streamtags redis resync`` restores them from the state changelog.

Issue 9, measured before: Redis killed and restarted empty lost 40 of 80 users'
``ip_hopping`` tags for good.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from streamtags.serving.lookup import TagClient
from streamtags.serving.projection import RESTORED_REASON
from streamtags.serving.redis_layout import user_key
from tests.integration.conftest import (
    REDIS_URL,
    ROOT,
    Names,
    Worker,
    produce,
    wait_for,
)
from tests.integration.test_live import SCALE, logins
from tests.redis_server import RedisServer

#: The issue's bound: every live tag back within this long of Redis answering again.
RESTORE_WITHIN_S = 10.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    made = RedisServer(tmp_path)
    made.start()
    yield made
    made.kill()


def marked(url: str, prefix: str) -> bool:
    """Whether a worker run's marker is in Redis (set on the worker's first projection tick)."""
    return any(redis.Redis.from_url(url).scan_iter(match=f"{prefix}\x00run:*"))


def tagged(client: TagClient, users: list[str]) -> list[str]:
    """The users that have ``ip_hopping`` in Redis, as checkout reads it."""
    return [u for u in users if any(t["tag"] == "ip_hopping" for t in client.tags(u))]


async def test_a_redis_restarted_empty_gets_every_live_tag_back_within_10_s(
    names: Names, worker_factory: Callable[..., Worker], server: RedisServer
) -> None:
    worker = worker_factory(**SCALE, STREAMTAGS_REDIS_URL=server.url)
    worker.start()
    prefix = f"{names.prefix}:user:"
    client = TagClient(redis_url=server.url, prefix=prefix, timeout_ms=500)
    users = [f"hop-{i}" for i in range(12)]
    await produce(names.topic("logins"), [m for user in users for m in logins(user)])
    await wait_for(lambda: tagged(client, users) == users, timeout_s=40, what="every tag")
    await wait_for(lambda: marked(server.url, prefix), timeout_s=10, what="the run's marker")

    server.kill()  # no persistence: it comes back empty, as in the measured incident
    server.start()
    back_at = time.monotonic()
    assert tagged(client, users) == []
    await wait_for(
        lambda: tagged(client, users) == users, timeout_s=30, what="the tags back in Redis"
    )
    elapsed_s = time.monotonic() - back_at
    print(f"\nRedis restarted empty: all {len(users)} live tags back in {elapsed_s:.2f} s")
    assert elapsed_s <= RESTORE_WITHIN_S, worker.log()[-4000:]
    [tag] = client.tags(users[0])
    assert tag["evidence"]["reason"] == RESTORED_REASON
    assert "Redis lost data" in worker.log()


async def test_the_worker_restores_tags_whose_keys_were_deleted_with_its_marker(
    names: Names, worker_factory: Callable[..., Worker]
) -> None:
    """The same on the shared Redis: this test's keys (hashes and marker) deleted."""
    worker = worker_factory(**SCALE)
    worker.start()
    prefix = f"{names.prefix}:user:"
    client = TagClient(redis_url=REDIS_URL, prefix=prefix, timeout_ms=500)
    users = [f"del-{i}" for i in range(6)]
    await produce(names.topic("logins"), [m for user in users for m in logins(user)])
    await wait_for(lambda: tagged(client, users) == users, timeout_s=40, what="every tag")
    await wait_for(lambda: marked(REDIS_URL, prefix), timeout_s=10, what="the run's marker")

    deleted = delete_prefix(prefix)
    gone_at = time.monotonic()
    assert deleted == len(users) + 1  # the users' hashes and the worker's marker
    await wait_for(
        lambda: tagged(client, users) == users, timeout_s=30, what="the tags back in Redis"
    )
    elapsed_s = time.monotonic() - gone_at
    print(f"\nkeys deleted: all {len(users)} live tags back in {elapsed_s:.2f} s")
    assert elapsed_s <= RESTORE_WITHIN_S


def delete_prefix(prefix: str) -> int:
    """Delete every key of ``prefix``: only this test's data."""
    shared = redis.Redis.from_url(REDIS_URL)
    keys = list(shared.scan_iter(match=f"{prefix}*"))
    if keys:
        shared.delete(*keys)
    return len(keys)


def resync(names: Names) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamtags", "redis", "resync", "--timeout-s", "60"],
        env={**os.environ, **names.env(), **SCALE},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_redis_resync_restores_deleted_tags_from_the_changelog_next_to_a_worker(
    names: Names, worker_factory: Callable[..., Worker]
) -> None:
    worker = worker_factory(**SCALE)
    worker.start()
    prefix = f"{names.prefix}:user:"
    client = TagClient(redis_url=REDIS_URL, prefix=prefix, timeout_ms=500)
    users = [f"cli-{i}" for i in range(8)]
    await produce(names.topic("logins"), [m for user in users for m in logins(user)])
    await wait_for(lambda: tagged(client, users) == users, timeout_s=40, what="every tag")
    time.sleep(1.5)  # past a commit interval: the states are on the changelog

    # Only the users' hashes go: the worker's marker stays, so the worker sees nothing
    # wrong and the command alone brings the tags back.
    redis.Redis.from_url(REDIS_URL).delete(*(user_key(u, prefix=prefix) for u in users))
    assert tagged(client, users) == []
    first = resync(names)
    assert first.returncode == 0, first.stderr
    print(f"\n{first.stdout.strip()}")
    assert f"{len(users)} live tags of {len(users)} users: {len(users)} restored" in first.stdout
    assert tagged(client, users) == users
    assert client.tags(users[0])[0]["evidence"]["reason"] == RESTORED_REASON

    again = resync(names)  # idempotent: nothing to write the second time
    assert again.returncode == 0, again.stderr
    assert f"0 restored, {len(users)} already current" in again.stdout
    assert worker.alive()
