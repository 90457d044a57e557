"""Event time for one partition: how far the engine may consider time to have gone.

Each input stream of a partition has its own clock: the highest event time
seen on it, and the wall-clock moment that was last seen. A stream that is
quiet lets its event time advance with the wall clock, so deadlines of quiet
users still fire; a stream that is busy but behind (a lagging orders topic
during a replay) holds the partition back, so an order that has not been
read yet can still cancel a deadline. The partition's watermark is the
slowest stream's time minus the allowed lateness.

No stream's time runs ahead of the wall clock: an event stamped in the
future (within the accepted skew) waits until the wall clock reaches it, so
no single event, and no set of events, can move the watermark past
``now - lateness``.

After a restart or a rebalance the owner **holds** every input stream until
its consumer has read the backlog that was there at assignment: a held
stream's time is the highest event time read from it, without the wall
clock's help (so downtime does not count as time passed), and a held
stream that has no time yet holds the whole partition. Nothing is judged
before the backlog behind it is read.

A stream whose consumer has read everything there is (**idle**: caught up
with its partition's end) does not hold the partition back at the time of
its last, possibly old, event: anything it brings next is read from now on,
so its time is the wall clock. Without this a rarely used topic (account
changes) would keep every tag of a drained backlog waiting for the wall
clock to reach that topic's last event. Reading an event makes it active
again.

A stream known to have unread events (**behind**: its partition holds more
than its consumer has handled, a worker falling behind under load) follows
neither the wall clock nor idleness: its time is the highest event time
read. The wall clock stands in only for a stream that has nothing unread;
one with a queue of unread events would otherwise run ahead of them, and
they would come too late.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["PartitionClock", "StreamClock"]


@dataclass(slots=True)
class StreamClock:
    """One input stream's clock. Mutable: every event read moves it."""

    #: the highest event time read on the stream (epoch ms, UTC)
    highest_event_ms: int
    #: the wall-clock time (epoch ms) the stream was last read
    seen_at_wall_ms: int


class PartitionClock:
    """Watermark of one partition, over all its input streams."""

    __slots__ = ("behind", "held", "idle", "lateness_ms", "streams")

    def __init__(self, *, lateness_ms: int) -> None:
        self.lateness_ms = lateness_ms
        #: stream -> its clock
        self.streams: dict[str, StreamClock] = {}
        #: streams whose backlog is still being read (see the module docstring)
        self.held: set[str] = set()
        #: streams whose consumer has read everything there is (see the module docstring)
        self.idle: set[str] = set()
        #: streams known to have unread events (see the module docstring)
        self.behind: set[str] = set()

    def mark_idle(self, stream: str) -> None:
        """``stream``'s consumer is at the end of its partition: its time is the wall
        clock's until it reads another event."""
        if stream not in self.held:
            self.idle.add(stream)

    def set_behind(self, streams: Iterable[str]) -> None:
        """The streams that have unread events now (all the others have none)."""
        self.behind = set(streams)

    def hold(self, streams: Iterable[str], now_ms: int) -> None:
        """Stop ``streams`` following the wall clock until :meth:`release` (a restart or a
        new assignment: their backlog is unread). Downtime before ``now_ms`` is not time."""
        for stream in streams:
            self.held.add(stream)
            clock = self.streams.get(stream)
            if clock is not None:
                clock.seen_at_wall_ms = now_ms

    def release(self, stream: str, now_ms: int) -> None:
        """``stream``'s backlog is read: from ``now_ms`` it follows the wall clock again."""
        if stream in self.held:
            self.held.discard(stream)
            clock = self.streams.get(stream)
            if clock is not None:
                clock.seen_at_wall_ms = max(clock.seen_at_wall_ms, now_ms)

    def observe(self, stream: str, event_ts_ms: int, now_ms: int) -> None:
        """Record that an event of ``stream`` with time ``event_ts_ms`` was read at ``now_ms``."""
        if self.idle:
            self.idle.discard(stream)
        clock = self.streams.get(stream)
        if clock is None:
            self.streams[stream] = StreamClock(event_ts_ms, now_ms)
        else:
            if event_ts_ms > clock.highest_event_ms:
                clock.highest_event_ms = event_ts_ms
            clock.seen_at_wall_ms = now_ms

    def watermark(self, now_ms: int) -> int | None:
        """Event time (ms) up to which everything is taken as seen; None before any event."""
        slowest: int | None = None
        waiting = self.held | self.behind if self.behind else self.held
        if waiting and any(stream not in self.streams for stream in waiting):
            return None  # a stream with unread events and no time yet holds everything
        idle = self.idle
        for stream, clock in self.streams.items():
            high, seen_at = clock.highest_event_ms, clock.seen_at_wall_ms
            following_wall = stream not in waiting and now_ms > seen_at
            time_ms = high + now_ms - seen_at if following_wall else high
            if stream in idle and stream not in waiting:
                time_ms = now_ms
            if time_ms > now_ms:
                time_ms = now_ms
            if slowest is None or time_ms < slowest:
                slowest = time_ms
        return None if slowest is None else slowest - self.lateness_ms

    def to_list(self) -> list[list[object]]:
        """Plain data for the changelog (so a restarted worker keeps its time)."""
        clocks = self.streams
        return [
            [stream, clocks[stream].highest_event_ms, clocks[stream].seen_at_wall_ms]
            for stream in sorted(clocks)
        ]

    def restore(self, data: list[list[object]]) -> None:
        """Merge clocks read back from the changelog."""
        for stream, high, seen in data:
            assert isinstance(stream, str) and isinstance(high, int) and isinstance(seen, int)
            clock = self.streams.get(stream)
            if clock is None or high > clock.highest_event_ms:
                self.streams[stream] = StreamClock(high, seen)
