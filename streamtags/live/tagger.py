"""The live host around the engine: partitions, coalesced state writes, outputs.

Faust-agnostic except for what it is handed: a :class:`TableStore` for user
state, and ``send`` callables for the output topics. The worker feeds it
batches and ticks; it keeps one engine :class:`~streamtags.engine.Partition`
per assigned input partition, remembers which users changed, and on
:meth:`flush` writes each changed user's state once (store + changelog).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson

from streamtags.contracts.events import parse_event_time
from streamtags.contracts.ingest import Decoded
from streamtags.engine.partition import Engine, Output, Partition
from streamtags.engine.state import UserState
from streamtags.errors import StateFormatError
from streamtags.live.metrics import Metrics
from streamtags.live.table_store import TableStore
from streamtags.serving.redis_sink import RedisSink, TriggerGuard

__all__ = ["LiveTagger", "Send"]

log = logging.getLogger("streamtags.live.tagger")

Send = Callable[[bytes, bytes], Awaitable[Any]]
"""Send (key, value) to a topic; awaiting it queues the record and returns a delivery
future that resolves once the broker has it."""

#: Clean user states kept in memory per partition before the cache is dropped.
CACHE_MAX_USERS = 200_000
#: Key under which each partition's clock is stored in the state table (reserved: \x00...).
CLOCK_KEY_PREFIX = b"\x00clock:"


class LiveTagger:
    """One worker's engine partitions and their outputs."""

    def __init__(
        self,
        engine: Engine,
        store: TableStore,
        *,
        send_tag: Send,
        send_risk: Send,
        send_trigger: Send,
        redis: RedisSink,
        guard: TriggerGuard,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.store = store
        self.send_tag = send_tag
        self.send_risk = send_risk
        self.send_trigger = send_trigger
        self.redis = redis
        self.guard = guard
        self.metrics = metrics
        self.clock = clock
        self.partitions: dict[int, Partition] = {}
        self.dirty: dict[int, set[str]] = {}
        self.last_flush = clock()

    def now_ms(self) -> int:
        """Wall clock, epoch ms."""
        return int(self.clock() * 1000)

    # -- assignment -------------------------------------------------------------

    def partition(self, number: int) -> Partition:
        """The engine partition for input partition ``number`` (built on first use)."""
        part = self.partitions.get(number)
        if part is None:
            part = self.engine.partition(load=lambda user_id: self._load(number, user_id))
            self.partitions[number] = part
        return part

    @staticmethod
    def _clock_key(number: int) -> bytes:
        return CLOCK_KEY_PREFIX + str(number).encode()

    def _load(self, number: int, user_id: str) -> UserState | None:
        raw = self.store.get(number, user_id.encode())
        if raw is None:
            return None
        try:
            return UserState.from_bytes(raw, self.engine.features)
        except StateFormatError as exc:
            log.error("state of %s unreadable (%s); starting it afresh", user_id, exc)
            return None

    def assign(self, numbers: Iterable[int]) -> None:
        """Own exactly ``numbers``: rebuild new partitions' clocks and deadlines from the store."""
        wanted = set(numbers)
        for number in list(self.partitions):
            if number not in wanted:
                del self.partitions[number]
                self.dirty.pop(number, None)
        for number in sorted(wanted - set(self.partitions)):
            part = self.partition(number)
            clock = self.store.get(number, self._clock_key(number))
            if clock is not None:
                part.clock.restore(orjson.loads(clock))
            users = 0
            for key, raw in self.store.scan(number):
                user_id = key.decode()
                try:
                    state = UserState.from_bytes(raw, self.engine.features)
                except StateFormatError:
                    continue
                part.adopt(user_id, state)
                users += 1
            part.forget(list(part.states))  # keep the deadline index, not the states
            log.info(
                "partition %d: %d users, next deadline %s", number, users, part.next_deadline_ms()
            )

    # -- work -------------------------------------------------------------------

    async def process(
        self, events: Iterable[Decoded]
    ) -> tuple[list[tuple[str, Any]], list[tuple[Decoded, str]]]:
        """Run a batch through the engine and ship its output.

        Returns (trigger id, delivery future) pairs, to await with :meth:`confirm`
        before the batch is acked, and the events the engine failed on."""
        now_ms = self.now_ms()
        by_partition: dict[int, list[Decoded]] = {}
        for decoded in events:
            by_partition.setdefault(decoded.partition, []).append(decoded)
        out = Output()
        for number, batch in by_partition.items():
            result = self.partition(number).process(batch, now_ms)
            self._mark(number, result)
            out.extend(result)
        for change in out.changes:
            self.metrics.event_to_output.observe(
                max(0, now_ms - parse_event_time(change["ts"])) / 1000
            )
        return await self._ship(out), out.failed

    async def tick(self) -> list[tuple[str, Any]]:
        """Fire what is due in every partition (quiet users' deadlines, expiries)."""
        now_ms = self.now_ms()
        out = Output()
        for number, part in self.partitions.items():
            due = part.next_deadline_ms()
            watermark = part.watermark(now_ms)
            if due is None or watermark is None or due > watermark:
                continue
            result = part.advance(now_ms)
            self._mark(number, result)
            out.extend(result)
        return await self._ship(out)

    def _mark(self, number: int, out: Output) -> None:
        if out.dirty:
            self.dirty.setdefault(number, set()).update(out.dirty)
        for delay_ms in out.fire_delays_ms:
            self.metrics.deadline_lateness.observe(max(0, delay_ms) / 1000)

    async def _ship(self, out: Output) -> list[tuple[str, Any]]:
        deliveries: list[tuple[str, Any]] = []
        for change in out.changes:
            key = change["user_id"].encode()
            value = orjson.dumps(change)
            await self.send_tag(key, value)
            if change["category"] == "risk":
                await self.send_risk(key, value)
            self.metrics.tag_changes.labels(change["tag"], change["action"]).inc()
        wanted = await self.guard.claim([t["trigger_id"] for t in out.triggers])
        for trigger in out.triggers:
            if trigger["trigger_id"] not in wanted:
                continue  # sent before a crash or redelivery: never twice
            future = await self.send_trigger(trigger["user_id"].encode(), orjson.dumps(trigger))
            deliveries.append((trigger["trigger_id"], future))
            self.metrics.coupon_triggers.inc()
        if out.changes:
            self.redis.add(out.changes)
        if self.redis.queued_users:
            if not await self.redis.flush():
                self.metrics.redis_errors.inc()
            self.metrics.redis_pending_users.set(self.redis.queued_users)
        return deliveries

    async def confirm(self, deliveries: list[tuple[str, Any]]) -> None:
        """Wait until these coupon triggers are on the broker and record them as sent."""
        for _, future in deliveries:
            await future
        await self.guard.mark_sent([trigger_id for trigger_id, _ in deliveries])

    async def flush(self) -> int:
        """Write every changed user's state once (store + changelog); return how many."""
        written = 0
        now_ms = self.now_ms()
        dirty, self.dirty = self.dirty, {}
        for number, users in dirty.items():
            part = self.partitions.get(number)
            if part is None:
                continue
            for user_id in users:
                await self.store.put(number, user_id.encode(), part.dump(user_id))
                written += 1
            await self.store.put(
                number, self._clock_key(number), orjson.dumps(part.clock.to_list())
            )
            if len(part.states) > CACHE_MAX_USERS:
                still_dirty = self.dirty.get(number, set())  # changed while we were writing
                part.forget([user for user in part.states if user not in still_dirty])
        self.last_flush = now_ms / 1000
        return written
