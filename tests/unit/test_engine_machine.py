"""The engine is total: whatever mix of events, clock ticks and restarts it sees,
no call raises or hangs, every output matches its published contract, and every
user's stored state stays small and reads back.

A hypothesis state machine drives one partition of the whole catalogue: it
feeds batches of plausible events (sometimes shuffled, late by seconds or
days, far in the future, retried by their producer or redelivered at the same
offsets), lets the clock run on by anything from a millisecond to 30 days, and
restarts the partition from what it stored (every user's bytes and the clock),
as a worker taking over the partition would. Times are event time, epoch
milliseconds UTC; the wall clock ``now`` never goes back.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from streamtags.contracts.ingest import Decoded
from streamtags.contracts.records import CouponTrigger, TagChange
from streamtags.engine.partition import Engine, Output
from streamtags.engine.state import UserState
from tests.unit.histories import (
    DAY,
    HOUR,
    LATENESS_MS,
    RULES,
    SECOND,
    STATE_LIMIT_BYTES,
    T0,
    Producer,
    Sent,
    restarted,
    scenes,
    time_limit,
)

USERS = ("u1", "u2", "u3", "u4")

#: Where a batch's scene starts, relative to the wall clock (ms): just now, a little
#: later, late within or beyond the allowed lateness, or days ahead.
SCENE_STARTS = st.one_of(
    st.integers(0, 10 * SECOND),
    st.integers(10 * SECOND, 2 * HOUR),
    st.integers(-LATENESS_MS, 0),
    st.integers(-2 * DAY, -LATENESS_MS),
    st.integers(DAY, 30 * DAY),
)
#: How far a tick moves the clock (ms): 1 ms to 30 days.
TICKS = st.one_of(
    st.integers(1, SECOND), st.integers(SECOND, 2 * HOUR), st.integers(2 * HOUR, 30 * DAY)
)


class EngineMachine(RuleBasedStateMachine):
    """One partition of the catalogue, fed, ticked and restarted at random."""

    def __init__(self) -> None:
        super().__init__()
        self.engine = Engine(RULES, lateness_ms=LATENESS_MS)
        self.part = self.engine.partition()
        #: the wall clock (epoch ms)
        self.now = T0
        self.producer = Producer()
        #: next offset per stream
        self.offsets: Counter[str] = Counter()
        #: every message read so far, in read order (for retries and redeliveries)
        self.read: list[Decoded] = []

    # -- rules --------------------------------------------------------------------------

    @rule(data=st.data())
    def feed(self, data: st.DataObject) -> None:
        """A batch: one user's scene (maybe shuffled), plus some producer retries of
        events read before, each at a new offset."""
        user_id = data.draw(st.sampled_from(USERS), label="user")
        start = self.now + data.draw(SCENE_STARTS, label="scene starts at now +")
        scene = data.draw(scenes(start), label="scene")
        sent = [self.producer.send(user_id, line) for line in scene]
        if self.read:
            earlier = st.sampled_from(self.read).map(lambda d: Sent(d.source, d.event))
            sent += data.draw(st.lists(earlier, max_size=3), label="retries")
        if data.draw(st.booleans(), label="shuffled"):
            sent = data.draw(st.permutations(sent), label="read order")
        batch = [self._at_next_offset(item) for item in sent]
        self._process(batch, max(self.now, *(d.event.ts for d in batch)))

    @precondition(lambda self: bool(self.read))
    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        """After a crash, the messages from the committed offset on come again, at the
        same offsets."""
        oldest = max(0, len(self.read) - 40)
        start = data.draw(st.integers(oldest, len(self.read) - 1), label="read again from")
        self._process(self.read[start:], self.now, remember=False)

    @rule(step_ms=TICKS)
    def tick(self, step_ms: int) -> None:
        """The wall clock runs on with nothing read: deadlines, expiries, re-checks."""
        self.now += step_ms
        with time_limit(f"advance(now={self.now})"):
            out = self.part.advance(self.now)
        self._check_output(out)

    @rule()
    def restart(self) -> None:
        """A fresh partition from every user's stored bytes and the stored clock."""
        self.part = restarted(self.part)

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def stored_states_are_small_and_read_back(self) -> None:
        """Every user's stored bytes are under 8 KiB and read back into a state that
        stores the same bytes (the engine would otherwise silently start afresh)."""
        features = self.engine.features
        for user_id in list(self.part.states):
            stored = self.part.dump(user_id)
            assert len(stored) < STATE_LIMIT_BYTES, (user_id, len(stored))
            assert UserState.from_bytes(stored, features).to_bytes(features) == stored

    # -- helpers ------------------------------------------------------------------------

    def _at_next_offset(self, item: Sent) -> Decoded:
        offset = self.offsets[item.stream]
        self.offsets[item.stream] += 1
        return Decoded(0, item.stream, offset, item.event)

    def _process(self, batch: list[Decoded], now: int, *, remember: bool = True) -> None:
        self.now = now
        with time_limit(f"process({len(batch)} events, now={now})"):
            out = self.part.process(batch, now)
        self._check_output(out)
        if remember:
            self.read += batch

    def _check_output(self, out: Output) -> None:
        """Changes and triggers match the published records; a failed event has no part
        in any change."""
        for change in out.changes:
            TagChange.model_validate(change)
        for trigger in out.triggers:
            CouponTrigger.model_validate(trigger)
        failed_ids = {decoded.event.event_id for decoded, _ in out.failed}
        for change in out.changes:
            partial = failed_ids.intersection(change["evidence"]["event_ids"])
            assert not partial, f"failed events {partial} still changed {change['tag']}"


EngineMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: Any interleaving of events, ticks and restarts leaves the engine total.
TestAnyMixOfEventsTicksAndRestartsKeepsTheEngineTotal = EngineMachine.TestCase
