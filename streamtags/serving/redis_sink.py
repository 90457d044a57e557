"""Writing tag changes to Redis: batched, atomic per user, only on change, outage-proof.

Each batch of tag changes becomes, per user, one call of the layout's Lua
script (all of that user's changes in one atomic step), and all users' calls
go in one pipeline. Calls have a short timeout. When Redis fails, the
changes stay queued (newest per user and tag wins) and are retried with the
next batch or tick, so tagging to Kafka never waits for Redis and Redis
catches up when it is back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import redis
import redis.asyncio as aioredis

from streamtags.contracts.events import parse_event_time
from streamtags.serving.redis_layout import APPLY_SCRIPT, encode_tag, user_key

__all__ = ["RedisSink", "TriggerGuard"]

log = logging.getLogger("streamtags.redis")

#: Users queued while Redis is away; beyond this the oldest queued users are
#: dropped (their tags return with their next change or renewal).
MAX_QUEUED_USERS = 500_000


class RedisSink:
    """Applies tag changes to the per-user hashes."""

    def __init__(self, *, redis_url: str, prefix: str, timeout_ms: int) -> None:
        self.prefix = prefix
        self._redis = aioredis.Redis.from_url(
            redis_url,
            socket_timeout=timeout_ms / 1000,
            socket_connect_timeout=timeout_ms / 1000,
        )
        self._script = self._redis.register_script(APPLY_SCRIPT)
        #: user -> tag -> hash value (b"" deletes); waits for the next successful write
        self._queued: dict[str, dict[str, bytes]] = {}
        self._retry_at = 0.0
        self.errors = 0

    @property
    def queued_users(self) -> int:
        """Users whose changes have not reached Redis yet."""
        return len(self._queued)

    def add(self, changes: Iterable[Mapping[str, Any]]) -> None:
        """Queue changes (applied/renewed set the tag, cleared deletes it)."""
        for change in changes:
            fields = self._queued.setdefault(change["user_id"], {})
            if change["action"] == "cleared":
                fields[change["tag"]] = b""
            else:
                expires_ms = parse_event_time(change["expires_at"])
                fields[change["tag"]] = encode_tag(
                    change, expires_at_ms=expires_ms, applied_at=change["ts"]
                )
        while len(self._queued) > MAX_QUEUED_USERS:
            del self._queued[next(iter(self._queued))]

    async def flush(self) -> bool:
        """Write what is queued; False (and keep it queued) if Redis failed."""
        if not self._queued or time.monotonic() < self._retry_at:
            return not self._queued
        batch, self._queued = self._queued, {}
        now_ms = int(time.time() * 1000)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for user_id, fields in batch.items():
                    args: list[Any] = [now_ms]
                    for tag, value in fields.items():
                        args.extend((tag, value))
                    await self._script(
                        keys=[user_key(user_id, prefix=self.prefix)], args=args, client=pipe
                    )
                await pipe.execute()
        except (redis.RedisError, OSError, TimeoutError) as exc:
            self.errors += 1
            for user_id, fields in batch.items():  # keep newer queued values on top
                batch_fields = dict(fields)
                batch_fields.update(self._queued.get(user_id, {}))
                self._queued[user_id] = batch_fields
            self._retry_at = time.monotonic() + 1.0
            log.warning("redis write failed (%s); %d users queued", exc, len(self._queued))
            return False
        return True

    async def close(self) -> None:
        """Release connections."""
        await self._redis.aclose()


class TriggerGuard:
    """Keeps a coupon trigger from being sent twice across crashes and replays.

    Before sending, each trigger id is claimed with ``SET key pending NX``;
    after the broker confirmed delivery it becomes ``sent``. A replayed
    trigger whose key says ``sent`` is skipped; one left ``pending`` (the
    worker died between claim and delivery) is sent again, so a trigger is
    never lost. If Redis is unreachable the guard lets everything through:
    consumers still deduplicate by ``trigger_id``.
    """

    def __init__(self, *, redis_url: str, prefix: str, timeout_ms: int, ttl_s: int) -> None:
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._redis = aioredis.Redis.from_url(
            redis_url,
            socket_timeout=timeout_ms / 1000,
            socket_connect_timeout=timeout_ms / 1000,
        )

    async def claim(self, trigger_ids: list[str]) -> set[str]:
        """The ids that should be sent now."""
        if not trigger_ids:
            return set()
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for trigger_id in trigger_ids:
                    pipe.set(self.prefix + trigger_id, b"pending", nx=True, ex=self.ttl_s)
                    pipe.get(self.prefix + trigger_id)
                replies = await pipe.execute()
        except (redis.RedisError, OSError, TimeoutError) as exc:
            log.warning(
                "trigger guard unavailable (%s); sending %d triggers unguarded",
                exc,
                len(trigger_ids),
            )
            return set(trigger_ids)
        send = set()
        for index, trigger_id in enumerate(trigger_ids):
            claimed, value = replies[2 * index], replies[2 * index + 1]
            if claimed or value != b"sent":
                send.add(trigger_id)
        return send

    async def mark_sent(self, trigger_ids: list[str]) -> None:
        """Record that these triggers reached Kafka."""
        if not trigger_ids:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for trigger_id in trigger_ids:
                    pipe.set(self.prefix + trigger_id, b"sent", ex=self.ttl_s)
                await pipe.execute()
        except (redis.RedisError, OSError, TimeoutError) as exc:
            log.warning("could not mark %d triggers sent: %s", len(trigger_ids), exc)

    async def close(self) -> None:
        """Release connections."""
        await self._redis.aclose()
