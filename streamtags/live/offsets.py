"""How far each input stream is surely committed: what the idle sweep may forget.

A user deleted while one of their events could still be redelivered would
count that event again, as a new user's. So the idle sweep
(:meth:`~streamtags.live.tagger.LiveTagger.sweep`) deletes only users whose
every event is at or below the committed offset of its (partition, stream):

- at assignment, the consumer's position is the group's committed offset;
- an offset acked here is committed by Faust within its commit interval, so
  offsets acked before the *previous* sweep started count (the sweep
  interval is far longer than the commit interval).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["CommittedOffsets"]

Where = tuple[int, str]
"""(input partition, stream)."""


class CommittedOffsets:
    """Per (partition, stream): offsets known to be committed."""

    def __init__(self) -> None:
        self._assigned: dict[Where, int] = {}
        self._acked: dict[Where, int] = {}
        #: ``_acked`` when the last sweep started; the sweep after it relies on it
        self._acked_at_sweep: dict[Where, int] = {}
        #: what the running sweep relies on: acked before the previous sweep started
        self._committed_acks: dict[Where, int] = {}

    def assigned(self, number: int, stream: str, position: int) -> None:
        """The consumer resumed ``stream`` of partition ``number`` at ``position``."""
        self._assigned[(number, stream)] = position - 1

    def acked(self, read_to: Mapping[Where, int]) -> None:
        """Events up to these offsets were acked just now."""
        for where, offset in read_to.items():
            if offset > self._acked.get(where, -1):
                self._acked[where] = offset

    def sweep_starts(self) -> None:
        """A sweep starts: it may rely on what was acked before the previous one."""
        self._committed_acks, self._acked_at_sweep = self._acked_at_sweep, dict(self._acked)

    def drop(self, number: int) -> None:
        """Partition ``number`` was revoked: a later owner learns its offsets anew."""
        for table in (self._assigned, self._acked, self._acked_at_sweep, self._committed_acks):
            for where in [w for w in table if w[0] == number]:
                del table[where]

    def of(self, number: int) -> dict[str, int]:
        """Stream -> the highest offset of partition ``number`` surely committed."""
        committed: dict[str, int] = {}
        for (owner, stream), offset in [*self._committed_acks.items(), *self._assigned.items()]:
            if owner == number:
                committed[stream] = max(committed.get(stream, -1), offset)
        return committed
