"""The pure core: ``(state, events, now) -> (state, tag changes, coupon triggers)``.

Synchronous and free of I/O: no Faust, Kafka, Redis or asyncio. A
:class:`Partition` holds one partition's user states, clock and deadline
index; the live worker and the offline backtest drive the same code::

    engine = Engine(load_rules(Path("rules")), lateness_ms=10_000)
    part = engine.partition()
    out = part.process(events, now_ms)      # events: Decoded, in read order
    out = part.advance(now_ms)              # fire what is due for quiet users
    part.next_deadline_ms()                 # when to call advance again

Semantics (event time throughout, epoch ms UTC):

- A condition rule is evaluated when one of its features took an event,
  over windows ending at the user's latest event time (so events shuffled
  within the allowed lateness give the same tags).
- An absence rule arms a deadline on ``start`` and cancels it on a matching
  ``stop`` whose time is not after the deadline, also when the stop was read
  first. A deadline fires once the partition's watermark passes it.
- Tags: applied, renewed (still true and the expiry moves by at least a
  quarter of the TTL), cleared (TTL passed, condition ended for
  ``clear: when_false`` rules, the stop event for ``clear_on_stop``, or the
  user opted out of personalisation, for marketing tags). A cooldown stops
  a tag being applied again too soon.
- Replays are idempotent: each user remembers the highest offset applied
  per source, and every change id and trigger id is a hash of its content.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator

from streamtags.contracts.events import Account, Event
from streamtags.contracts.ingest import Decoded
from streamtags.engine.clock import PartitionClock
from streamtags.engine.deadlines import Deadlines
from streamtags.engine.output import Change, Output, Trigger, UserTurn
from streamtags.engine.routing import FeatureRouter
from streamtags.engine.state import UserState
from streamtags.engine.tags import TagBook
from streamtags.errors import StateFormatError
from streamtags.rulebook.loader import Ruleset

__all__ = ["Change", "Engine", "Output", "Partition", "Trigger"]


class Engine:
    """Compiled rules plus the indexes that route events to them. Shared by partitions."""

    def __init__(self, ruleset: Ruleset, *, lateness_ms: int) -> None:
        self.ruleset = ruleset
        #: how late (event time, ms) an event may be read and still count in full
        self.lateness_ms = lateness_ms
        self.rules = ruleset.rules
        self.router = FeatureRouter(self.rules)
        #: feature key -> feature: also the packers of every user's stored state
        self.features = self.router.features
        self.tags = TagBook(self.rules)
        self.deadlines = Deadlines(self.rules, tags=self.tags, lateness_ms=lateness_ms)

    def partition(self, *, load: Callable[[str], UserState | None] | None = None) -> Partition:
        """A fresh partition; ``load`` fetches a user's stored state on a cache miss."""
        return Partition(self, load=load)


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


class Partition:
    """One partition's users, clock and wake-ups. Not thread-safe; one owner."""

    def __init__(
        self, engine: Engine, *, load: Callable[[str], UserState | None] | None = None
    ) -> None:
        self.engine = engine
        self.clock = PartitionClock(lateness_ms=engine.lateness_ms)
        self.states: dict[str, UserState] = {}
        self._load = load
        self._router = engine.router
        self._tags = engine.tags
        self._deadlines = engine.deadlines
        self._wakeups = _WakeUps()

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
            state = UserState()
        self.adopt(user_id, state)
        return state

    def adopt(self, user_id: str, state: UserState) -> None:
        """Take a stored state (after recovery) and schedule its deadlines."""
        self.states[user_id] = state
        self._schedule(user_id, state)

    def forget(self, user_ids: Iterable[str]) -> None:
        """Drop cached states (already written back) to bound memory."""
        for user_id in user_ids:
            self.states.pop(user_id, None)

    def next_deadline_ms(self) -> int | None:
        """The earliest event time at which :meth:`advance` has work, if any."""
        return self._wakeups.earliest()

    def watermark(self, now_ms: int) -> int | None:
        """The partition's watermark at wall-clock ``now_ms``."""
        return self.clock.watermark(now_ms)

    # -- the two entry points ---------------------------------------------------

    def process(self, events: Iterable[Decoded], now_ms: int) -> Output:
        """Apply a batch of validated events (read order), then fire what became due."""
        out = Output()
        clock = self.clock
        streams = clock.streams
        heap = self._wakeups.heap
        lateness = self.engine.lateness_ms
        for decoded in events:
            event = decoded.event
            clock.observe(decoded.source, event.ts, now_ms)
            # What was due fires before later events; the stream's own time bounds
            # the watermark, so the full computation runs only when it might matter.
            if heap and heap[0][0] <= streams[decoded.source].highest_event_ms - lateness:
                watermark = clock.watermark(now_ms)
                if watermark is not None and heap[0][0] <= watermark:
                    out.extend(self.advance(now_ms))
            state = self.state(event.user_id)
            if decoded.offset <= state.offsets.get(decoded.source, -1):
                continue  # a redelivery: its effects are already in the state
            state.offsets[decoded.source] = decoded.offset
            turn = UserTurn(event.user_id, state, now_ms, out)
            changes_before = len(out.changes)
            try:
                armed = self._steps(event, decoded.source, turn)
            except Exception as exc:  # a rule bug must not stop the events behind it
                out.failed.append((decoded, f"engine error: {type(exc).__name__}: {exc}"))
                continue
            out.dirty.add(event.user_id)
            # Only a new deadline or a tag change can need an earlier wake-up; one that
            # moved later or went away is found (and rescheduled) when it comes due.
            if armed or len(out.changes) != changes_before:
                self._schedule(event.user_id, state)
        out.extend(self.advance(now_ms))
        return out

    def advance(self, now_ms: int) -> Output:
        """Fire deadlines, expiries and re-checks up to the watermark at ``now_ms``."""
        out = Output()
        watermark = self.clock.watermark(now_ms)
        if watermark is None:
            return out
        for user_id in self._wakeups.pop_due(watermark):
            state = self.state(user_id)
            self._tick(UserTurn(user_id, state, now_ms, out), watermark)
            out.dirty.add(user_id)
            self._schedule(user_id, state)
        return out

    # -- the steps ----------------------------------------------------------------

    def _steps(self, event: Event, source: str, turn: UserTurn) -> bool:
        """One event's steps, in order; True when it armed a deadline."""
        state = turn.state
        if event.ts > state.latest_ts:
            state.latest_ts = event.ts
        # Conditions see windows ending at the user's latest event time, so events
        # shuffled within the allowed lateness give the same tags.
        t = state.latest_ts
        if source == "accounts":
            self._profile(event, turn)
        stopped = self._deadlines.stop(event, source, turn)
        touched = self._router.update(event, source, state)
        armed = self._deadlines.start(event, source, state, t, stopped)
        if touched:
            self._tags.evaluate_all(touched, turn, t, [event.event_id])
        return armed

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

    def _tick(self, turn: UserTurn, watermark: int) -> None:
        """A user's time-driven steps, up to the watermark (event time, epoch ms)."""
        state = turn.state
        self._deadlines.fire_due(turn, watermark)
        self._tags.expire(turn, watermark)
        self._router.prune(state, max(state.latest_ts, watermark) - self.engine.lateness_ms)
        self._deadlines.forget_markers(state, watermark)

    def _schedule(self, user_id: str, state: UserState) -> None:
        """Wake the user when a deadline, an expiry or a recheck comes due."""
        due: int | None = None
        if state.pending:
            due = self._deadlines.next_due(state)
        if state.tags:
            expiry = self._tags.next_due(state)
            if due is None or (expiry is not None and expiry < due):
                due = expiry
        self._wakeups.set(user_id, due)
