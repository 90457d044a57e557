"""Per-user rolling features: the state primitives rules are built from.

A feature watches one or more input streams, keeps a small piece of state
per user, and reports one value at an event time ``t`` (epoch ms, UTC):

=============  ==============================================  =========
kind           value at ``t``                                  type
=============  ==============================================  =========
count          matching events in ``(t - window, t]``          number
sum/avg/       of a numeric field over the window              number
min/max
distinct       distinct values of a field in the window        number
mode_count     events sharing the most common field value      number
sequence       ``first`` followed by ``then`` within           number
               ``within``, counted over the window
gap            the user's usual interval between matching      duration
               events (running mean, ms)
=============  ==============================================  =========

``count`` and ``sum`` with ``bucket`` keep per-bucket totals instead of raw
events: long horizons (90-day RFM) cost one entry per bucket, never one per
event; their window edges are exact to one bucket. Raw windows keep at most
``cap`` entries (newest win), distinct sets at most ``cap`` values: memory per
user is bounded whatever the user does, and a count saturates at ``cap``.

Identical feature definitions in different rules share one state (the key
is a hash of the definition), and changing a definition starts it afresh.
"""

from __future__ import annotations

import bisect
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import orjson
from mypy_extensions import mypyc_attr

from streamtags.contracts.events import STREAMS, Event
from streamtags.errors import FeatureSpecError
from streamtags.rulebook.expressions import ValueType
from streamtags.rulebook.fields import (
    Filter,
    Reader,
    compile_filter,
    field_reader,
)

__all__ = ["KINDS", "Feature", "build_feature"]


class _Common(NamedTuple):
    """What every kind of feature is given (see the attributes of :class:`Feature`).

    A named tuple rather than ``**kwargs`` forwarded to ``super().__init__``: mypyc
    miscompiles that forwarding (mypyc/mypyc#1162)."""

    key: str
    streams: tuple[str, ...]
    where: Filter
    where_spec: Mapping[str, Any] | None
    window_ms: int


# Compiled by mypyc (setup.py) as plain Python classes rather than native ones, here and
# in each kind below: their methods still run compiled, and one feature's method can still
# be replaced on the instance (the tests make a rule fail that way).
@mypyc_attr(native_class=False)
class Feature:
    """One compiled feature. State is plain JSON-able data owned by the user state."""

    value_type: ValueType = "number"

    def __init__(self, common: _Common) -> None:
        self.key = common.key
        self.streams = common.streams
        self.where = common.where
        #: the raw ``where`` mapping; features with equal specs share one filter run per event
        self.where_spec = common.where_spec
        self.window_ms = common.window_ms
        #: how long data is kept: the longest window of the features sharing this key
        self.retain_ms = common.window_ms

    def update(self, data: Any, event: Event, tz: str | None) -> Any:
        """Fold an event that passed ``where`` into ``data`` (None when new); return it."""
        raise NotImplementedError

    def value(self, data: Any, t_ms: int) -> float:
        """The feature's value at event time ``t_ms``."""
        raise NotImplementedError

    def prune(self, data: Any, t_ms: int) -> Any:
        """Drop what can no longer count at or after ``t_ms``; None when nothing is left."""
        return data

    def next_change_ms(self, data: Any, t_ms: int) -> int | None:
        """When the value next changes without new events (an entry leaving the window)."""
        return None

    def shown(self, data: Any, t_ms: int) -> list[str] | None:
        """Values worth showing as evidence (distinct IPs, say), or None."""
        return None

    def pack(self, data: Any, base_ms: int) -> Any:
        """Compact form for storage: times as milliseconds before ``base_ms``."""
        return data

    def unpack(self, packed: Any, base_ms: int) -> Any:
        """Inverse of :meth:`pack`."""
        return packed


@mypyc_attr(native_class=False)
class _RawWindow(Feature):
    """Entries ``(ts, value)`` sorted by time, at most ``cap`` of them. Tuples, not
    lists: the garbage collector stops tracking a tuple of plain values, and a user's
    windows hold many of them for a long time."""

    def __init__(self, common: _Common, *, agg: str, reader: Reader | None, cap: int) -> None:
        super().__init__(common)
        self.agg = agg
        self.reader = reader
        self.cap = cap

    def update(self, data: Any, event: Event, tz: str | None) -> Any:
        entries: list[tuple[Any, ...]] = data if data is not None else []
        value = self.reader(event, tz) if self.reader is not None else 1
        if value is None:
            return data
        entry = (event.ts, value)
        if not entries or entries[-1][0] <= event.ts:
            entries.append(entry)
        else:
            bisect.insort(entries, entry, key=lambda e: e[0])
        if len(entries) > self.cap:
            del entries[: len(entries) - self.cap]
        return entries

    def _live(self, data: Any, t_ms: int) -> list[Any]:
        start = t_ms - self.window_ms
        if data[0][0] > start and data[-1][0] <= t_ms:
            return [v for _, v in data]  # the common case: everything is in the window
        return [v for ts, v in data if start < ts <= t_ms]

    def value(self, data: Any, t_ms: int) -> float:
        if not data:
            return 0.0
        agg = self.agg
        if agg == "count":
            start = t_ms - self.window_ms
            if data[0][0] > start and data[-1][0] <= t_ms:
                return float(len(data))
            count = 0
            for ts, _ in data:  # a plain loop: faster than sum() over a generator
                if start < ts <= t_ms:
                    count += 1
            return float(count)
        live = self._live(data, t_ms)
        if not live:
            return 0.0

        if agg == "sum":
            return float(sum(live))
        if agg == "avg":
            return float(sum(live)) / len(live)
        if agg == "min":
            return float(min(live))
        if agg == "max":
            return float(max(live))
        if len(live) == 1:  # mode_count of one value, without building a Counter
            return 1.0
        return float(max(Counter(live).values()))  # mode_count

    def prune(self, data: Any, t_ms: int) -> Any:
        if not data:
            return None
        start = t_ms - self.retain_ms
        if data[0][0] > start:
            return data
        kept = [e for e in data if e[0] > start]
        return kept or None

    def next_change_ms(self, data: Any, t_ms: int) -> int | None:
        if not data:
            return None
        for ts, _ in data:
            if ts + self.window_ms > t_ms:
                return int(ts + self.window_ms)
        return None

    def pack(self, data: Any, base_ms: int) -> Any:
        if self.reader is None:  # a count: every value is 1, keep the times only
            return [base_ms - ts for ts, _ in data]
        return [[base_ms - ts, v] for ts, v in data]

    def unpack(self, packed: Any, base_ms: int) -> Any:
        if self.reader is None:
            return [(base_ms - ago, 1) for ago in packed]
        return [(base_ms - ago, v) for ago, v in packed]


@mypyc_attr(native_class=False)
class _Buckets(Feature):
    """``[[bucket_index, total], ...]`` with bucket index = ts // bucket_ms."""

    def __init__(self, common: _Common, *, agg: str, reader: Reader | None, bucket_ms: int) -> None:
        super().__init__(common)
        self.agg = agg
        self.reader = reader
        self.bucket_ms = bucket_ms

    def update(self, data: Any, event: Event, tz: str | None) -> Any:
        buckets: list[list[float]] = data if data is not None else []
        amount = self.reader(event, tz) if self.reader is not None else 1
        if amount is None:
            return data
        index = event.ts // self.bucket_ms
        for bucket in reversed(buckets):
            if bucket[0] == index:
                bucket[1] += amount
                return buckets
        buckets.append([index, amount])
        buckets.sort(key=lambda b: b[0])
        return buckets

    def value(self, data: Any, t_ms: int) -> float:
        if not data:
            return 0.0
        low = (t_ms - self.window_ms) // self.bucket_ms
        high = t_ms // self.bucket_ms
        # Lists, not generators: the same sums in the same order, faster.
        if data[0][0] > low and data[-1][0] <= high:
            return float(sum([total for _, total in data]))
        return float(sum([total for index, total in data if low < index <= high]))

    def prune(self, data: Any, t_ms: int) -> Any:
        if not data:
            return None
        low = (t_ms - self.retain_ms) // self.bucket_ms
        if data[0][0] > low:
            return data  # sorted by index: nothing to drop, and no copy to make
        kept = [b for b in data if b[0] > low]
        return kept or None

    def next_change_ms(self, data: Any, t_ms: int) -> int | None:
        if not data:
            return None
        for index, _ in data:
            leaves = int((index + 1) * self.bucket_ms + self.window_ms)
            if leaves > t_ms:
                return leaves
        return None


@mypyc_attr(native_class=False)
class _Distinct(Feature):
    """``[[value, last_seen_ts], ...]``, at most ``cap`` values (most recent win)."""

    def __init__(self, common: _Common, *, reader: Reader, cap: int) -> None:
        super().__init__(common)
        self.reader = reader
        self.cap = cap

    def update(self, data: Any, event: Event, tz: str | None) -> Any:
        value = self.reader(event, tz)
        if value is None:
            return data
        seen: list[list[Any]] = data if data is not None else []
        for entry in seen:
            if entry[0] == value:
                entry[1] = max(entry[1], event.ts)
                break
        else:
            seen.append([value, event.ts])
            if len(seen) > self.cap:
                seen.sort(key=lambda e: e[1])
                del seen[0]
        return seen

    def value(self, data: Any, t_ms: int) -> float:
        if not data:
            return 0.0
        start = t_ms - self.window_ms
        count = 0
        for _, ts in data:  # a plain loop: faster than sum() over a generator
            if start < ts <= t_ms:
                count += 1
        return float(count)

    def shown(self, data: Any, t_ms: int) -> list[str] | None:
        start = t_ms - self.window_ms
        return sorted(str(v) for v, ts in data or () if start < ts <= t_ms)

    def prune(self, data: Any, t_ms: int) -> Any:
        if not data:
            return None
        start = t_ms - self.retain_ms
        for _, ts in data:
            if ts <= start:
                break
        else:
            return data  # nothing to drop, and no copy to make
        kept = [e for e in data if e[1] > start]
        return kept or None

    def next_change_ms(self, data: Any, t_ms: int) -> int | None:
        if not data:
            return None
        times = [ts + self.window_ms for _, ts in data if ts + self.window_ms > t_ms]
        return int(min(times)) if times else None

    def pack(self, data: Any, base_ms: int) -> Any:
        return [[v, base_ms - ts] for v, ts in data]

    def unpack(self, packed: Any, base_ms: int) -> Any:
        return [[v, base_ms - ago] for v, ago in packed]


@mypyc_attr(native_class=False)
class _Sequence(Feature):
    """``[pending_first_ts | None, [match_ts, ...]]``: first then ``then`` within ``within``."""

    def __init__(
        self, common: _Common, *, first: Filter, then: Filter, within_ms: int, cap: int
    ) -> None:
        super().__init__(common)
        self.first = first
        self.then = then
        self.within_ms = within_ms
        self.cap = cap

    def update(self, data: Any, event: Event, tz: str | None) -> Any:
        if data is None:
            data = [None, []]
        pending, matches = data
        if (
            self.then(event, tz)
            and pending is not None
            and 0 <= event.ts - pending <= self.within_ms
        ):
            if event.ts not in matches:
                matches.append(event.ts)
                matches.sort()
                del matches[: max(0, len(matches) - self.cap)]
            pending = None  # each first completes at most one sequence
        elif self.first(event, tz):
            pending = event.ts if pending is None else max(pending, event.ts)
        data[0] = pending  # in place: a new list per event is garbage-collector work
        return data

    def value(self, data: Any, t_ms: int) -> float:
        if not data:
            return 0.0
        start = t_ms - self.window_ms
        count = 0
        for ts in data[1]:  # a plain loop: faster than sum() over a generator
            if start < ts <= t_ms:
                count += 1
        return float(count)

    def prune(self, data: Any, t_ms: int) -> Any:
        if not data:
            return None
        pending, matches = data
        start = t_ms - self.retain_ms
        stale = pending is not None and t_ms - pending > self.within_ms
        if not stale and (not matches or matches[0] > start):  # matches are sorted
            return data if pending is not None or matches else None
        matches = [ts for ts in matches if ts > start]
        if pending is not None and t_ms - pending > self.within_ms:
            pending = None
        return [pending, matches] if pending is not None or matches else None

    def next_change_ms(self, data: Any, t_ms: int) -> int | None:
        if not data:
            return None
        times = [ts + self.window_ms for ts in data[1] if ts + self.window_ms > t_ms]
        return int(min(times)) if times else None

    def pack(self, data: Any, base_ms: int) -> Any:
        pending, matches = data
        return [None if pending is None else base_ms - pending, [base_ms - ts for ts in matches]]

    def unpack(self, packed: Any, base_ms: int) -> Any:
        pending, matches = packed
        return [None if pending is None else base_ms - pending, [base_ms - ago for ago in matches]]


@mypyc_attr(native_class=False)
class _Gap(Feature):
    """``[last_ts, mean_gap_ms, gaps]``: the running mean of intervals (last 20 weigh most)."""

    value_type: ValueType = "duration"

    def update(self, data: Any, event: Event, tz: str | None) -> Any:
        if data is None:
            return [event.ts, 0, 0]
        last, mean, gaps = data
        if event.ts <= last:
            return data  # late or repeated: the interval is not new information
        gap = event.ts - last
        weight = min(gaps + 1, 20)
        data[:] = [event.ts, round(mean + (gap - mean) / weight), gaps + 1]
        return data

    def value(self, data: Any, t_ms: int) -> float:
        return float(data[1]) if data and data[2] else 0.0

    def pack(self, data: Any, base_ms: int) -> Any:
        return [base_ms - data[0], data[1], data[2]]

    def unpack(self, packed: Any, base_ms: int) -> Any:
        return [base_ms - packed[0], packed[1], packed[2]]


KINDS = ("count", "sum", "avg", "min", "max", "distinct", "mode_count", "sequence", "gap")


def build_feature(
    spec: Mapping[str, Any],
    *,
    parse_duration: Callable[[Any], int],
) -> Feature:
    """Compile one feature definition (a mapping from a rule file)."""
    kinds = [k for k in KINDS if k in spec]
    if len(kinds) != 1:
        raise FeatureSpecError(f"a feature needs exactly one of: {', '.join(KINDS)}")
    kind = kinds[0]
    allowed = {kind, "on", "where", "window", "bucket", "cap", "first", "then", "within"}
    unknown = set(spec) - allowed
    if unknown:
        raise FeatureSpecError(f"unknown feature keys: {', '.join(sorted(unknown))}")
    on = spec.get("on")
    streams = [on] if isinstance(on, str) else list(on or [])
    if not streams or any(s not in STREAMS for s in streams):
        raise FeatureSpecError(f"'on' must name input streams ({', '.join(STREAMS)}), got {on!r}")
    window_ms = parse_duration(spec["window"]) if "window" in spec else 0
    if kind != "gap" and not window_ms:
        raise FeatureSpecError(f"a {kind} feature needs a 'window'")
    cap = int(spec.get("cap", 64))
    if not 1 <= cap <= 10_000:
        raise FeatureSpecError("'cap' must be between 1 and 10000")
    # The window is not part of the key: "paid orders over 30 days" and "over 90
    # days" share one state, kept for the longest window that reads it.
    canonical = orjson.dumps({k: spec[k] for k in sorted(spec) if k != "window"}, default=str)
    key = format(zlib.crc32(canonical), "08x")[:6]
    common = _Common(
        key=key,
        streams=tuple(streams),
        where=compile_filter(streams, spec.get("where")),
        where_spec=spec.get("where"),
        window_ms=window_ms,
    )
    if kind == "gap":
        return _Gap(common)
    if kind == "sequence":
        if not isinstance(spec[kind], Mapping) or "within" not in spec:
            raise FeatureSpecError(
                "a sequence needs 'sequence: {first: ..., then: ...}' and 'within'"
            )
        seq = spec[kind]
        return _Sequence(
            common,
            first=compile_filter(streams, seq.get("first")),
            then=compile_filter(streams, seq.get("then")),
            within_ms=parse_duration(spec["within"]),
            cap=cap,
        )
    if kind == "count" and spec[kind] not in (True, "events"):
        raise FeatureSpecError("write 'count: events'")
    reader: Reader | None = None
    if kind not in ("count",):
        reader, info = field_reader(streams, str(spec[kind]))
        if kind in ("sum", "avg", "min", "max") and info.kind != "number":
            raise FeatureSpecError(f"{kind} needs a numeric field; {spec[kind]!r} is {info.kind}")
    if kind == "distinct":
        assert reader is not None
        return _Distinct(common, reader=reader, cap=cap)
    if "bucket" in spec:
        if kind not in ("count", "sum"):
            raise FeatureSpecError("'bucket' works with count and sum")
        bucket_ms = parse_duration(spec["bucket"])
        if bucket_ms > window_ms:
            raise FeatureSpecError("'bucket' must not be longer than 'window'")
        return _Buckets(common, agg=kind, reader=reader, bucket_ms=bucket_ms)
    return _RawWindow(common, agg=kind, reader=reader, cap=cap)
