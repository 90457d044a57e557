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
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from streamtags.contracts.events import Account, Event
from streamtags.contracts.ingest import Decoded
from streamtags.engine.clock import PartitionClock
from streamtags.engine.deadlines import MARKER_RETENTION_MS, Deadlines
from streamtags.engine.lifecycle import Change, Output, Trigger
from streamtags.engine.state import UserState
from streamtags.errors import StateFormatError
from streamtags.rulebook.features import Feature
from streamtags.rulebook.fields import Filter, compile_filter, field_reader
from streamtags.rulebook.loader import Rule, Ruleset

__all__ = ["Change", "Engine", "Output", "Partition", "Trigger"]

#: The field whose value decides which ``where`` filters can match, per stream.
DISPATCH_FIELDS = {
    "orders": "status",
    "browse": "action",
    "logins": "outcome",
    "accounts": "action",
}


class _Dispatch:
    """A stream's filter groups, indexed by the value of its discriminating field."""

    __slots__ = ("always", "by_value", "field")

    def __init__(self, stream: str, groups: list[tuple[bytes, Filter, list[Feature]]]) -> None:
        self.field = DISPATCH_FIELDS.get(stream)
        self.always: list[tuple[Filter, list[Feature]]] = []
        specific: dict[str, list[tuple[Filter, list[Feature]]]] = {}
        for spec, where, features in groups:
            values = self._values(orjson.loads(spec))
            if values is None:
                self.always.append((where, features))
            else:
                for value in values:
                    specific.setdefault(value, []).append((where, features))
        self.by_value = {value: [*groups, *self.always] for value, groups in specific.items()}

    def _values(self, where: Any) -> list[str] | None:
        """The field values a ``where`` accepts, or None when it does not pin them."""
        if self.field is None or not isinstance(where, dict) or self.field not in where:
            return None
        condition = where[self.field]
        if isinstance(condition, str):
            return [condition]
        if isinstance(condition, list):
            return [str(v) for v in condition]
        if isinstance(condition, dict) and set(condition) <= {"eq", "in"}:
            values = condition.get("in", []) + ([condition["eq"]] if "eq" in condition else [])
            return [str(v) for v in values]
        return None

    def groups_for(self, event: Event) -> list[tuple[Filter, list[Feature]]]:
        """The groups whose filter may accept ``event``."""
        if self.field is None:
            return self.always
        return self.by_value.get(getattr(event, self.field), self.always)


class Engine:
    """Compiled rules plus the indexes that route events to them. Shared by partitions."""

    def __init__(self, ruleset: Ruleset, *, lateness_ms: int) -> None:
        self.ruleset = ruleset
        self.lateness_ms = lateness_ms
        self.rules = ruleset.rules
        features: dict[str, Feature] = {}
        rules_of_feature: dict[str, list[Rule]] = {}
        retain: dict[str, int] = {}
        for rule in self.rules:
            for feature in rule.features.values():
                features.setdefault(feature.key, feature)
                rules_of_feature.setdefault(feature.key, []).append(rule)
                retain[feature.key] = max(retain.get(feature.key, 0), feature.window_ms)
        for rule in self.rules:
            for feature in rule.features.values():
                feature.retain_ms = retain[feature.key]
        self.features = features
        self.rules_of_feature = rules_of_feature
        self.rule_names_of_feature = {
            key: tuple(rule.name for rule in rules) for key, rules in rules_of_feature.items()
        }
        # Per stream, features grouped by identical ``where``: each filter runs
        # once per event however many features and rules share it.
        groups: dict[str, dict[bytes, tuple[Filter, list[Feature]]]] = {}
        for feature in features.values():
            spec = orjson.dumps(feature.where_spec, option=orjson.OPT_SORT_KEYS)
            for stream in feature.streams:
                by_spec = groups.setdefault(stream, {})
                if spec not in by_spec:
                    by_spec[spec] = (compile_filter([stream], feature.where_spec), [])
                by_spec[spec][1].append(feature)
        # Then, per stream, the groups worth trying for each value of the stream's
        # discriminating field (orders.status, browse.action, ...): a page view
        # tries no filter at all, a paid order only those that accept "paid".
        self.filters_by_stream: dict[str, _Dispatch] = {
            stream: _Dispatch(stream, [(spec, *group) for spec, group in by_spec.items()])
            for stream, by_spec in groups.items()
        }
        self.rule_by_tag = {rule.tag: rule for rule in self.rules}
        self.absences = [r for r in self.rules if r.absence is not None]
        # Per stream, the absence rules whose start, stop or remove step can match it.
        self.stops_by_stream: dict[str, list[Rule]] = {}
        self.starts_by_stream: dict[str, list[Rule]] = {}
        for rule in self.absences:
            assert rule.absence is not None
            for stream in rule.absence.stop.streams:
                self.stops_by_stream.setdefault(stream, []).append(rule)
            remove = rule.absence.cart_remove
            starters = rule.absence.start.streams | (remove.streams if remove else frozenset())
            for stream in starters:
                self.starts_by_stream.setdefault(stream, []).append(rule)
        self.rule_order = {rule.name: i for i, rule in enumerate(self.rules)}
        self.rule_by_name = {rule.name: rule for rule in self.rules}
        self._match_readers: dict[tuple[str, str], Callable[[Event, str | None], Any]] = {}
        for rule in self.absences:
            assert rule.absence is not None
            if rule.absence.match:
                streams = rule.absence.start.streams | rule.absence.stop.streams
                for stream in streams:
                    reader, _ = field_reader([stream], rule.absence.match)
                    self._match_readers[(rule.name, stream)] = reader

    def partition(self, *, load: Callable[[str], UserState | None] | None = None) -> Partition:
        """A fresh partition; ``load`` fetches a user's stored state on a cache miss."""
        return Partition(self, load=load)


class Partition(Deadlines):
    """One partition's users, clock and deadlines. Not thread-safe; one owner."""

    def __init__(
        self, engine: Engine, *, load: Callable[[str], UserState | None] | None = None
    ) -> None:
        self.engine = engine
        self.clock = PartitionClock(lateness_ms=engine.lateness_ms)
        self.states: dict[str, UserState] = {}
        self._load = load
        self._heap: list[tuple[int, str]] = []
        self._scheduled: dict[str, int] = {}

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
        horizon = state.latest_ts
        for key, data in list(state.features.items()):
            feature = self.engine.features.get(key)
            kept = feature.prune(data, horizon) if feature is not None else None
            if kept is None:
                del state.features[key]
            else:
                state.features[key] = kept
        # A stop marker only matters for a start read a little later (within the
        # allowed lateness); fired markers stay (one trigger per cart).
        oldest = horizon - self.engine.lateness_ms
        for name, markers in list(state.stops.items()):
            kept = {key: ts for key, ts in markers.items() if ts >= oldest}
            if kept:
                state.stops[name] = kept
            else:
                del state.stops[name]
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
        while self._heap and self._scheduled.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def watermark(self, now_ms: int) -> int | None:
        """The partition's watermark at wall-clock ``now_ms``."""
        return self.clock.watermark(now_ms)

    # -- the two entry points ---------------------------------------------------

    def process(self, events: Iterable[Decoded], now_ms: int) -> Output:
        """Apply a batch of validated events (read order), then fire what became due."""
        out = Output()
        clock = self.clock
        heap = self._heap
        lateness = self.engine.lateness_ms
        streams = clock.streams
        for decoded in events:
            event = decoded.event
            clock.observe(decoded.source, event.ts, now_ms)
            # What was due fires before later events; the stream's own time bounds
            # the watermark, so the full computation runs only when it might matter.
            if heap and heap[0][0] <= streams[decoded.source][0] - lateness:
                watermark = clock.watermark(now_ms)
                if watermark is not None and heap[0][0] <= watermark:
                    out.extend(self.advance(now_ms))
            state = self.state(event.user_id)
            seen = state.offsets.get(decoded.source, -1)
            if decoded.offset <= seen:
                continue  # a redelivery: its effects are already in the state
            state.offsets[decoded.source] = decoded.offset
            changes_before = len(out.changes)
            try:
                armed = self._apply(event, decoded.source, state, now_ms, out)
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
        heap = self._heap
        while heap and heap[0][0] <= watermark:
            due, user_id = heapq.heappop(heap)
            if self._scheduled.get(user_id) != due:
                continue
            del self._scheduled[user_id]
            state = self.state(user_id)
            self._tick(user_id, state, watermark, now_ms, out)
            out.dirty.add(user_id)
            self._schedule(user_id, state)
        return out

    # -- per event --------------------------------------------------------------

    def _apply(self, event: Event, source: str, state: UserState, now_ms: int, out: Output) -> bool:
        """Fold one event into the user's state; True when it armed a deadline."""
        engine = self.engine
        if event.ts > state.latest_ts:
            state.latest_ts = event.ts
        t = state.latest_ts
        user_id = event.user_id
        if source == "accounts":  # not isinstance: pydantic's metaclass makes that slow
            assert type(event) is Account
            if event.timezone:
                state.tz = event.timezone
            if event.personalization is not None and event.personalization != state.personalization:
                state.personalization = event.personalization
                if not event.personalization:
                    self._clear_marketing(user_id, state, event, now_ms, out)
        tz = state.tz
        stopped_by_this: set[str] = set()
        for rule in engine.stops_by_stream.get(source, ()):
            if self._absence_stop(rule, event, source, state, now_ms, out):
                stopped_by_this.add(rule.name)
        touched: set[str] = set()
        features = state.features
        rule_names_of_feature = engine.rule_names_of_feature
        dispatch = engine.filters_by_stream.get(source)
        for where, group in dispatch.groups_for(event) if dispatch is not None else ():
            if not where(event, tz):
                continue
            for feature in group:
                # No pruning here: values only count what is inside their window, raw
                # data is capped, and every state is pruned when it is written (dump).
                data = feature.update(features.get(feature.key), event, tz)
                if data is not None:
                    features[feature.key] = data
                touched.update(rule_names_of_feature[feature.key])
        armed = False
        for rule in engine.starts_by_stream.get(source, ()):
            armed |= self._absence_start(
                rule, event, source, state, t, rule.name in stopped_by_this
            )
        if touched:
            event_ids = [event.event_id]
            names = (
                sorted(touched, key=engine.rule_order.__getitem__) if len(touched) > 1 else touched
            )
            for name in names:
                rule = engine.rule_by_name[name]
                if rule.condition is not None:
                    self._evaluate(rule, user_id, state, t, event_ids, now_ms, out)
        return armed

    # -- time -------------------------------------------------------------------

    def _tick(
        self, user_id: str, state: UserState, watermark: int, now_ms: int, out: Output
    ) -> None:
        engine = self.engine
        for name, pending in list(state.pending.items()):
            rule = engine.rule_by_name.get(name)
            if rule is None:  # the rule was removed since the state was written
                del state.pending[name]
                continue
            for key, entry in sorted(pending.items(), key=lambda kv: kv[1][1]):
                if entry[1] <= watermark:
                    del pending[key]
                    self._fire(rule, user_id, key, entry, state, now_ms, out)
            if not pending:
                del state.pending[name]
        by_tag = engine.rule_by_tag
        for tag, (_, expires) in list(state.tags.items()):
            rule = by_tag.get(tag)
            if rule is None:
                del state.tags[tag]
            elif expires <= watermark:
                self._clear(
                    rule, user_id, state, expires, "the tag's time to live passed", now_ms, out
                )
            elif rule.clear_when_false:
                t = max(state.latest_ts, min(watermark, self._recheck_ms(rule, state) or watermark))
                self._evaluate(rule, user_id, state, t, [], now_ms, out)
        horizon_t = max(state.latest_ts, watermark) - engine.lateness_ms
        for key, data in list(state.features.items()):
            feature = engine.features.get(key)
            kept = feature.prune(data, horizon_t) if feature is not None else None
            if kept is None:
                del state.features[key]
            elif kept is not data:
                state.features[key] = kept
        horizon = watermark - MARKER_RETENTION_MS
        for markers in (state.fired, state.stops):
            for name, by_key in list(markers.items()):
                if min(by_key.values()) > horizon:
                    continue
                kept = {k: ts for k, ts in by_key.items() if ts > horizon}
                if kept:
                    markers[name] = kept
                else:
                    del markers[name]

    def _recheck_ms(self, rule: Rule, state: UserState) -> int | None:
        times = [
            feature.next_change_ms(state.features.get(feature.key), state.latest_ts)
            for feature in rule.features.values()
        ]
        known = [t for t in times if t is not None]
        return min(known) if known else None

    def _schedule(self, user_id: str, state: UserState) -> None:
        due = self._next_due(state) if state.pending or state.tags else None
        if due is None:
            self._scheduled.pop(user_id, None)
            return
        if self._scheduled.get(user_id) != due:
            self._scheduled[user_id] = due
            heapq.heappush(self._heap, (due, user_id))

    def _next_due(self, state: UserState) -> int | None:
        due: int | None = None
        for pending in state.pending.values():
            for entry in pending.values():
                if due is None or entry[1] < due:
                    due = entry[1]
        if state.tags:
            by_tag = self.engine.rule_by_tag
            for tag, (_, expires) in state.tags.items():
                if due is None or expires < due:
                    due = expires
                rule = by_tag.get(tag)
                if rule is not None and rule.clear_when_false:
                    recheck = self._recheck_ms(rule, state)
                    if recheck is not None and (due is None or recheck < due):
                        due = recheck
        return due
