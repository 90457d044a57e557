"""Replaying recorded events through the engine on a simulated clock.

The same :class:`~streamtags.engine.Partition` code as the live worker, fed
from a file instead of Kafka: events "arrive" when their event time says,
so the simulated wall clock is the highest event time read so far, and
``until`` advances it past the last event so pending deadlines can fire.
Same input, same output, every time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from streamtags.contracts.codec import decode_event
from streamtags.contracts.events import LATEST_TS_MS
from streamtags.contracts.ingest import Decoded
from streamtags.contracts.recordings import outgoing_from_line
from streamtags.engine.partition import Change, Engine, Output, Partition, Rejection, Trigger
from streamtags.errors import InvalidEvent, RecordingError
from streamtags.rulebook.loader import Ruleset

__all__ = ["Rejected", "Replay", "read_events"]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A recorded line that the live worker would dead-letter."""

    line: int
    reason: str


def read_events(path: Path) -> Iterator[Decoded | Rejected]:
    """Decode a recorded JSON Lines file; the offset of an event is its line number."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                message = outgoing_from_line(line, where=f"{path}:{number}")
                event = decode_event(message.stream, message.value)
            except (RecordingError, InvalidEvent) as exc:
                yield Rejected(number, str(exc))
                continue
            yield Decoded(0, message.stream, number, event)


#: How many of the following events may confirm that a jump ahead is the recording's
#: progress (a quiet spell) rather than one event's wrong clock.
CONFIRM_WITHIN_EVENTS = 100


def _confirmed(batch: list[Decoded], index: int, skew_ms: int) -> bool:
    """Whether an event of ``batch`` is followed by another stamped near it, or is last."""
    following = batch[index + 1 : index + 1 + CONFIRM_WITHIN_EVENTS]
    if not following:
        return True
    floor = batch[index].event.ts - skew_ms
    return any(decoded.event.ts >= floor for decoded in following)


@dataclass
class Replay:
    """A simulated run: feed events, then advance the clock."""

    ruleset: Ruleset
    lateness_ms: int
    #: how far (ms) an event may be stamped ahead of the recording's progress
    max_future_skew_ms: int = 300_000
    #: tag changes and coupon triggers, in the order the live worker ships them
    records: list[Change | Trigger] = field(default_factory=list)
    #: events the live worker would dead-letter (too far ahead, too late, a rule bug)
    rejections: list[Rejection] = field(default_factory=list)
    #: the simulated wall clock: the recording's progress (epoch ms)
    now_ms: int = 0
    #: where the recording ends (``--until``), if known: no event is later than it plus
    #: the skew, so even a last event cannot be an outlier that moves the clock
    end_ms: int | None = None

    def __post_init__(self) -> None:
        self.engine = Engine(
            self.ruleset,
            lateness_ms=self.lateness_ms,
            max_future_skew_ms=self.max_future_skew_ms,
        )
        self.partition: Partition = self.engine.partition()
        self._latest_ms = 0

    def feed(self, events: Iterable[Decoded]) -> None:
        """Process events one at a time, each arriving at its own event time.

        The clock follows the recording's progress. A quiet spell is progress: an
        event far ahead of the clock moves it when a later event (among the next
        :data:`CONFIRM_WITHIN_EVENTS`) is stamped near it too. A lone outlier is not:
        it is rejected (``future_timestamp``) as the live worker rejects an event
        stamped ahead of its wall clock, and moves nothing. So is any event stamped
        after the recording's known end (:attr:`end_ms`) plus the skew."""
        batch = list(events)
        skew = self.max_future_skew_ms
        latest_possible = self.end_ms + skew if self.end_ms is not None else LATEST_TS_MS
        for index, decoded in enumerate(batch):
            ts = decoded.event.ts
            if ts <= self.now_ms + skew:
                self.now_ms = max(self.now_ms, ts)
            elif ts <= latest_possible and (not self.now_ms or _confirmed(batch, index, skew)):
                self.now_ms = ts  # the first event, or a quiet spell the next events confirm
            if ts <= self.now_ms:
                self._latest_ms = max(self._latest_ms, ts)
            self._keep(self.partition.process([decoded], self.now_ms))

    def until(self, ts_ms: int) -> None:
        """Let the simulated clock run until everything up to ``ts_ms`` is settled:
        waiting events applied, deadlines and expiries before it fired."""
        self.now_ms = max(self.now_ms, ts_ms + self.lateness_ms)
        watermark = self.partition.watermark(self.now_ms)
        if watermark is not None and watermark <= ts_ms:
            # A stream read behind the others stays behind as time passes.
            self.now_ms += ts_ms - watermark + 1
        self._keep(self.partition.advance(self.now_ms))

    def settle(self) -> None:
        """:meth:`until` the latest event time read: apply every waiting event."""
        self.until(self._latest_ms)

    def _keep(self, out: Output) -> None:
        # Changes and triggers in the order the live worker ships them.
        self.records.extend(out.changes)
        self.records.extend(out.triggers)
        self.rejections.extend(out.rejected)

    def live_tags(self, user_id: str) -> set[str]:
        """Tags the user holds now (not expired on the simulated clock)."""
        state = self.partition.states.get(user_id)
        if state is None:
            return set()
        watermark = self.partition.watermark(self.now_ms) or 0
        return {tag for tag, live in state.tags.items() if live.expires_at_ms > watermark}

    def summary(self) -> dict[str, Counter[str]]:
        """Tag -> action -> count, plus ``coupon_triggers``."""
        table: dict[str, Counter[str]] = {}
        for record in self.records:
            if "change_id" in record:
                table.setdefault(record["tag"], Counter())[record["action"]] += 1
            else:
                table.setdefault("coupon_triggers", Counter())["sent"] += 1
        return table
