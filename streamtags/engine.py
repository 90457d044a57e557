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

import hashlib
import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from streamtags.clock import PartitionClock
from streamtags.events import Account, Event
from streamtags.expressions import Env
from streamtags.features import Feature, Filter, compile_filter, field_reader
from streamtags.ingest import Decoded
from streamtags.records import iso_ms
from streamtags.rulebook import Rule, Ruleset
from streamtags.state import StateFormatError, UserState

__all__ = ["Change", "Engine", "Output", "Partition", "Trigger"]

Change = dict[str, Any]
"""A tag change, shaped exactly as :class:`streamtags.records.TagChange` (plain data:
the hot path builds thousands of these, and the pydantic model is the contract
that tests hold them to)."""
Trigger = dict[str, Any]
"""A coupon trigger, shaped exactly as :class:`streamtags.records.CouponTrigger`."""

#: How long fired/stop markers are kept (one trigger per cart within this time).
MARKER_RETENTION_MS = 30 * 86_400_000
#: At most this many products are remembered per pending cart.
CART_MAX_SKUS = 50
#: At most this many pending deadlines / markers per rule and user.
MAX_KEYS_PER_RULE = 32


@dataclass(slots=True)
class Output:
    """What one call produced."""

    changes: list[Change] = field(default_factory=list)
    triggers: list[Trigger] = field(default_factory=list)
    #: users whose state changed and must be written back
    dirty: set[str] = field(default_factory=set)
    #: for each fired deadline: wall-clock ms after its deadline plus lateness
    fire_delays_ms: list[int] = field(default_factory=list)
    #: events the engine could not apply (a rule bug), with the error: dead-letter them
    failed: list[tuple[Decoded, str]] = field(default_factory=list)

    def extend(self, other: Output) -> None:
        """Append another output's contents."""
        self.changes.extend(other.changes)
        self.triggers.extend(other.triggers)
        self.dirty |= other.dirty
        self.fire_delays_ms.extend(other.fire_delays_ms)
        self.failed.extend(other.failed)


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


class _Values(dict[str, float]):
    """Feature values computed on first use, so ``a and b`` skips ``b`` when ``a`` fails."""

    __slots__ = ("data", "rule", "t")

    def __init__(self, rule: Rule, data: dict[str, Any], t: int) -> None:
        super().__init__(rule.params)
        self.rule = rule
        self.data = data
        self.t = t

    def __missing__(self, name: str) -> float:
        feature = self.rule.features[name]
        value = feature.value(self.data.get(feature.key), self.t)
        self[name] = value
        return value


def _digest(*parts: object) -> str:
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=10).hexdigest()


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


class Partition:
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

    def _env(self, rule: Rule, state: UserState, t: int) -> Env:
        return Env(_Values(rule, state.features, t), state.tags)

    def _evaluate(
        self,
        rule: Rule,
        user_id: str,
        state: UserState,
        t: int,
        event_ids: list[str],
        now_ms: int,
        out: Output,
    ) -> None:
        assert rule.condition is not None
        live = state.tags.get(rule.tag)
        if (
            live is not None
            and not rule.clear_when_false
            and t < live[1]
            and t + rule.ttl_ms - live[1] < rule.ttl_ms // 4
            and (rule.category != "marketing" or state.personalization)
        ):
            return  # live, sticky and not due for renewal: nothing can change
        env = self._env(rule, state, t)
        holds = bool(rule.condition.run(env))
        if rule.category == "marketing" and not state.personalization:
            holds = False
        if live is not None and live[1] <= t:
            self._clear(rule, user_id, state, live[1], "the tag's time to live passed", now_ms, out)
            live = None
        if holds:
            expires = t + rule.ttl_ms
            if live is None:
                last = state.last_applied.get(rule.tag)
                if rule.cooldown_ms and last is not None and t - last < rule.cooldown_ms:
                    return
                state.tags[rule.tag] = [t, expires]
                if rule.cooldown_ms:
                    state.last_applied[rule.tag] = t
                action = "applied"
            elif expires - live[1] >= rule.ttl_ms // 4:
                live[1] = expires
                action = "renewed"
            else:
                return
            out.changes.append(
                self._change(
                    rule,
                    user_id,
                    action,
                    t,
                    expires,
                    rule.description,
                    env,
                    state,
                    event_ids,
                    now_ms,
                )
            )
        elif live is not None and rule.clear_when_false:
            self._clear(
                rule,
                user_id,
                state,
                t,
                "the condition no longer holds",
                now_ms,
                out,
                env=env,
                event_ids=event_ids,
            )

    def _change(
        self,
        rule: Rule,
        user_id: str,
        action: str,
        t: int,
        expires: int | None,
        reason: str,
        env: Env | None,
        state: UserState,
        event_ids: list[str],
        now_ms: int,
    ) -> Change:
        figures: dict[str, float] = {}
        shown: dict[str, list[str]] = {}
        if env is not None:
            for name, feature in rule.features.items():
                value = env.values[name]
                figures[name] = value / 1000 if feature.value_type == "duration" else value
                values = feature.shown(state.features.get(feature.key), t)
                if values:
                    shown[name] = values
        text = reason or rule.name
        if shown:
            text += " (" + "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(shown.items())) + ")"
        return {
            "change_id": _digest(user_id, rule.tag, action, rule.version, t),
            "user_id": user_id,
            "tag": rule.tag,
            "action": action,
            "category": rule.category,
            "severity": rule.severity,
            "ts": iso_ms(t),
            "emitted_at": iso_ms(now_ms),
            "expires_at": iso_ms(expires) if expires is not None else None,
            "rule": {"name": rule.name, "version": rule.version},
            "evidence": {"reason": text, "figures": figures, "event_ids": list(event_ids)},
        }

    def _clear(
        self,
        rule: Rule,
        user_id: str,
        state: UserState,
        t: int,
        reason: str,
        now_ms: int,
        out: Output,
        *,
        env: Env | None = None,
        event_ids: list[str] | None = None,
    ) -> None:
        if state.tags.pop(rule.tag, None) is None:
            return
        out.changes.append(
            self._change(
                rule, user_id, "cleared", t, None, reason, env, state, event_ids or [], now_ms
            )
        )

    def _clear_marketing(
        self, user_id: str, state: UserState, event: Event, now_ms: int, out: Output
    ) -> None:
        for rule in self.engine.rules:
            if rule.category == "marketing":
                self._clear(
                    rule,
                    user_id,
                    state,
                    event.ts,
                    "the user turned personalisation off",
                    now_ms,
                    out,
                    event_ids=[event.event_id],
                )

    # -- absence ----------------------------------------------------------------

    def _match_key(self, rule: Rule, source: str, event: Event) -> str:
        reader = self.engine._match_readers.get((rule.name, source))
        value = reader(event, None) if reader is not None else None
        return "" if value is None else str(value)

    def _absence_stop(
        self, rule: Rule, event: Event, source: str, state: UserState, now_ms: int, out: Output
    ) -> bool:
        """Handle ``event`` as a possible stop; True when it was one."""
        absence = rule.absence
        assert absence is not None
        if not absence.stop.where(event, state.tz):
            return False
        key = self._match_key(rule, source, event)
        pending = state.pending.get(rule.name)
        entry = pending.get(key) if pending else None
        if entry is not None and event.ts <= entry[1]:
            del pending[key]  # type: ignore[union-attr]
            if not pending:
                del state.pending[rule.name]
        elif key or not absence.match:  # an order without a cart cancels no cart
            stops = state.stops.setdefault(rule.name, {})
            stops[key] = max(stops.get(key, 0), event.ts)
            _trim(stops)
        fired = state.fired.get(rule.name)
        was_fired = fired is not None and key in fired
        if was_fired and not absence.match:
            del fired[key]  # type: ignore[union-attr]  # a user-level pattern may fire again
        if absence.clear_on_stop and (was_fired or (not absence.match and rule.tag in state.tags)):
            self._clear(
                rule,
                event.user_id,
                state,
                event.ts,
                f"{source} event {event.event_id} ended it",
                now_ms,
                out,
                event_ids=[event.event_id],
            )
        return True

    def _absence_start(
        self, rule: Rule, event: Event, source: str, state: UserState, t: int, is_stop: bool
    ) -> bool:
        """Handle ``event`` as a possible start (or cart removal); True when it armed."""
        absence = rule.absence
        assert absence is not None
        tz = state.tz
        remove = absence.cart_remove
        key: str
        if remove is not None and source in remove.streams and remove.where(event, tz):
            key = self._match_key(rule, source, event)
            entry = state.pending.get(rule.name, {}).get(key)
            sku = getattr(event, "sku", None)
            if entry is not None and sku and sku in entry[3]:
                item = entry[3][sku]
                item[0] -= 1
                if item[0] <= 0:
                    del entry[3][sku]
                if not entry[3]:
                    del state.pending[rule.name][key]
            return False
        if source not in absence.start.streams or not absence.start.where(event, tz):
            return False
        key = self._match_key(rule, source, event)
        if absence.match and key in state.fired.get(rule.name, {}):
            return False  # one firing per matched key (per cart)
        stop_ts = None if is_stop else state.stops.get(rule.name, {}).get(key)
        if stop_ts is not None and stop_ts >= event.ts:
            return False  # the stop was read before its start: nothing to wait for
        if absence.guard is not None or absence.within.names:
            env = self._env(rule, state, t)
            if absence.guard is not None and not absence.guard.run(env):
                return False
            within = int(absence.within.run(env))
        else:
            within = int(absence.within.run(Env({}, {})))
        if within <= 0:
            return False
        pending = state.pending.setdefault(rule.name, {})
        entry = pending.get(key)
        deadline = event.ts + within
        if entry is None:
            entry = pending[key] = [event.ts, deadline, [event.event_id], {}]
            if len(pending) > MAX_KEYS_PER_RULE:
                oldest = min(pending, key=lambda k: pending[k][1])
                del pending[oldest]
        else:
            entry[1] = max(entry[1], deadline)
            ids = entry[2]
            if event.event_id not in ids:
                ids.append(event.event_id)
                del ids[1:-2]  # keep the first and the last two
        if absence.collect_cart:
            sku = getattr(event, "sku", None)
            if sku and (sku in entry[3] or len(entry[3]) < CART_MAX_SKUS):
                item = entry[3].setdefault(sku, [0, getattr(event, "price", None)])
                item[0] += 1
                price = getattr(event, "price", None)
                if price is not None:
                    item[1] = price
        return True

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

    def _fire(
        self,
        rule: Rule,
        user_id: str,
        key: str,
        entry: list[Any],
        state: UserState,
        now_ms: int,
        out: Output,
    ) -> None:
        first_ts, deadline, event_ids, cart = entry
        state.fired.setdefault(rule.name, {})[key] = deadline
        _trim(state.fired[rule.name])
        out.fire_delays_ms.append(now_ms - (deadline + self.engine.lateness_ms))
        if rule.category == "marketing" and not state.personalization:
            return
        if state.stops.get(rule.name, {}).get(key, 0) > first_ts:
            return  # the stop came just after the deadline but before it fired: moot
        live = state.tags.get(rule.tag)
        expires = deadline + rule.ttl_ms
        env = self._env(rule, state, deadline)
        what = f"{rule.description} (started {iso_ms(first_ts)}"
        what += f", {rule.absence.match} {key})" if rule.absence and rule.absence.match else ")"
        if live is None:
            state.tags[rule.tag] = [deadline, expires]
            if rule.cooldown_ms:
                state.last_applied[rule.tag] = deadline
            action = "applied"
        else:
            live[1] = max(live[1], expires)
            action = "renewed"
        change = self._change(
            rule, user_id, action, deadline, expires, what, env, state, event_ids, now_ms
        )
        out.changes.append(change)
        if rule.coupon is not None:
            items = [
                {"sku": sku, "quantity": qty, "unit_price": price}
                for sku, (qty, price) in sorted(cart.items())
            ]
            value = round(sum(qty * (price or 0.0) for _, (qty, price) in cart.items()), 2)
            out.triggers.append(
                {
                    "trigger_id": _digest(user_id, rule.name, key if key else first_ts),
                    "user_id": user_id,
                    "cart_id": key or None,
                    "items": items,
                    "cart_value": value,
                    "abandoned_at": iso_ms(deadline),
                    "coupon": {
                        "discount_pct": rule.coupon.discount_pct,
                        "valid_until": iso_ms(deadline + rule.coupon.valid_for_ms),
                    },
                    "rule": {"name": rule.name, "version": rule.version},
                }
            )

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


def _trim(markers: dict[str, int]) -> None:
    if len(markers) > MAX_KEYS_PER_RULE:
        for key in sorted(markers, key=markers.__getitem__)[: len(markers) - MAX_KEYS_PER_RULE]:
            del markers[key]
