"""The pure core: ``(state, events, now) -> (state, tag changes, coupon triggers)``.

Synchronous and free of I/O: no Faust, Kafka, Redis or asyncio. A
:class:`Partition` holds one partition's user states, clock and wake-ups;
the live worker and the offline replay drive the same code::

    engine = Engine(load_rules(Path("rules")), lateness_ms=10_000)
    part = engine.partition()
    out = part.process(events, now_ms)      # events: Decoded, in read order
    out = part.advance(now_ms)              # release what the watermark passed
    part.next_deadline_ms()                 # when to call advance again

One event's way through (event time throughout, epoch ms UTC):

1. **Admit** (on read). An event stamped more than ``max_future_skew_ms``
   ahead of ``now_ms`` is rejected (``future_timestamp``) and moves no
   clock. A redelivery (an offset the user's state has already read) is
   dropped silently. An event at or before the user's settled time
   (:attr:`UserState.processed_to_ms`) is rejected (``too_late``): its time
   was already judged. An event whose id is already waiting is a duplicate
   (a producer retry) and is dropped. Anything else waits in the user's
   reorder buffer, which is part of the stored state.
2. **Release** (when the partition's watermark passes it). The user's
   waiting events are applied in event-time order (ties by stream and id),
   each after the deadlines, expiries and re-checks that fall before it;
   then the user's time is settled up to the watermark.
3. **Apply**: consent and time zone (accounts), stops, features, starts,
   then the condition rules the event touched, over windows ending at the
   event's own time. A rule that raises rejects the event
   (``engine_error``) and its partial output is dropped.

So any read order in which no event comes more than the lateness after a
later-stamped event of its partition gives the same changes, a duplicate
or a redelivery changes nothing, and consent, time zone and registration
follow event time, not read order. Changes and triggers carry ids that
are hashes of their content.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from streamtags.contracts.events import Account, Event
from streamtags.contracts.ingest import Decoded
from streamtags.contracts.records import iso_ms
from streamtags.engine.clock import PartitionClock
from streamtags.engine.deadlines import MARKER_RETENTION_MS, Deadlines
from streamtags.engine.output import Change, Output, Rejection, Trigger, UserTurn
from streamtags.engine.routing import FeatureRouter
from streamtags.engine.state import StateOutline, UserState
from streamtags.engine.tags import TagBook
from streamtags.errors import StateFormatError
from streamtags.rulebook.expressions import Env
from streamtags.rulebook.loader import Rule, Ruleset

__all__ = [
    "RESTORED",
    "Change",
    "Engine",
    "Output",
    "Partition",
    "Rejection",
    "Trigger",
    "unreadable_state",
]

#: The evidence reason of a live tag restored from state (:meth:`Partition.live_tags`).
RESTORED = "restored from the worker's state after the tag store lost it; see the tags topic"


class Engine:
    """Compiled rules plus the indexes that route events to them. Shared by partitions."""

    def __init__(
        self, ruleset: Ruleset, *, lateness_ms: int, max_future_skew_ms: int = 300_000
    ) -> None:
        self.ruleset = ruleset
        #: how late (event time, ms) an event may be read and still count in full
        self.lateness_ms = lateness_ms
        #: how far (ms) an event may be stamped ahead of the caller's clock
        self.max_future_skew_ms = max_future_skew_ms
        self.rules = ruleset.rules
        self.router = FeatureRouter(self.rules)
        #: feature key -> feature: also the packers of every user's stored state
        self.features = self.router.features
        self.tags = TagBook(self.rules)
        self.deadlines = Deadlines(self.rules, tags=self.tags, lateness_ms=lateness_ms)
        #: how long (event time, ms) after a user's last activity nothing the rules keep
        #: can matter any more: see :meth:`forgettable`
        self.idle_horizon_ms = _idle_horizon_ms(self.rules, self.features.values(), lateness_ms)

    def forgettable(self, outline: StateOutline, watermark_ms: int) -> bool:
        """Whether a user's state can be deleted at ``watermark_ms`` (event time): no live
        tag, no armed deadline, no waiting event, consent not withdrawn (an opt-out is
        kept forever), and no activity within :attr:`idle_horizon_ms` of the watermark.
        A user who comes back afterwards starts afresh, exactly as if never seen."""
        return (
            outline.consents
            and not outline.busy
            and outline.active_to_ms < watermark_ms - self.idle_horizon_ms
        )

    def partition(
        self, *, load: Callable[[str], UserState | None] | None = None, number: int = 0
    ) -> Partition:
        """A fresh partition; ``load`` fetches a user's stored state on a cache miss."""
        return Partition(self, load=load, number=number)


class _WakeUps:
    """When each user next has time-driven work (event time, epoch ms).

    A heap of ``(due, user)`` with lazy deletion: an entry whose due time is
    no longer the user's is skipped when it reaches the top.
    """

    __slots__ = ("due_by_user", "heap")

    def __init__(self) -> None:
        self.heap: list[tuple[int, str]] = []
        self.due_by_user: dict[str, int] = {}

    def set(self, user_id: str, due: int | None) -> None:
        """Wake ``user_id`` at ``due``, or never when None."""
        if due is None:
            self.due_by_user.pop(user_id, None)
        elif self.due_by_user.get(user_id) != due:
            self.due_by_user[user_id] = due
            heapq.heappush(self.heap, (due, user_id))

    def earliest(self) -> int | None:
        """The earliest wake-up, if any."""
        heap = self.heap
        while heap and self.due_by_user.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, watermark: int) -> Iterator[str]:
        """Users due at or before ``watermark``, earliest first, including any the
        caller re-schedules within it while iterating."""
        heap = self.heap
        while heap and heap[0][0] <= watermark:
            due, user_id = heapq.heappop(heap)
            if self.due_by_user.get(user_id) == due:
                del self.due_by_user[user_id]
                yield user_id


class _Waiting:
    """``(event time, user)`` of every waiting event, handed out in that order.

    Arrivals are appended as they come and sorted in when the queue is next read:
    events arrive nearly in time order, so one sort per batch (it finds the sorted
    runs) costs far less than a heap push and pop per event. An entry is stale once
    its user's buffer was released; the caller skips those.
    """

    __slots__ = ("arrived", "queue")

    def __init__(self) -> None:
        #: sorted by event time, then user
        self.queue: list[tuple[int, str]] = []
        #: added since the queue was last sorted, in arrival order
        self.arrived: list[tuple[int, str]] = []

    def add(self, event_ms: int, user_id: str) -> None:
        """A waiting event of ``user_id`` at ``event_ms`` (event time, epoch ms)."""
        self.arrived.append((event_ms, user_id))

    def earliest(self) -> int | None:
        """The earliest waiting event's time, if any."""
        queue = self._sorted()
        return queue[0][0] if queue else None

    def pop_until(self, settle_to_ms: int) -> list[tuple[int, str]]:
        """Remove and return, in order, the entries at or before ``settle_to_ms``."""
        queue = self._sorted()
        cut = bisect.bisect_right(queue, settle_to_ms, key=_event_ms)
        ready = queue[:cut]
        del queue[:cut]
        return ready

    def _sorted(self) -> list[tuple[int, str]]:
        if self.arrived:
            self.queue += self.arrived
            self.arrived.clear()  # the same list: the partition appends to it directly
            self.queue.sort()
        return self.queue


def _event_ms(entry: tuple[int, str]) -> int:
    return entry[0]


class Partition:
    """One partition's users, clock and wake-ups. Not thread-safe; one owner."""

    def __init__(
        self,
        engine: Engine,
        *,
        load: Callable[[str], UserState | None] | None = None,
        number: int = 0,
    ) -> None:
        self.engine = engine
        #: the input partition this is (stamped on events restored from stored buffers)
        self.number = number
        #: stored states that could not be read and started afresh, without consent
        self.unreadable_states = 0
        self.clock = PartitionClock(lateness_ms=engine.lateness_ms)
        self.states: dict[str, UserState] = {}
        self._load = load
        self._router = engine.router
        self._tags = engine.tags
        self._deadlines = engine.deadlines
        #: users with deadlines, expiries or rechecks, by when the next comes due
        self._timers = _WakeUps()
        #: ``(event time, user)`` of every waiting event (stale once released)
        self._waiting = _Waiting()

    # -- state access ---------------------------------------------------------

    def state(self, user_id: str) -> UserState:
        """The user's state, loaded or new."""
        state = self.states.get(user_id)
        if state is None:
            state = (self._load(user_id) if self._load is not None else None) or UserState()
            self.states[user_id] = state
        return state

    def dump(self, user_id: str) -> bytes:
        """The user's state as stored bytes, pruned to what can still matter."""
        state = self.state(user_id)
        self._router.prune(state, state.latest_ts)
        # A stop marker only matters for a start read a little later (within the
        # allowed lateness); fired markers stay (one trigger per cart).
        self._deadlines.forget_stops_before(state, state.latest_ts - self.engine.lateness_ms)
        return state.to_bytes(self.engine.features)

    def load_bytes(self, user_id: str, data: bytes) -> UserState:
        """Adopt stored bytes (from the changelog); unreadable bytes start afresh."""
        try:
            state = UserState.from_bytes(data, self.engine.features)
        except StateFormatError:
            state = unreadable_state()
            self.unreadable_states += 1
        self.adopt(user_id, state)
        return state

    def adopt(self, user_id: str, state: UserState) -> None:
        """Take a stored state (after recovery) and schedule its deadlines and buffer."""
        if state.buffer and state.buffer[0].partition != self.number:
            state.buffer = [d._replace(partition=self.number) for d in state.buffer]
        self.states[user_id] = state
        self._schedule(user_id, state)

    def forget(self, user_ids: Iterable[str]) -> None:
        """Drop cached states (already written back) to bound memory."""
        for user_id in user_ids:
            self.states.pop(user_id, None)

    def next_deadline_ms(self) -> int | None:
        """The earliest event time at which :meth:`advance` has work, if any."""
        due = self._timers.earliest()
        waiting = self._waiting.earliest()
        if waiting is not None and (due is None or waiting < due):
            return waiting
        return due

    def watermark(self, now_ms: int) -> int | None:
        """The partition's watermark at wall-clock ``now_ms``."""
        return self.clock.watermark(now_ms)

    # -- the two entry points ---------------------------------------------------

    def process(self, events: Iterable[Decoded], now_ms: int) -> Output:
        """Admit a batch of validated events (read order), then release what is due."""
        out = Output()
        self._admit(events, now_ms, out)
        out.extend(self.advance(now_ms))
        return out

    def advance(self, now_ms: int) -> Output:
        """Apply waiting events and fire deadlines, expiries and re-checks, in event-time
        order per user, up to the watermark at wall-clock ``now_ms``."""
        out = Output()
        watermark = self.clock.watermark(now_ms)
        if watermark is None:
            return out
        # Strictly before the watermark: an event stamped exactly at it may still be
        # read (it is no more than the lateness behind the latest event).
        settle_to = watermark - 1
        states = self.states
        for _, user_id in self._waiting.pop_until(settle_to):
            state = states.get(user_id) or self.state(user_id)
            if state.buffer:
                self._release(UserTurn(user_id, state, now_ms, out), settle_to)
        for user_id in self._timers.pop_due(settle_to):
            state = self.state(user_id)
            self._tick(UserTurn(user_id, state, now_ms, out), settle_to)
            self._timers.set(user_id, self._time_due(state))
        return out

    # -- admission and release ----------------------------------------------------

    def _admit(self, events: Iterable[Decoded], now_ms: int, out: Output) -> None:
        """Put each read event in its user's reorder buffer, or say why not."""
        latest_ms = now_ms + self.engine.max_future_skew_ms
        states = self.states
        dirty = out.dirty
        arrived = self._waiting.arrived
        #: source -> the highest event time admitted from it in this batch
        highest: dict[str, int] = {}
        for decoded in events:
            event = decoded.event
            ts = event.ts
            if ts > latest_ms:
                out.rejected.append(self._too_far_ahead(decoded, now_ms))
                continue
            user_id = event.user_id
            state = states.get(user_id) or self.state(user_id)
            source, offset, offsets = decoded.source, decoded.offset, state.offsets
            if offset <= offsets.get(source, -1):
                continue  # a redelivery: already waiting, applied or rejected
            offsets[source] = offset
            dirty.add(user_id)
            buffer = state.buffer
            if ts <= state.processed_to_ms:
                out.rejected.append(self._too_late(decoded, state))
            elif buffer and _is_waiting(buffer, event.event_id):
                out.duplicates += 1
            else:
                buffer.append(decoded)
                arrived.append((ts, user_id))
                seen = highest.get(source)
                if seen is None or seen < ts:
                    highest[source] = ts
        # One clock update per stream is the same as one per event: the batch was read at
        # one wall-clock time, and only the highest event time counts.
        for source, ts in highest.items():
            self.clock.observe(source, ts, now_ms)

    def _too_far_ahead(self, decoded: Decoded, now_ms: int) -> Rejection:
        ahead_s = (decoded.event.ts - now_ms) / 1000
        skew_s = self.engine.max_future_skew_ms // 1000
        reason = f"ts is {ahead_s:.0f} s ahead of the clock (at most {skew_s} s)"
        return Rejection(decoded, "future_timestamp", reason)

    def _too_late(self, decoded: Decoded, state: UserState) -> Rejection:
        reason = (
            f"ts {iso_ms(decoded.event.ts)} is not after {iso_ms(state.processed_to_ms)}, up "
            f"to which this user's events were already applied (allowed lateness "
            f"{self.engine.lateness_ms} ms)"
        )
        return Rejection(decoded, "too_late", reason)

    def _release(self, turn: UserTurn, settle_to: int) -> None:
        """Apply the user's waiting events up to ``settle_to`` in event-time order, each
        after the user's deadlines, expiries and re-checks that fall before it."""
        state = turn.state
        buffer = state.buffer
        if len(buffer) == 1:  # the common case, kept cheap
            if buffer[0].event.ts > settle_to:
                return
            # Emptied in place: a new list per release would be one more young object for
            # the garbage collector to scan.
            ready = [buffer.pop()]
        else:
            ready = [d for d in buffer if d.event.ts <= settle_to]
            state.buffer = [d for d in buffer if d.event.ts > settle_to]
            ready.sort(key=_read_order)
        user_id = turn.user_id
        timers = self._timers
        due_by_user = timers.due_by_user
        out = turn.out
        for decoded in ready:
            due = due_by_user.get(user_id)
            if due is not None and due < decoded.event.ts:
                self._tick(turn, decoded.event.ts - 1)
                timers.set(user_id, self._time_due(state))
            changes_before = len(out.changes)
            armed = self._apply(decoded, turn)
            # Only a new deadline or a tag change can need an earlier wake-up; one that
            # moved later or went away is found (and rescheduled) when it comes due.
            if armed or len(out.changes) != changes_before:
                timers.set(user_id, self._time_due(state))
        out.dirty.add(user_id)

    def _apply(self, decoded: Decoded, turn: UserTurn) -> bool:
        """One event's steps, in order (True when it armed a deadline): consent and time
        zone, stops, features, starts, then the condition rules the event touched. A
        rule that raises leaves no output for the event."""
        out, state, event, source = turn.out, turn.state, decoded.event, decoded.source
        changes_before, triggers_before = len(out.changes), len(out.triggers)
        ts = event.ts
        if ts > state.processed_to_ms:
            state.processed_to_ms = ts
        # Events are applied in event-time order, so the user's latest time is this
        # event's, and every window ends at it.
        if ts > state.latest_ts:
            state.latest_ts = ts
        t = state.latest_ts
        try:
            if source == "accounts":
                self._profile(event, turn)
            stopped = self._deadlines.stop(event, source, turn)
            touched = self._router.update(event, source, state)
            armed = self._deadlines.start(event, source, state, t, stopped)
            if touched:
                self._tags.evaluate_all(touched, turn, t, [event.event_id])
            return armed
        except Exception as exc:  # a rule bug must not stop the events behind it
            del out.changes[changes_before:]
            del out.triggers[triggers_before:]
            reason = f"engine error: {type(exc).__name__}: {exc}"
            out.rejected.append(Rejection(decoded, "engine_error", reason))
            return False

    # -- the steps ----------------------------------------------------------------

    def _profile(self, event: Event, turn: UserTurn) -> None:
        """An account event: the user's time zone and consent to personalisation."""
        assert type(event) is Account  # not isinstance: pydantic's metaclass makes that slow
        state = turn.state
        if event.timezone:
            state.tz = event.timezone
        if event.personalization is not None and event.personalization != state.personalization:
            state.personalization = event.personalization
            if not event.personalization:
                self._tags.clear_marketing(turn, event)

    def _tick(self, turn: UserTurn, settle_to_ms: int) -> None:
        """A user's time-driven steps up to ``settle_to_ms`` (event time, epoch ms),
        which becomes the user's settled time."""
        state = turn.state
        if settle_to_ms <= state.processed_to_ms:
            return
        self._deadlines.fire_due(turn, settle_to_ms)
        self._tags.expire(turn, settle_to_ms)
        state.processed_to_ms = settle_to_ms
        self._router.prune(state, max(state.latest_ts, settle_to_ms) - self.engine.lateness_ms)
        self._deadlines.forget_markers(state, settle_to_ms)
        turn.out.dirty.add(turn.user_id)

    def _time_due(self, state: UserState) -> int | None:
        """When the user's next deadline, expiry or recheck comes due, if any."""
        due: int | None = None
        if state.pending:
            due = self._deadlines.next_due(state)
        if state.tags:
            expiry = self._tags.next_due(state)
            if due is None or (expiry is not None and expiry < due):
                due = expiry
        return due

    def _schedule(self, user_id: str, state: UserState) -> None:
        """Wake the user when a waiting event or time-driven work comes due."""
        self._timers.set(user_id, self._time_due(state))
        for decoded in state.buffer:
            self._waiting.add(decoded.event.ts, user_id)


def _idle_horizon_ms(rules: Iterable[Rule], features: Iterable[Any], lateness_ms: int) -> int:
    """The longest span any rule looks back over (event time, ms), plus the lateness:
    feature windows, sequence ``within``s, tag lifetimes and cooldowns, fired-cart
    markers, and absence ``within``s that are constants (one that depends on the data
    keeps its deadline armed, and an armed deadline keeps the user anyway)."""
    spans = [MARKER_RETENTION_MS]
    for feature in features:
        spans.append(feature.retain_ms)
        spans.append(getattr(feature, "within_ms", 0))  # sequences keep a pending start
    for rule in rules:
        spans += [rule.ttl_ms, rule.cooldown_ms]
        if rule.absence is not None and not rule.absence.within.names:
            spans.append(int(rule.absence.within.run(Env({}, {}))))
    return max(spans) + lateness_ms


def _is_waiting(buffer: list[Decoded], event_id: str) -> bool:
    """Whether an event with ``event_id`` already waits in ``buffer`` (a producer retry)."""
    return any(waiting.event.event_id == event_id for waiting in buffer)


def _read_order(decoded: Decoded) -> tuple[int, str, str]:
    """The order waiting events are applied in: event time, then stream, then id."""
    return (decoded.event.ts, decoded.source, decoded.event.event_id)


def unreadable_state() -> UserState:
    """The state that replaces one that cannot be read: empty, and never consenting to
    marketing until the user says so again (a lost opt-out must not be re-targeted)."""
    state = UserState()
    state.personalization = False
    return state
