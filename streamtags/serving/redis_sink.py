"""Writing tag changes to Redis: versioned, atomic per user, chunked, outage-proof.

Each tag change becomes a versioned field write (see
:mod:`~streamtags.serving.redis_layout`): ``applied``/``renewed`` set the
field, ``cleared`` writes a tombstone. Writes wait in a
:class:`~streamtags.serving.write_queue.WriteQueue` (the winning write per
user and tag) and go out per user as one call of the layout's Lua script,
``chunk_users`` users per pipeline, each call with a short timeout. So
tagging to Kafka never waits for Redis:

- :meth:`RedisSink.flush` (the tagger, after each batch and tick) sends at
  most ``flush_max_users`` users; :meth:`RedisSink.drain` (a worker timer)
  sends the rest of a catch-up, chunk by chunk, yielding between chunks.
- On a failure the chunk goes back to the queue and sending backs off
  exponentially (``BACKOFF_FIRST_S`` doubling up to ``BACKOFF_MAX_S``). One
  WARNING says Redis became unreachable, one INFO that it is back.
- :meth:`RedisSink.check` probes Redis once per call and moves this run's
  marker key on; the marker gone or behind means Redis lost data (restarted
  empty or from an older snapshot, flushed), and
  :attr:`RedisSink.resync_needed` turns on, as it does when the queue had
  to shed set writes under pressure. The
  worker's :class:`~streamtags.serving.projection.Projector` then projects
  every live tag from state again.
- :meth:`RedisSink.drop_partitions` forgets queued writes of partitions this
  worker no longer owns: their new owner projects them from state.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

import redis
import redis.asyncio as aioredis

from streamtags.contracts.events import parse_event_time
from streamtags.serving.redis_layout import (
    APPLY_SCRIPT,
    encode_tag,
    encode_tombstone,
    marker_key,
    user_key,
)
from streamtags.serving.write_queue import FieldWrite, UserWrites, WriteQueue

__all__ = [
    "BACKOFF_FIRST_S",
    "BACKOFF_MAX_S",
    "CHUNK_USERS",
    "DEFAULT_TOMBSTONE_MS",
    "FLUSH_MAX_USERS",
    "MARKER_TTL_MS",
    "MAX_QUEUED_USERS",
    "REDIS_OUTAGES",
    "RedisSink",
    "TriggerGuard",
]

log = logging.getLogger("streamtags.redis")

#: Users queued while Redis is away before set-only users are shed (clears never are).
MAX_QUEUED_USERS = 500_000
#: Users per pipeline.
CHUNK_USERS = 500
#: Users one :meth:`RedisSink.flush` sends at most (a busy batch's worth); the rest
#: waits for :meth:`RedisSink.drain` or the next flush.
FLUSH_MAX_USERS = 2_000
#: Seconds to wait after the first failure; doubled per failure up to BACKOFF_MAX_S.
BACKOFF_FIRST_S = 0.25
BACKOFF_MAX_S = 5.0
#: How long (ms) a run's marker outlives its last refresh.
MARKER_TTL_MS = 3_600_000
#: A tombstone's lifetime (ms after the clear) when its tag's TTL is unknown.
DEFAULT_TOMBSTONE_MS = 30 * 86_400_000

REDIS_OUTAGES: tuple[type[BaseException], ...] = (redis.RedisError, OSError, TimeoutError)
"""What a Redis call raises when Redis is unreachable, slow or refusing."""


def _one_partition(user_id: str) -> int:
    return 0


def _counter(held: bytes | None) -> int:
    """A marker's count; 0 when it is missing or unreadable."""
    try:
        return int(held or 0)
    except ValueError:
        return 0


class RedisSink:
    """Applies tag changes to the per-user hashes (see the module docstring).

    ``partition_of`` gives a user's input partition (for
    :meth:`drop_partitions`; by default every user is in partition 0) and
    ``ttl_ms_of_tag`` each tag's TTL in ms (a tombstone's upper bound when
    Redis held nothing for the field)."""

    def __init__(
        self,
        *,
        redis_url: str,
        prefix: str,
        timeout_ms: int,
        partition_of: Callable[[str], int] = _one_partition,
        ttl_ms_of_tag: Mapping[str, int] | None = None,
        max_queued_users: int = MAX_QUEUED_USERS,
        chunk_users: int = CHUNK_USERS,
        flush_max_users: int = FLUSH_MAX_USERS,
    ) -> None:
        self.prefix = prefix
        self.chunk_users = chunk_users
        self.flush_max_users = flush_max_users
        self.ttl_ms_of_tag = dict(ttl_ms_of_tag or {})
        self._redis = aioredis.Redis.from_url(
            redis_url,
            socket_timeout=timeout_ms / 1000,
            socket_connect_timeout=timeout_ms / 1000,
        )
        self._script = self._redis.register_script(APPLY_SCRIPT)
        self._queue = WriteQueue(max_users=max_queued_users, partition_of=partition_of)
        self._sending = asyncio.Lock()
        #: this run's marker id (see :meth:`check`)
        self.run_id = uuid.uuid4().hex
        #: the marker count this run last wrote and Redis confirmed (0: none yet)
        self._marker_written = 0
        #: True when Redis lost data or writes were shed: every live tag must be
        #: projected from state again (the projector resets it when it starts)
        self.resync_needed = False
        #: False from a failed call until the next successful one
        self.reachable = True
        self._down_since: float | None = None
        self._failures_while_down = 0
        self._backoff_s = 0.0
        self._retry_at = 0.0
        #: failed Redis calls
        self.errors = 0
        #: pipelines sent successfully
        self.chunks_sent = 0
        #: fields written, and fields the script kept because they held newer data
        self.written_fields = 0
        self.rejected_fields = 0

    @property
    def queued_users(self) -> int:
        """Users whose writes have not reached Redis yet."""
        return len(self._queue)

    # -- queueing ---------------------------------------------------------------------

    def add(self, changes: Iterable[Mapping[str, Any]]) -> None:
        """Queue tag changes: applied/renewed set the tag, cleared writes a tombstone;
        each write's version is the change's event time."""
        for change in changes:
            tag = change["tag"]
            version = parse_event_time(change["ts"])
            if change["action"] == "cleared":
                lifetime = version + self.ttl_ms_of_tag.get(tag, DEFAULT_TOMBSTONE_MS)
                value = encode_tombstone(tag, version=version)
                write = FieldWrite("clear", version, lifetime, value)
            else:
                expires_ms = parse_event_time(change["expires_at"])
                value = encode_tag(
                    change, expires_at_ms=expires_ms, applied_at=change["ts"], version=version
                )
                write = FieldWrite("set", version, expires_ms, value)
            self._queue.put(change["user_id"], tag, write)
        self._note_shed()

    def restore(self, user_id: str, writes: Mapping[str, FieldWrite]) -> None:
        """Queue tags projected again from ``user_id``'s state (``restore`` writes)."""
        for tag, write in writes.items():
            self._queue.put(user_id, tag, write)
        self._note_shed()

    def drop_partitions(self, numbers: Collection[int]) -> int:
        """Forget queued writes of users in partitions ``numbers`` (no longer owned
        here); return how many users were dropped."""
        dropped = self._queue.drop_partitions(numbers)
        if dropped:
            log.info("dropped queued Redis writes of %d users of revoked partitions", dropped)
        return dropped

    def _note_shed(self) -> None:
        shed = self._queue.take_shed()
        if shed:
            self.resync_needed = True
            log.warning(
                "Redis write queue full: shed the set writes of %d users (a resync restores "
                "them); %d users queued, %d with clears (never shed)",
                shed,
                len(self._queue),
                self._queue.users_with_clears(),
            )

    # -- sending ----------------------------------------------------------------------

    async def flush(self) -> bool:
        """Send up to ``flush_max_users`` queued users; False if Redis failed or is
        being backed off (the writes stay queued). Returns at once while a
        :meth:`drain` is sending: that drain takes these writes too."""
        if self._sending.locked():
            return True
        return await self._send_queued(self.flush_max_users, pause=False)

    async def drain(self) -> bool:
        """Send everything queued, one chunk per pipeline, yielding to the event loop
        between chunks; False if Redis failed or is being backed off."""
        return await self._send_queued(None, pause=True)

    async def _send_queued(self, limit: int | None, *, pause: bool) -> bool:
        if not self._queue:
            return True
        async with self._sending:
            if time.monotonic() < self._retry_at:
                return False
            sent = 0
            while self._queue and (limit is None or sent < limit):
                chunk = self._queue.take(self.chunk_users)
                if not await self._send(chunk):
                    return False
                sent += len(chunk)
                if pause:
                    await asyncio.sleep(0)
        return True

    async def _send(self, chunk: dict[str, UserWrites]) -> bool:
        now_ms = int(time.time() * 1000)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for user_id, writes in chunk.items():
                    args: list[Any] = [now_ms]
                    for tag, write in writes.items():
                        args.extend((write.op, tag, write.version, write.expires_ms, write.value))
                    await self._script(
                        keys=[user_key(user_id, prefix=self.prefix)], args=args, client=pipe
                    )
                replies = await pipe.execute()
        except REDIS_OUTAGES as exc:
            self._queue.put_back(chunk)
            self._failed(exc)
            return False
        for written, rejected in replies:
            self.written_fields += int(written)
            self.rejected_fields += int(rejected)
        self.chunks_sent += 1
        self._reached()
        return True

    # -- health -----------------------------------------------------------------------

    async def check(self) -> bool:
        """Probe Redis and move this run's marker on; True when Redis lost data since
        the last check: :attr:`resync_needed` turns on.

        The marker holds a counter this run raises on every check. Finding it gone
        (Redis restarted empty, was flushed, the key was deleted) or behind what
        this run last wrote (Redis restarted from an older snapshot, or lost its
        last second of AOF) means writes this run made may be gone too. Not
        subject to the backoff (it is one cheap round trip); a success ends it,
        so a catch-up starts as soon as Redis answers again."""
        key = marker_key(self.run_id, prefix=self.prefix)
        count = self._marker_written + 1
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.get(key)
                pipe.set(key, str(count).encode(), px=MARKER_TTL_MS)
                held, _ = await pipe.execute()
        except REDIS_OUTAGES as exc:
            self._failed(exc)
            return False
        self._reached()
        lost = self._marker_written > 0 and _counter(held) < self._marker_written
        self._marker_written = count
        if lost:
            self.resync_needed = True
        return lost

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        self._failures_while_down += 1
        self.reachable = False
        self._backoff_s = min(BACKOFF_MAX_S, self._backoff_s * 2 or BACKOFF_FIRST_S)
        self._retry_at = time.monotonic() + self._backoff_s
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning(
                "Redis unreachable (%r): tag writes wait in the queue (%d users) and are "
                "retried with backoff (up to %.0f s apart)",
                exc,
                len(self._queue),
                BACKOFF_MAX_S,
            )

    def _reached(self) -> None:
        self.reachable = True
        self._backoff_s = 0.0
        self._retry_at = 0.0
        if self._down_since is not None:
            log.info(
                "Redis reachable again after %.1f s (%d failed calls); catching up %d users",
                time.monotonic() - self._down_since,
                self._failures_while_down,
                len(self._queue),
            )
            self._down_since = None
        self._failures_while_down = 0

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
        except REDIS_OUTAGES as exc:
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
        except REDIS_OUTAGES as exc:
            log.warning("could not mark %d triggers sent: %s", len(trigger_ids), exc)

    async def close(self) -> None:
        """Release connections."""
        await self._redis.aclose()
