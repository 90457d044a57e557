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
- Each batch (and tick) leaves the state bytes of the users it changed; a
  flush takes its snapshot (those bytes, queued outputs, registered acks) at
  once and between two batches (:meth:`~LiveTagger.batch`, which the intake
  and the tick hold), so no state is written ahead of its batch's outputs,
  and the pause does not grow with the users written. Then it writes and
  waits for the broker while the agent tags the next fetches
  (:meth:`~LiveTagger.flush_in_background`): their changes wait for the next
  flush.
- Ownership changes (:meth:`~LiveTagger.assign`) wait for a running flush,
  then drop revoked partitions with their dirty users and waiting acks. So
  a flush never writes for a partition this worker no longer owns, and
  events whose state was dropped are never acked here: the new owner reads
  them again from the last committed offset.

The outputs themselves (sizes, resends, the trigger ledger, the tag sink)
are :class:`~streamtags.live.outputs.Outbox`'s. The tag sink and trigger
ledger are best effort: when either is down, tagging to Kafka goes on (the
sink keeps its queue; the ledger lets every trigger through, and consumers
deduplicate by ``trigger_id``). A user's state over the record size limit is
refused alone (dead-lettered, not written); the other users' writes and the
acks go on.

Bounded resources:

- A new partition is rebuilt from the store in slices of
  :data:`REBUILD_SLICE_S`, yielding to the event loop in between (heartbeats
  keep going); the idle sweep goes :data:`CHUNK_USERS` users at a time.
- The cached states stay within a memory budget
  (:mod:`streamtags.live.cache`); clean users beyond it are evicted.
- :meth:`~LiveTagger.sweep` deletes users idle past the rules' longest
  horizon (:meth:`~streamtags.engine.partition.Engine.forgettable`): from
  the local store, and from the changelog with a tombstone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import islice

import orjson

from streamtags.contracts.codec import MAX_RECORD_BYTES
from streamtags.contracts.events import parse_event_time
from streamtags.contracts.ingest import Decoded
from streamtags.engine.clock import PartitionClock
from streamtags.engine.partition import Engine, Output, Partition, unreadable_state
from streamtags.engine.state import StateOutline, UserState
from streamtags.errors import StateFormatError
from streamtags.live.backlog import StreamPositions
from streamtags.live.cache import CacheBudget
from streamtags.live.health import DependencyHealth
from streamtags.live.metrics import Metrics
from streamtags.live.offsets import CommittedOffsets
from streamtags.live.outputs import Outbox, Senders, delivered, queued
from streamtags.live.seams import Delivery, StateStore, TagSink, TriggerLedger

__all__ = [
    "CHUNK_USERS",
    "CLOCK_KEY_PREFIX",
    "REBUILD_SLICE_S",
    "Ack",
    "LiveTagger",
    "Receipt",
    "Senders",
]

log = logging.getLogger("streamtags.live.tagger")

Ack = Callable[[], Awaitable[None]]
"""Acks a batch's events of one input partition (their offsets become committable)."""

#: Stored users the idle sweep looks at between two yields to the event loop (about
#: 5 us each: bench/rebuild.py measured stretches of 30-55 ms over a million users).
CHUNK_USERS = 2000
#: The longest a rebuild works before it yields to the event loop, wall-clock seconds.
#: By time, not by users: a user with tags costs ten times a quiet one to read.
REBUILD_SLICE_S = 0.02
#: Key under which each partition's clock is stored in the state table (reserved: \x00...).
CLOCK_KEY_PREFIX = b"\x00clock:"


@dataclass(slots=True)
class Receipt:
    """A processed batch: the acks waiting for its flush (its rejected events are
    already queued as dead letters)."""

    acks: Mapping[int, Ack]
    #: the engine partitions the batch ran on; a partition replaced since was revoked
    owners: dict[int, Partition]
    #: (partition, stream) -> the highest offset of the batch's valid events
    read_to: dict[tuple[int, str], int] = field(default_factory=dict)


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
        max_record_bytes: int = MAX_RECORD_BYTES,
        cache_max_bytes: int = 512 * 2**20,
        health: DependencyHealth | None = None,
        state_topic: str = "user-state-changelog",
    ) -> None:
        self.engine = engine
        #: input stream -> its topic (dead letters name the topic an event came from)
        self.topic_of_stream = dict(topic_of_stream or {})
        #: where each owned input stream stands (backlogs, idle streams)
        self.positions = StreamPositions(partition_end)
        self.store = store
        self.metrics = metrics
        self.commit_interval_s = commit_interval_s
        self.clock = clock
        self.partitions: dict[int, Partition] = {}
        #: owned partitions whose streams hold until told where their backlogs end
        #: (:meth:`expect_backlog`, :meth:`release_backlogs`)
        self.awaiting_backlog: set[int] = set()
        #: partition -> users whose state changed since the last flush took them
        self.dirty: dict[int, set[str]] = {}
        #: partition -> user -> its state bytes, kept once a batch went by without changing it
        self._dumped: dict[int, dict[str, bytes]] = {}
        #: partition -> users the latest batch (or tick) changed, not dumped since
        self._fresh: dict[int, set[str]] = {}
        self.last_flush = clock()
        self._acks: dict[int, list[Ack]] = {}
        self._flushing = asyncio.Lock()
        self._batch = asyncio.Lock()
        self._background_flush: asyncio.Future[int] | None = None
        #: where a state is written (dead letters of refused states name it)
        self.state_topic = state_topic
        self.cache = CacheBudget(max_bytes=cache_max_bytes)
        self.health = health or DependencyHealth(metrics)
        self.outbox = Outbox(
            senders,
            sink=sink,
            guard=guard,
            metrics=metrics,
            health=self.health,
            max_record_bytes=max_record_bytes,
            now_ms=self.now_ms,
            topic_of_stream=self.topic_of_stream,
        )
        self.committed = CommittedOffsets()

    def now_ms(self) -> int:
        """Wall clock, epoch ms."""
        return int(self.clock() * 1000)

    # -- assignment -------------------------------------------------------------

    def partition(self, number: int) -> Partition:
        """The engine partition for input partition ``number`` (built on first use)."""
        part = self.partitions.get(number)
        if part is None:
            part = self.partitions[number] = self._new_partition(number)
        return part

    def _new_partition(self, number: int) -> Partition:
        return self.engine.partition(
            load=lambda user_id: self._load(number, user_id), number=number
        )

    @staticmethod
    def _clock_key(number: int) -> bytes:
        return CLOCK_KEY_PREFIX + str(number).encode()

    def _load(self, number: int, user_id: str) -> UserState | None:
        raw = self.store.get(number, user_id.encode())
        self.cache.note(number, user_id, None if raw is None else len(raw))
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
                self._drop(number)
            # Queued Redis writes of revoked partitions go too; the new owner projects
            # those users' live tags from their state (serving.projection).
            self.outbox.sink.drop_partitions(revoked)
            for number in sorted(wanted - set(self.partitions)):
                self.partitions[number] = await self._rebuild(number)
                self.awaiting_backlog.add(number)

    def _drop(self, number: int) -> None:
        """Forget a revoked partition: its engine state, unwritten changes, waiting acks,
        cache and offsets (a later owner of it starts from the committed offsets)."""
        del self.partitions[number]
        self.awaiting_backlog.discard(number)
        self.dirty.pop(number, None)
        self._dumped.pop(number, None)
        self._fresh.pop(number, None)
        self._acks.pop(number, None)
        self.cache.drop(number)
        self.committed.drop(number)
        self.positions.drop(number)

    async def _rebuild(self, number: int) -> Partition:
        """Partition ``number`` with its clock, deadlines and waiting events rebuilt from
        the store, yielding to the event loop (and with it the consumer's heartbeats)
        every :data:`REBUILD_SLICE_S`. Only users with a live tag, an armed deadline or
        a waiting event are read in full; for the rest nothing is scheduled."""
        started = time.monotonic()
        part = self._new_partition(number)  # installed by the caller once complete
        clock = self.store.get(number, self._clock_key(number))
        if clock is not None:
            part.clock.restore(orjson.loads(clock))
        # Nothing is judged before the backlog behind it is read: every input stream
        # waits for expect_backlog / note_read to say its consumer caught up.
        part.clock.hold(
            self.topic_of_stream or ("orders", "browse", "logins", "accounts"), self.now_ms()
        )
        users = busy = 0
        yield_at = time.monotonic() + REBUILD_SLICE_S
        for key, raw in self.store.scan(number):
            users += 1
            if users % 64 == 0 and time.monotonic() >= yield_at:
                part.forget(list(part.states))  # keep the deadline index, not the states
                await asyncio.sleep(0)
                yield_at = time.monotonic() + REBUILD_SLICE_S
            try:
                if not StateOutline.read(raw).busy:
                    continue
                state = UserState.from_bytes(raw, self.engine.features)
            except StateFormatError:
                continue
            part.adopt(key.decode(), state)
            busy += 1
        part.forget(list(part.states))
        log.info(
            "partition %d: %d users (%d with tags, deadlines or waiting events) read in "
            "%.1f s; next deadline %s",
            number,
            users,
            busy,
            time.monotonic() - started,
            part.next_deadline_ms(),
        )
        return part

    def clocks(self) -> dict[int, PartitionClock]:
        """Each owned partition's clock."""
        return {number: part.clock for number, part in self.partitions.items()}

    def expect_backlog(self, ends: Mapping[tuple[int, str], tuple[int, int]]) -> None:
        """Say where each new (partition, stream)'s backlog starts and ends: ``(start,
        end)`` offsets at assignment, ``start`` the group's committed offset (see
        :mod:`streamtags.live.backlog`)."""
        for (number, stream), (start, _) in ends.items():
            if number in self.partitions:
                self.committed.assigned(number, stream, start)
            self.awaiting_backlog.discard(number)
        self.positions.expect(self.clocks(), ends, self.now_ms())

    def note_read(self, messages: Iterable[tuple[int, str, int]]) -> None:
        """Messages read (partition, stream, offset), valid or not; then which streams
        still have unread events (:mod:`streamtags.live.backlog`)."""
        clocks = self.clocks()
        self.positions.note_read(clocks, messages, self.now_ms())
        self.positions.mark_behind(clocks, self.topic_of_stream)

    def release_backlogs(self, numbers: Iterable[int]) -> None:
        """Stop waiting for the backlogs of partitions ``numbers`` (their ends could not
        be learnt): old behaviour for them."""
        wanted = set(numbers)
        self.awaiting_backlog -= wanted
        self.positions.release(self.clocks(), wanted, self.now_ms())

    # -- work -------------------------------------------------------------------

    async def process(self, events: Iterable[Decoded], *, acks: Mapping[int, Ack]) -> Receipt:
        """Run a batch through the engine and queue its output.

        ``acks`` (by input partition) are the batch's acks, registered by
        :meth:`settle` once the caller has added the batch's own dead letters."""
        now_ms = self.now_ms()
        by_partition: dict[int, list[Decoded]] = {}
        read_to: dict[tuple[int, str], int] = {}
        for decoded in events:
            by_partition.setdefault(decoded.partition, []).append(decoded)
            where = (decoded.partition, decoded.source)
            read_to[where] = max(read_to.get(where, -1), decoded.offset)
        owners = {number: self.partition(number) for number in {*by_partition, *acks}}
        out = Output()
        changed: dict[int, set[str]] = {}
        for number, batch in by_partition.items():
            result = owners[number].process(batch, now_ms)
            self._mark(number, result)
            changed[number] = result.dirty
            out.extend(result)
        self._dump_settled(changed)
        # A stream that has now read everything there is follows the wall clock from
        # this batch on, not from the next tick (it holds the next release back less).
        self.positions.mark_idle(self.clocks(), self.topic_of_stream)
        for change in out.changes:
            self.metrics.event_to_output.observe(
                max(0, now_ms - parse_event_time(change["ts"])) / 1000
            )
        await self.outbox.ship(out)
        return Receipt(acks, owners, read_to)

    async def settle(
        self, receipt: Receipt, *, dead_letters: Iterable[tuple[bytes | None, bytes]] = ()
    ) -> None:
        """Queue a batch's dead letters and register its acks for the next flush.

        Acks of a partition revoked since the batch ran are dropped."""
        await self.outbox.dead_letters(dead_letters)
        for number, ack in receipt.acks.items():
            if self.partitions.get(number) is receipt.owners[number]:
                read_to = {k: v for k, v in receipt.read_to.items() if k[0] == number}
                self._acks.setdefault(number, []).append(self._noting(ack, read_to))

    def _noting(self, ack: Ack, read_to: Mapping[tuple[int, str], int]) -> Ack:
        """``ack``, then note how far each stream is acked (for the idle sweep)."""

        async def ack_and_note() -> None:
            await ack()
            self.committed.acked(read_to)

        return ack_and_note

    def mark_idle_streams(self) -> None:
        """Tell each partition's clock which streams have read everything there is, and
        which have unread events."""
        clocks = self.clocks()
        self.positions.mark_behind(clocks, self.topic_of_stream)
        self.positions.mark_idle(clocks, self.topic_of_stream)

    async def tick(self) -> None:
        """Fire what is due in every partition (quiet users' deadlines, expiries)."""
        async with self._batch:
            await self._tick()

    async def _tick(self) -> None:
        self.mark_idle_streams()
        now_ms = self.now_ms()
        out = Output()
        changed: dict[int, set[str]] = {}
        for number, part in self.partitions.items():
            due = part.next_deadline_ms()
            watermark = part.watermark(now_ms)
            if due is None or watermark is None or due > watermark:
                continue
            result = part.advance(now_ms)
            self._mark(number, result)
            changed[number] = result.dirty
            out.extend(result)
        self._dump_settled(changed)
        await self.outbox.ship(out)

    def _mark(self, number: int, out: Output) -> None:
        if out.dirty:
            self.dirty.setdefault(number, set()).update(out.dirty)
        for delay_ms in out.fire_delays_ms:
            self.metrics.deadline_lateness.observe(max(0, delay_ms) / 1000)

    def _dump_settled(self, changed: dict[int, set[str]]) -> None:
        """Keep the state bytes of the users the previous batch (or tick) changed and this
        one, which changed ``changed``, did not: a flush then only takes these
        (:meth:`_snapshot`), so its pause between two batches does not grow with the users
        it writes. A user changed now waits a batch: an event read now is mostly applied
        by the next batch, and the user is dumped once for both."""
        for number, users in self._fresh.items():
            part = self.partitions.get(number)
            if part is None:
                continue
            again = changed.get(number, ())
            dumped = self._dumped.setdefault(number, {})
            for user_id in users:
                if user_id not in again:
                    dumped[user_id] = part.dump(user_id)
        self._fresh = changed

    # -- flush and ack ------------------------------------------------------------

    def flush_due(self) -> bool:
        """Whether anything waits for a flush and ``commit_interval_s`` passed since the last."""
        waiting = self.dirty or self._acks or self.outbox.pending
        return bool(waiting) and self.clock() - self.last_flush >= self.commit_interval_s

    async def flush(self) -> int:
        """Write, confirm, then ack (see the module docstring); return the states written.

        Waits for a flush already running; when this returns normally, every
        state change and output made before the call is on the broker."""
        async with self._flushing:
            async with self._batch:  # a snapshot between batches (see batch())
                paused = time.perf_counter()
                self.last_flush = self.clock()
                dirty, self.dirty = self.dirty, {}
                self._dump_settled({})  # the latest batch's users too
                dumped, self._dumped = self._dumped, {}
                acks, self._acks = self._acks, {}
                outbox = self.outbox.take()
                records, refused = self._snapshot(dirty, dumped)
                self.metrics.flush_pause.observe(time.perf_counter() - paused)
            for number, key, data in refused:  # refused alone: the others' writes go on
                await self.outbox.refuse("state", self.state_topic, number, key, data)
            written, states_ok = await self._write_states(records)
            lost = await self.outbox.confirm(outbox)  # the lost ones pend again
            if not states_ok or lost:
                for number, waiting in acks.items():  # in front of acks registered since
                    self._acks[number] = waiting + self._acks.get(number, [])
                self.metrics.flush_failures.inc()
                log.error("flush not confirmed by the broker; its acks wait for the next flush")
                return written
            for waiting in acks.values():  # only owned partitions' acks get in (settle)
                for ack in waiting:
                    await ack()
            self._trim_caches()
            return written

    def flush_in_background(self) -> None:
        """Start a flush unless one is running, and return at once: batches go on
        meanwhile (their changes wait for the next flush). Raises what the previous
        background flush raised, if it failed."""
        running = self._background_flush
        if running is not None and not running.done():
            return
        self._background_flush = asyncio.ensure_future(self.flush())
        if running is not None:
            running.result()

    def batch(self) -> asyncio.Lock:
        """Held while a batch (or a tick) runs the engine and queues its outputs and acks:
        a flush snapshots the states, outputs and acks between two batches, never in
        the middle of one (so no state is written ahead of its batch's outputs)."""
        return self._batch

    def _snapshot(
        self, dirty: dict[int, set[str]], dumped: dict[int, dict[str, bytes]]
    ) -> tuple[
        dict[int, tuple[list[str], list[tuple[bytes, bytes]]]], list[tuple[int, bytes, bytes]]
    ]:
        """Every dirty user's state bytes (as its batches left them; dumped now only for a
        user whose last write failed), and each touched partition's clock last, by
        partition, taken at once (no await); and the states over the record size limit."""
        records: dict[int, tuple[list[str], list[tuple[bytes, bytes]]]] = {}
        refused: list[tuple[int, bytes, bytes]] = []
        for number, users in dirty.items():
            part = self.partitions.get(number)
            if part is None:
                continue
            written: list[str] = []
            states: list[tuple[bytes, bytes]] = []
            ready = dumped.get(number, {})
            for user_id in users:
                data = ready.get(user_id)
                key, data = user_id.encode(), part.dump(user_id) if data is None else data
                if not self.outbox.fits(key, data):
                    refused.append((number, key, data))
                    continue
                self.cache.note(number, user_id, len(data))
                states.append((key, data))
                written.append(user_id)
            states.append((self._clock_key(number), orjson.dumps(part.clock.to_list())))
            records[number] = (written, states)
        return records, refused

    async def _write_states(
        self, records: dict[int, tuple[list[str], list[tuple[bytes, bytes]]]]
    ) -> tuple[int, bool]:
        """Queue the snapshot's records (:meth:`_snapshot`), then wait for the broker;
        unconfirmed users become dirty again. Returns (confirmed users, all ok)."""
        writes: list[tuple[int, list[str], Delivery | None]] = []
        for number, (users, states) in records.items():  # assign() waits for the flush
            writes += await self._put_many(number, states, users)
        confirmed, all_ok = 0, True
        for number, users_written, delivery in writes:
            if await delivered(delivery, self.health):
                confirmed += len(users_written)
                continue
            all_ok = False
            self.dirty.setdefault(number, set()).update(users_written)  # the clock goes again too
        return confirmed, all_ok

    async def _put_many(
        self, number: int, records: list[tuple[bytes, bytes]], users: list[str]
    ) -> list[tuple[int, list[str], Delivery | None]]:
        """Queue a partition's records (its users' states, then its clock); returns, per
        delivery, the users whose states it carries."""
        try:
            deliveries = await self.store.put_many(number, records)
        except Exception as exc:  # whatever the producer raises, nothing is queued
            self.health.failed("kafka", f"could not queue a record: {exc!r}")
            return [(number, users, None)]
        writes: list[tuple[int, list[str], Delivery | None]] = []
        start = 0
        for count, delivery in deliveries:
            writes.append((number, users[start : start + count], delivery))
            start += count
        return writes

    def _trim_caches(self) -> None:
        """Evict clean users beyond the cache budget (:mod:`streamtags.live.cache`)."""
        for number, users in self.cache.evictions(self.dirty).items():
            part = self.partitions.get(number)
            if part is not None and users:
                part.forget(users)
                self.cache.forget(number, users)
                self.metrics.cache_evictions.inc(len(users))
        self.metrics.cache_bytes.set(self.cache.total)

    # -- the tag sink lost its data ------------------------------------------------

    # -- idle users ---------------------------------------------------------------

    async def sweep(self) -> int:
        """Delete the states of idle users (see :meth:`Engine.forgettable`) in every owned
        partition, :data:`CHUNK_USERS` at a time; returns the deletions the broker confirmed.

        Each deletion removes the user from the local store and writes a tombstone to
        the changelog. Only users whose every event is committed go
        (:mod:`streamtags.live.offsets`). Nothing is deleted during a Kafka outage."""
        self.committed.sweep_starts()
        if "kafka" in self.health.degraded():
            return 0
        deliveries: list[Delivery | None] = []
        for number in list(self.partitions):
            deliveries += await self._sweep_partition(number)
        deleted = sum([await delivered(d, self.health) for d in deliveries])
        if deleted:
            self.metrics.idle_users_deleted.inc(deleted)
            log.info("deleted %d idle users (%d not confirmed)", deleted, len(deliveries) - deleted)
        return deleted

    async def _sweep_partition(self, number: int) -> list[Delivery | None]:
        part = self.partitions.get(number)
        watermark = part.watermark(self.now_ms()) if part is not None else None
        if part is None or watermark is None:
            return []
        committed = self.committed.of(number)
        deliveries: list[Delivery | None] = []
        scan = self.store.scan(number)
        while True:
            async with self._flushing:  # no flush writes these users meanwhile
                if self.partitions.get(number) is not part:
                    break  # revoked: its store may be gone
                chunk = list(islice(scan, CHUNK_USERS))
                for key, raw in chunk:
                    user_id = key.decode()
                    if self._idle(number, part, user_id, raw, watermark, committed):
                        # Forgotten and deleted locally before the first await: an event
                        # read meanwhile starts the user afresh, after the tombstone.
                        part.forget([user_id])
                        self.cache.forget(number, [user_id])
                        deletion = self.store.delete(number, key)
                        deliveries.append(await queued(deletion, self.health))
            if not chunk:
                break
            await asyncio.sleep(0)
        return deliveries

    def _idle(
        self,
        number: int,
        part: Partition,
        user_id: str,
        raw: bytes,
        watermark: int,
        committed: Mapping[str, int],
    ) -> bool:
        if user_id in self.dirty.get(number, ()):
            return False
        state = part.states.get(user_id)  # a cached state is newer than the stored bytes
        try:
            outline = StateOutline.of(state) if state is not None else StateOutline.read(raw)
        except StateFormatError:
            return False
        if not self.engine.forgettable(outline, watermark):
            return False
        return all(offset <= committed.get(s, -1) for s, offset in outline.offsets.items())
