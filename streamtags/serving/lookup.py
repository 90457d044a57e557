"""The lookup client the checkout service uses: ``tags(user_id)`` from Redis.

One ``HGETALL`` per call, a short timeout, and fail-open: when Redis is slow
or down, the call returns the ``default`` (no tags) instead of raising, so
checkout never waits on tagging. Importing this module does not import Faust.

    client = TagClient(redis_url="redis://127.0.0.1:6379/0")
    for tag in client.tags("u42"):
        print(tag["tag"], tag["expires_at"])

    async with AsyncTagClient() as client:
        await client.tags("u42")
"""

from __future__ import annotations

import logging
import time
from types import TracebackType
from typing import Any

import redis
import redis.asyncio as aioredis

from streamtags.serving.redis_layout import DEFAULT_PREFIX, decode_tags, user_key

__all__ = ["AsyncTagClient", "Tag", "TagClient"]

Tag = dict[str, Any]
"""One live tag as stored (see :mod:`streamtags.serving.redis_layout`)."""

log = logging.getLogger("streamtags.serving.lookup")


def _timeouts(timeout_ms: int) -> dict[str, Any]:
    return {"socket_timeout": timeout_ms / 1000, "socket_connect_timeout": timeout_ms / 1000}


class TagClient:
    """Synchronous client. Thread-safe (redis-py pools connections)."""

    def __init__(
        self,
        *,
        redis_url: str = "redis://127.0.0.1:6379/0",
        prefix: str = DEFAULT_PREFIX,
        timeout_ms: int = 50,
    ) -> None:
        self.prefix = prefix
        self._redis = redis.Redis.from_url(redis_url, **_timeouts(timeout_ms))

    def tags(self, user_id: str, *, default: list[Tag] | None = None) -> list[Tag]:
        """The user's live tags (expired ones never), or ``default`` if Redis fails."""
        try:
            fields = self._redis.hgetall(user_key(user_id, prefix=self.prefix))
        except redis.RedisError as exc:
            log.warning("tag lookup for %s failed open: %s", user_id, exc)
            return [] if default is None else default
        return decode_tags(fields, now_ms=int(time.time() * 1000))

    def close(self) -> None:
        """Release the connection pool."""
        self._redis.close()

    def __enter__(self) -> TagClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncTagClient:
    """asyncio client, same contract as :class:`TagClient`."""

    def __init__(
        self,
        *,
        redis_url: str = "redis://127.0.0.1:6379/0",
        prefix: str = DEFAULT_PREFIX,
        timeout_ms: int = 50,
    ) -> None:
        self.prefix = prefix
        self._redis = aioredis.Redis.from_url(redis_url, **_timeouts(timeout_ms))

    async def tags(self, user_id: str, *, default: list[Tag] | None = None) -> list[Tag]:
        """The user's live tags (expired ones never), or ``default`` if Redis fails."""
        try:
            fields = await self._redis.hgetall(user_key(user_id, prefix=self.prefix))
        except (redis.RedisError, TimeoutError, OSError) as exc:
            log.warning("tag lookup for %s failed open: %s", user_id, exc)
            return [] if default is None else default
        return decode_tags(fields, now_ms=int(time.time() * 1000))

    async def close(self) -> None:
        """Release the connection pool."""
        await self._redis.aclose()

    async def __aenter__(self) -> AsyncTagClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
