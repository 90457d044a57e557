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
from streamtags.contracts.ingest import Decoded
from streamtags.contracts.recordings import outgoing_from_line
from streamtags.engine.partition import Change, Engine, Output, Partition, Trigger
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


@dataclass
class Replay:
    """A simulated run: feed events, then advance the clock."""

    ruleset: Ruleset
    lateness_ms: int
    #: tag changes and coupon triggers, in the order the live worker ships them
    records: list[Change | Trigger] = field(default_factory=list)
    now_ms: int = 0

    def __post_init__(self) -> None:
        self.engine = Engine(self.ruleset, lateness_ms=self.lateness_ms)
        self.partition: Partition = self.engine.partition()

    def feed(self, events: Iterable[Decoded]) -> None:
        """Process events one at a time, each arriving at its own event time."""
        for decoded in events:
            self.now_ms = max(self.now_ms, decoded.event.ts)
            self._keep(self.partition.process([decoded], self.now_ms))

    def until(self, ts_ms: int) -> None:
        """Let the simulated clock run to ``ts_ms`` (plus lateness) and fire what is due."""
        self.now_ms = max(self.now_ms, ts_ms + self.lateness_ms)
        self._keep(self.partition.advance(self.now_ms))

    def _keep(self, out: Output) -> None:
        # Changes and triggers in the order the live worker ships them.
        self.records.extend(out.changes)
        self.records.extend(out.triggers)

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
