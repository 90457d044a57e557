"""The live host around the engine: partitions, coalesced state writes, outputs, acks.

Faust-agnostic: it reaches the world only through the seams of
:mod:`streamtags.live.seams` (state store, tag sink, trigger ledger, output
senders). It keeps one engine :class:`~streamtags.engine.Partition` per
assigned input partition and remembers which users changed.

Flush-and-ack has exactly one owner, :meth:`LiveTagger.flush`, whichever
task calls it (the agent, the deadline timer, the revoke handler):

- :meth:`~LiveTagger.process` and :meth:`~LiveTagger.tick` run the engine,
  mark changed users dirty and queue the outputs (tag changes, risk tags,
  coupon triggers); :meth:`~LiveTagger.settle` adds a batch's dead letters
  and registers the batch's acks.
- :meth:`~LiveTagger.flush` runs one at a time (a lock). It writes each dirty
  user's state once, waits until the broker confirmed every changelog
  record it queued and every queued output, and only then runs the acks
  registered before it started. So an event's offset is never acked ahead
  of the state and outputs it produced, even when another task's flush is
  still writing: that flush holds the lock until its writes are confirmed.
  If anything is not confirmed, its users stay dirty, lost outputs are sent
  again, and no ack runs: the next flush retries.
- Ownership changes (:meth:`~LiveTagger.assign`) wait for a running flush,
  then drop revoked partitions with their dirty users and waiting acks. So
  a flush never writes for a partition this worker no longer owns, and
  events whose state was dropped are never acked here: the new owner reads
  them again from the last committed offset.

The tag sink and trigger ledger are best effort: when either is down,
tagging to Kafka goes on (the sink keeps its queue; the ledger lets every
trigger through, and consumers deduplicate by ``trigger_id``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

import orjson

from streamtags.contracts.codec import dead_letter, encode
from streamtags.contracts.events import parse_event_time
from streamtags.contracts.ingest import Decoded
from streamtags.engine.partition import (
    Change,
    Engine,
    Output,
    Partition,
    Rejection,
    Trigger,
    unreadable_state,
)
from streamtags.engine.state import UserState
from streamtags.errors import InvalidEvent, StateFormatError
from streamtags.live.metrics import Metrics
from streamtags.live.seams import OUTAGES, Delivery, Sender, StateStore, TagSink, TriggerLedger

__all__ = ["CACHE_MAX_USERS", "CLOCK_KEY_PREFIX", "Ack", "LiveTagger", "Receipt", "Senders"]

log = logging.getLogger("streamtags.live.tagger")

Ack = Callable[[], Awaitable[None]]
"""Acks a batch's events of one input partition (their offsets become committable)."""

#: Clean user states kept in memory per partition before the cache is dropped.
CACHE_MAX_USERS = 200_000
#: Key under which each partition's clock is stored in the state table (reserved: \x00...).
CLOCK_KEY_PREFIX = b"\x00clock:"


@dataclass(frozen=True, slots=True)
class Senders:
    """The output topics the tagger writes."""

    tags: Sender
    risk_tags: Sender
    coupon_triggers: Sender
    dead_letter: Sender


@dataclass(slots=True)
class Receipt:
    """A processed batch: the acks waiting for its flush (its rejected events are
    already queued as dead letters)."""

    acks: Mapping[int, Ack]
    #: the engine partitions the batch ran on; a partition replaced since was revoked
    owners: dict[int, Partition]


@dataclass(slots=True)
class _Shipment:
    """One output record and its delivery; a lost record is sent again."""

    sender: Sender
    key: bytes | None
    value: bytes
    delivery: Delivery | None
    trigger_id: str | None = None  # until the ledger knows it was sent

    async def confirmed(self) -> bool:
        """Whether the broker has it, after sending it once more if it was lost."""
        if await _delivered(self.delivery):
            return True
        self.delivery = await _queue(self.sender.send(self.key, self.value))
        return await _delivered(self.delivery)


async def _queue(sending: Awaitable[Delivery]) -> Delivery | None:
    """Queue a record; None when even queueing failed (the flush will retry)."""
    try:
        return await sending
    except Exception as exc:  # whatever the producer raises, the record is not queued
        log.warning("could not queue a record: %r", exc)
        return None


async def _delivered(delivery: Delivery | None) -> bool:
    """Whether the broker confirmed ``delivery``."""
    if delivery is None:
        return False
    try:
        await delivery
    except Exception as exc:  # whatever the producer raises, the record did not land
        log.warning("a record was not delivered: %r", exc)
        return False
    return True


class LiveTagger:
    """One worker's engine partitions, their state writes, outputs and acks."""

    def __init__(
        self,
        engine: Engine,
        store: StateStore,
        *,
        senders: Senders,
        sink: TagSink,
        guard: TriggerLedger,
        metrics: Metrics,
        commit_interval_s: float,
        clock: Callable[[], float] = time.time,
        topic_of_stream: Mapping[str, str] | None = None,
        partition_end: Callable[[int, str], int | None] | None = None,
    ) -> None:
        self.engine = engine
        #: input stream -> its topic (dead letters name the topic an event came from)
        self.topic_of_stream = dict(topic_of_stream or {})
        #: (partition, stream) -> the offset its partition ends at now, if known
        self.partition_end = partition_end
        #: (partition, stream) -> the highest offset read
        self._read_to: dict[tuple[int, str], int] = {}
        self.store = store
        self.senders = senders
        self.sink = sink
        self.guard = guard
        self.metrics = metrics
        self.commit_interval_s = commit_interval_s
        self.clock = clock
        self.partitions: dict[int, Partition] = {}
        #: partition -> users whose state changed since the last flush took them
        self.dirty: dict[int, set[str]] = {}
        self.last_flush = clock()
        self._acks: dict[int, list[Ack]] = {}
        self._outbox: list[_Shipment] = []
        self._flushing = asyncio.Lock()
        #: (partition, stream) -> the offset its backlog at assignment ends at
        self._backlog_ends: dict[tuple[int, str], int] = {}

    def now_ms(self) -> int:
        """Wall clock, epoch ms."""
        return int(self.clock() * 1000)

    # -- assignment -------------------------------------------------------------

    def partition(self, number: int) -> Partition:
        """The engine partition for input partition ``number`` (built on first use)."""
        part = self.partitions.get(number)
        if part is None:
            part = self.engine.partition(
                load=lambda user_id: self._load(number, user_id), number=number
            )
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
            log.error("state of %s unreadable (%s); starting it afresh, opted out", user_id, exc)
            self.metrics.unreadable_states.inc()
            return unreadable_state()

    async def assign(self, numbers: Iterable[int]) -> None:
        """Own exactly ``numbers``, once any running flush has finished.

        Revoked partitions go with their unwritten changes and waiting acks;
        new ones get their clocks and deadlines rebuilt from the store."""
        wanted = set(numbers)
        async with self._flushing:
            revoked = [number for number in self.partitions if number not in wanted]
            for number in revoked:
                del self.partitions[number]
                self.dirty.pop(number, None)
                self._acks.pop(number, None)
                for waits in (self._backlog_ends, self._read_to):
                    for key in [k for k in waits if k[0] == number]:
                        del waits[key]
            # Redis projection (issue 9): queued Redis writes of revoked partitions go too;
            # the new owner projects those users' live tags from their state.
            self.sink.drop_partitions(revoked)
            for number in sorted(wanted - set(self.partitions)):
                self._rebuild(number)

    def _rebuild(self, number: int) -> None:
        part = self.partition(number)
        clock = self.store.get(number, self._clock_key(number))
        if clock is not None:
            part.clock.restore(orjson.loads(clock))
        # Nothing is judged before the backlog behind it is read: every input stream
        # waits for expect_backlog / note_read to say its consumer caught up.
        part.clock.hold(
            self.topic_of_stream or ("orders", "browse", "logins", "accounts"), self.now_ms()
        )
        users = 0
        for key, raw in self.store.scan(number):
            try:
                state = UserState.from_bytes(raw, self.engine.features)
            except StateFormatError:
                continue
            part.adopt(key.decode(), state)
            users += 1
        part.forget(list(part.states))  # keep the deadline index, not the states
        log.info("partition %d: %d users, next deadline %s", number, users, part.next_deadline_ms())

    def expect_backlog(self, ends: Mapping[tuple[int, str], tuple[int, int]]) -> None:
        """Say where each new (partition, stream)'s backlog ends: ``(position, end)``
        offsets at assignment. A stream with nothing to read follows the wall clock
        again at once; the others when :meth:`note_read` reaches their end."""
        now_ms = self.now_ms()
        for (number, stream), (position, end) in ends.items():
            part = self.partitions.get(number)
            if part is None:
                continue
            self._read_to[(number, stream)] = position - 1
            if position >= end:
                part.clock.release(stream, now_ms)
            else:
                self._backlog_ends[(number, stream)] = end

    def note_read(self, messages: Iterable[tuple[int, str, int]]) -> None:
        """Messages read (partition, stream, offset), valid or not: release the streams
        whose backlog at assignment is now read."""
        read_to = self._read_to
        for number, stream, offset in messages:
            if offset > read_to.get((number, stream), -1):
                read_to[(number, stream)] = offset
            if not self._backlog_ends:
                continue
            end = self._backlog_ends.get((number, stream))
            if end is not None and offset + 1 >= end:
                del self._backlog_ends[(number, stream)]
                part = self.partitions.get(number)
                if part is not None:
                    part.clock.release(stream, self.now_ms())
                log.info(
                    "partition %d: %s backlog read; its time follows the clock", number, stream
                )

    def release_all(self) -> None:
        """Stop waiting for backlogs (their ends could not be learnt): old behaviour."""
        now_ms = self.now_ms()
        self._backlog_ends.clear()
        for part in self.partitions.values():
            for stream in list(part.clock.held):
                part.clock.release(stream, now_ms)

    # -- work -------------------------------------------------------------------

    async def process(self, events: Iterable[Decoded], *, acks: Mapping[int, Ack]) -> Receipt:
        """Run a batch through the engine and queue its output.

        ``acks`` (by input partition) are the batch's acks, registered by
        :meth:`settle` once the caller has added the batch's own dead letters."""
        now_ms = self.now_ms()
        by_partition: dict[int, list[Decoded]] = {}
        for decoded in events:
            by_partition.setdefault(decoded.partition, []).append(decoded)
        owners = {number: self.partition(number) for number in {*by_partition, *acks}}
        out = Output()
        for number, batch in by_partition.items():
            result = owners[number].process(batch, now_ms)
            self._mark(number, result)
            out.extend(result)
        for change in out.changes:
            self.metrics.event_to_output.observe(
                max(0, now_ms - parse_event_time(change["ts"])) / 1000
            )
        await self._ship(out)
        return Receipt(acks, owners)

    async def settle(
        self, receipt: Receipt, *, dead_letters: Iterable[tuple[bytes | None, bytes]] = ()
    ) -> None:
        """Queue a batch's dead letters and register its acks for the next flush.

        Acks of a partition revoked since the batch ran are dropped."""
        for key, value in dead_letters:
            await self._send(self.senders.dead_letter, key, value)
        for number, ack in receipt.acks.items():
            if self.partitions.get(number) is receipt.owners[number]:
                self._acks.setdefault(number, []).append(ack)

    def mark_idle_streams(self) -> None:
        """Tell each partition's clock which streams have read everything there is, so a
        rarely used topic does not hold the others back at its last event's time."""
        if self.partition_end is None:
            return
        for number, part in self.partitions.items():
            for stream in self.topic_of_stream:
                end = self.partition_end(number, stream)
                if end is not None and self._read_to.get((number, stream), -1) + 1 >= end:
                    part.clock.mark_idle(stream)

    async def tick(self) -> None:
        """Fire what is due in every partition (quiet users' deadlines, expiries)."""
        self.mark_idle_streams()
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
        await self._ship(out)

    def _mark(self, number: int, out: Output) -> None:
        if out.dirty:
            self.dirty.setdefault(number, set()).update(out.dirty)
        for delay_ms in out.fire_delays_ms:
            self.metrics.deadline_lateness.observe(max(0, delay_ms) / 1000)

    # -- outputs ----------------------------------------------------------------

    async def _send(
        self, sender: Sender, key: bytes | None, value: bytes, trigger_id: str | None = None
    ) -> _Shipment:
        shipment = _Shipment(sender, key, value, await _queue(sender.send(key, value)), trigger_id)
        self._outbox.append(shipment)
        return shipment

    async def _ship(self, out: Output) -> None:
        for rejection in out.rejected:
            await self._dead_letter(rejection)
        if out.duplicates:
            self.metrics.duplicates.inc(out.duplicates)
        for change in out.changes:
            key = change["user_id"].encode()
            value = orjson.dumps(change)
            await self._send(self.senders.tags, key, value)
            if change["category"] == "risk":
                await self._send(self.senders.risk_tags, key, value)
            self.metrics.tag_changes.labels(change["tag"], change["action"]).inc()
        if out.triggers:
            await self._send_triggers(out.triggers)
        await self._update_sink(out.changes)

    async def _dead_letter(self, rejection: Rejection) -> None:
        """Send an event the engine did not apply to the dead-letter topic, with why."""
        decoded = rejection.decoded
        topic = self.topic_of_stream.get(decoded.source, decoded.source)
        raw = decoded.raw or decoded.event.model_dump_json(exclude_none=True).encode()
        letter = dead_letter(
            topic=topic,
            partition=decoded.partition,
            offset=decoded.offset,
            key=decoded.event.user_id.encode(),
            value=raw,
            error=InvalidEvent(rejection.reason, rejection.kind),
            now_ms=self.now_ms(),
        )
        await self._send(self.senders.dead_letter, decoded.event.user_id.encode(), encode(letter))
        self.metrics.events_rejected.labels(topic, rejection.kind).inc()
        log.warning(
            "dead-lettered %s[%d]@%d (%s): %s",
            topic,
            decoded.partition,
            decoded.offset,
            rejection.kind,
            rejection.reason,
        )

    async def _send_triggers(self, triggers: list[Trigger]) -> None:
        """Send the triggers the ledger has not seen sent; record each as sent on delivery."""
        ids = [trigger["trigger_id"] for trigger in triggers]
        try:
            wanted = await self.guard.claim(ids)
        except OUTAGES as exc:
            log.warning("trigger ledger unavailable (%r); sending %d unguarded", exc, len(ids))
            wanted = set(ids)
        shipments = []
        for trigger in triggers:
            if trigger["trigger_id"] not in wanted:
                continue  # sent before a crash or a redelivery: never twice
            key, value = trigger["user_id"].encode(), orjson.dumps(trigger)
            shipments.append(
                await self._send(self.senders.coupon_triggers, key, value, trigger["trigger_id"])
            )
            self.metrics.coupon_triggers.inc()
        # Marked sent right away: the shorter a trigger stays ``pending``, the smaller
        # the window in which a crash makes a replay send it a second time.
        await self._mark_sent([s for s in shipments if await _delivered(s.delivery)])

    async def _mark_sent(self, shipments: list[_Shipment]) -> None:
        ids = [s.trigger_id for s in shipments if s.trigger_id is not None]
        if not ids:
            return
        try:
            await self.guard.mark_sent(ids)
        except OUTAGES as exc:
            log.warning("could not mark %d triggers sent (%r); replays resend them", len(ids), exc)
            return
        for shipment in shipments:
            shipment.trigger_id = None

    async def _update_sink(self, changes: list[Change]) -> None:
        if changes:
            self.sink.add(changes)
        if not self.sink.queued_users:
            return
        try:
            written = await self.sink.flush()
        except OUTAGES as exc:
            log.warning("tag sink unavailable (%r); %d users queued", exc, self.sink.queued_users)
            written = False
        if not written:
            self.metrics.redis_errors.inc()
        self.metrics.redis_pending_users.set(self.sink.queued_users)

    # -- flush and ack ------------------------------------------------------------

    def flush_due(self) -> bool:
        """Whether anything waits for a flush and ``commit_interval_s`` passed since the last."""
        waiting = self.dirty or self._acks or self._outbox
        return bool(waiting) and self.clock() - self.last_flush >= self.commit_interval_s

    async def flush(self) -> int:
        """Write, confirm, then ack (see the module docstring); return the states written.

        Waits for a flush already running; when this returns normally, every
        state change and output made before the call is on the broker."""
        async with self._flushing:
            self.last_flush = self.clock()
            dirty, self.dirty = self.dirty, {}
            acks, self._acks = self._acks, {}
            outbox, self._outbox = self._outbox, []
            written, states_ok = await self._write_states(dirty)
            confirmed: list[_Shipment] = []
            lost: list[_Shipment] = []
            for shipment in outbox:
                (confirmed if await shipment.confirmed() else lost).append(shipment)
            await self._mark_sent(confirmed)
            if not states_ok or lost:
                self._outbox[:0] = lost
                for number, waiting in acks.items():  # in front of acks registered since
                    self._acks[number] = waiting + self._acks.get(number, [])
                self.metrics.flush_failures.inc()
                log.error("flush not confirmed by the broker; its acks wait for the next flush")
                return written
            for waiting in acks.values():  # only owned partitions' acks get in (settle)
                for ack in waiting:
                    await ack()
            self._trim_caches(dirty)
            return written

    async def _write_states(self, dirty: dict[int, set[str]]) -> tuple[int, bool]:
        """Queue each dirty user's state and each touched partition's clock, then wait for
        the broker; unconfirmed users become dirty again. Returns (confirmed users, all ok)."""
        writes: list[tuple[int, str | None, Delivery | None]] = []
        for number, users in dirty.items():
            part = self.partitions.get(number)
            if part is None:
                continue
            for user_id in users:
                put = self.store.put(number, user_id.encode(), part.dump(user_id))
                writes.append((number, user_id, await _queue(put)))
            clock = orjson.dumps(part.clock.to_list())
            put = self.store.put(number, self._clock_key(number), clock)
            writes.append((number, None, await _queue(put)))
        written, all_ok = 0, True
        for number, written_user, delivery in writes:
            if await _delivered(delivery):
                written += written_user is not None
                continue
            all_ok = False
            users = self.dirty.setdefault(number, set())  # the partition's clock goes again too
            if written_user is not None:
                users.add(written_user)
        return written, all_ok

    def _trim_caches(self, numbers: Iterable[int]) -> None:
        for number in numbers:
            part = self.partitions.get(number)
            if part is not None and len(part.states) > CACHE_MAX_USERS:
                still_dirty = self.dirty.get(number, set())  # changed while we were writing
                part.forget([user for user in part.states if user not in still_dirty])
