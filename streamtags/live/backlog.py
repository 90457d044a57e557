"""Where each owned input stream stands, and what that means for its partition's clock.

After an assignment every stream of a new partition is held (see
:mod:`streamtags.engine.clock`) until its consumer has read the backlog that
was there: :meth:`StreamPositions.expect` learns each backlog's end, and
:meth:`StreamPositions.note_read` releases a stream once a message at or past
it was read (valid or not). A stream whose consumer has read everything its
partition holds is idle (:meth:`StreamPositions.mark_idle`), so a rarely used
topic does not hold the others back at its last event's time; one whose
partition holds more than was read is behind (:meth:`StreamPositions.mark_behind`),
so its time does not run ahead of its unread events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

from streamtags.engine.clock import PartitionClock

__all__ = ["StreamPositions"]

log = logging.getLogger("streamtags.live.backlog")

Where = tuple[int, str]
"""(input partition, stream)."""


class StreamPositions:
    """Read offsets and backlog ends of every owned (partition, stream)."""

    def __init__(self, partition_end: Callable[[int, str], int | None] | None = None) -> None:
        #: (partition, stream) -> the offset its partition ends at now, if the consumer knows
        self.partition_end = partition_end
        #: (partition, stream) -> the highest offset read
        self.read_to: dict[Where, int] = {}
        #: (partition, stream) -> the offset its backlog at assignment ends at
        self.backlog_ends: dict[Where, int] = {}

    def expect(
        self,
        clocks: Mapping[int, PartitionClock],
        ends: Mapping[Where, tuple[int, int]],
        now_ms: int,
    ) -> None:
        """``ends``: ``(start, end)`` offsets at assignment, ``start`` the first offset this
        owner reads (the group's committed offset). A stream with nothing to
        read follows the wall clock again at once; the others once read to their end."""
        for (number, stream), (start, end) in ends.items():
            clock = clocks.get(number)
            if clock is None:
                continue
            self.read_to[(number, stream)] = start - 1
            if start >= end:
                clock.release(stream, now_ms)
            else:
                self.backlog_ends[(number, stream)] = end

    def note_read(
        self,
        clocks: Mapping[int, PartitionClock],
        messages: Iterable[tuple[int, str, int]],
        now_ms: int,
    ) -> None:
        """Messages read (partition, stream, offset), valid or not."""
        read_to, backlog_ends = self.read_to, self.backlog_ends
        for number, stream, offset in messages:
            if offset > read_to.get((number, stream), -1):
                read_to[(number, stream)] = offset
            end = backlog_ends.get((number, stream)) if backlog_ends else None
            if end is not None and offset + 1 >= end:
                del backlog_ends[(number, stream)]
                clock = clocks.get(number)
                if clock is not None:
                    clock.release(stream, now_ms)
                log.info(
                    "partition %d: %s backlog read; its time follows the clock", number, stream
                )

    def release(
        self, clocks: Mapping[int, PartitionClock], numbers: Iterable[int], now_ms: int
    ) -> None:
        """Stop waiting for the backlogs of partitions ``numbers`` (their ends could not be
        learnt): judge them as before. Other partitions still reading theirs wait on."""
        wanted = set(numbers)
        for key in [key for key in self.backlog_ends if key[0] in wanted]:
            del self.backlog_ends[key]
        for number in wanted:
            clock = clocks.get(number)
            if clock is not None:
                for stream in list(clock.held):
                    clock.release(stream, now_ms)

    def mark_behind(self, clocks: Mapping[int, PartitionClock], streams: Iterable[str]) -> None:
        """Tell each clock which of ``streams`` have unread events (their partition's
        end, as the consumer last saw it, is past what was read)."""
        if self.partition_end is None:
            return
        names = list(streams)
        for number, clock in clocks.items():
            behind = []
            for stream in names:
                end = self.partition_end(number, stream)
                if end is not None and self.read_to.get((number, stream), -1) + 1 < end:
                    behind.append(stream)
            clock.set_behind(behind)

    def mark_idle(self, clocks: Mapping[int, PartitionClock], streams: Iterable[str]) -> None:
        """Tell each clock which of ``streams`` have read everything there is."""
        if self.partition_end is None:
            return
        names = list(streams)
        for number, clock in clocks.items():
            for stream in names:
                end = self.partition_end(number, stream)
                if end is not None and self.read_to.get((number, stream), -1) + 1 >= end:
                    clock.mark_idle(stream)

    def drop(self, number: int) -> None:
        """Forget a revoked partition's positions."""
        for positions in (self.backlog_ends, self.read_to):
            for key in [k for k in positions if k[0] == number]:
                del positions[key]
