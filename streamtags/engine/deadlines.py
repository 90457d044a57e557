"""Deadlines: "A not followed by B within T", per user and match key.

A start arms (or re-arms) a deadline; a stop whose time is not after the
deadline cancels it, also when the stop was read first (a marker kept for
the allowed lateness); carts collect their products; with a ``match`` field
each matched value fires at most once; firing applies the tag (through the
:class:`~streamtags.engine.tags.TagBook`) and, for a cart, builds the
coupon trigger.

Times are event time, epoch milliseconds UTC.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

from streamtags.contracts.events import Event
from streamtags.contracts.records import TagAction, iso_ms
from streamtags.engine.output import Trigger, TriggerItemDict, UserTurn, digest
from streamtags.engine.routing import RuleIndex
from streamtags.engine.state import CartItem, PendingDeadline, UserState
from streamtags.engine.tags import TagBook, rule_env
from streamtags.rulebook.expressions import Env
from streamtags.rulebook.fields import field_reader
from streamtags.rulebook.loader import Rule

__all__ = ["CART_MAX_SKUS", "MARKER_RETENTION_MS", "MAX_KEYS_PER_RULE", "Deadlines", "trim"]

#: How long fired/stop markers are kept (one trigger per cart within this time).
MARKER_RETENTION_MS = 30 * 86_400_000
#: At most this many products are remembered per pending cart.
CART_MAX_SKUS = 50
#: At most this many pending deadlines / markers per rule and user.
MAX_KEYS_PER_RULE = 32

#: What a ``within`` that names no feature is evaluated against.
_NO_VALUES = Env({}, {})


class Deadlines:
    """Arming, cancelling and firing absence deadlines; shared by an engine's partitions."""

    __slots__ = (
        "by_name",
        "lateness_ms",
        "match_readers",
        "starts_by_stream",
        "stops_by_stream",
        "tags",
    )

    def __init__(self, rules: Sequence[Rule], *, tags: TagBook, lateness_ms: int) -> None:
        self.tags = tags
        self.lateness_ms = lateness_ms
        self.by_name = {rule.name: rule for rule in rules}
        stops: dict[str, list[tuple[Rule, list[Any]]]] = {}
        starts: dict[str, list[tuple[Rule, list[Any]]]] = {}
        #: (rule, stream) -> reads the ``match`` field (the cart id, say) from an event
        self.match_readers: dict[tuple[str, str], Callable[[Event, str | None], Any]] = {}
        for rule in rules:
            absence = rule.absence
            if absence is None:
                continue
            for stream in absence.stop.streams:
                stops.setdefault(stream, []).append((rule, [absence.stop.where_spec]))
            steps = [absence.start] + ([absence.cart_remove] if absence.cart_remove else [])
            for step in steps:
                for stream in step.streams:
                    by_rule = starts.setdefault(stream, [])
                    if not by_rule or by_rule[-1][0] is not rule:
                        by_rule.append((rule, []))
                    by_rule[-1][1].append(step.where_spec)
            if absence.match:
                for stream in absence.start.streams | absence.stop.streams:
                    reader, _ = field_reader([stream], absence.match)
                    self.match_readers[(rule.name, stream)] = reader
        #: per stream, the absence rules whose stop may match an event, by dispatch value
        self.stops_by_stream = {stream: RuleIndex(stream, s) for stream, s in stops.items()}
        #: per stream, the absence rules whose start or cart removal may match an event
        self.starts_by_stream = {stream: RuleIndex(stream, s) for stream, s in starts.items()}

    # -- per event --------------------------------------------------------------------

    def stop(self, event: Event, source: str, turn: UserTurn) -> Collection[str]:
        """Cancel what ``event`` stops; the names of the rules it was a stop for."""
        index = self.stops_by_stream.get(source)
        rules = index.rules_for(event) if index is not None else ()
        if not rules:
            return ()  # most events stop nothing: no set to build
        return {rule.name for rule in rules if self._stop_one(rule, event, source, turn)}

    def start(
        self, event: Event, source: str, state: UserState, t: int, stopped: Collection[str]
    ) -> bool:
        """Arm what ``event`` starts (``t``: the user's latest event time); True if any."""
        armed = False
        index = self.starts_by_stream.get(source)
        for rule in index.rules_for(event) if index is not None else ():
            armed |= self._start_one(rule, event, source, state, t, rule.name in stopped)
        return armed

    def _match_key(self, rule: Rule, source: str, event: Event) -> str:
        reader = self.match_readers.get((rule.name, source))
        value = reader(event, None) if reader is not None else None
        return "" if value is None else str(value)

    def _stop_one(self, rule: Rule, event: Event, source: str, turn: UserTurn) -> bool:
        absence = rule.absence
        assert absence is not None
        state = turn.state
        if not absence.stop.where(event, state.tz):
            return False
        key = self._match_key(rule, source, event)
        pending = state.pending.get(rule.name)
        entry = pending.get(key) if pending else None
        if pending is not None and entry is not None and event.ts <= entry.deadline_ms:
            del pending[key]
            if not pending:
                del state.pending[rule.name]
        elif key or not absence.match:  # an order without a cart cancels no named cart
            # Kept in case its start is read later (within the allowed lateness).
            stops = state.stops.setdefault(rule.name, {})
            stops[key] = max(stops.get(key, 0), event.ts)
            trim(stops)
        fired = state.fired.get(rule.name)
        was_fired = fired is not None and key in fired
        if fired is not None and was_fired and not absence.match:
            del fired[key]  # a user-level pattern may fire again
            if not fired:
                del state.fired[rule.name]
        if absence.clear_on_stop and (was_fired or (not absence.match and rule.tag in state.tags)):
            reason = f"{source} event {event.event_id} ended it"
            self.tags.clear(rule, turn, event.ts, reason, event_ids=[event.event_id])
        return True

    def _start_one(
        self, rule: Rule, event: Event, source: str, state: UserState, t: int, is_stop: bool
    ) -> bool:
        absence = rule.absence
        assert absence is not None
        tz = state.tz
        remove = absence.cart_remove
        if remove is not None and source in remove.streams and remove.where(event, tz):
            self._remove_from_cart(rule, event, source, state)
            return False
        if source not in absence.start.streams or not absence.start.where(event, tz):
            return False
        key = self._match_key(rule, source, event)
        if key and key in state.fired.get(rule.name, {}):
            return False  # one firing per matched key (per cart)
        stop_ts = None if is_stop else state.stops.get(rule.name, {}).get(key)
        if stop_ts is not None and stop_ts >= event.ts:
            return False  # the stop was read before its start: nothing to wait for
        if absence.guard is not None or absence.within.names:
            env = rule_env(rule, state, t)
            if absence.guard is not None and not absence.guard.run(env):
                return False
            within_ms = int(absence.within.run(env))
        else:
            within_ms = int(absence.within.run(_NO_VALUES))
        if within_ms <= 0:
            return False
        self._arm(rule, event, key, state, event.ts + within_ms)
        return True

    def _arm(self, rule: Rule, event: Event, key: str, state: UserState, deadline_ms: int) -> None:
        pending = state.pending.setdefault(rule.name, {})
        entry = pending.get(key)
        if entry is None:
            entry = pending[key] = PendingDeadline(event.ts, deadline_ms, [event.event_id], {})
            if len(pending) > MAX_KEYS_PER_RULE:
                oldest = min(pending, key=lambda k: pending[k].deadline_ms)
                del pending[oldest]
        else:
            entry.deadline_ms = max(entry.deadline_ms, deadline_ms)
            ids = entry.event_ids
            if event.event_id not in ids:
                ids.append(event.event_id)
                del ids[1:-2]  # keep the first and the last two
        assert rule.absence is not None
        if rule.absence.collect_cart:
            sku = getattr(event, "sku", None)
            cart = entry.cart
            if sku and (sku in cart or len(cart) < CART_MAX_SKUS):
                price = getattr(event, "price", None)
                item = cart.get(sku)
                if item is None:
                    item = cart[sku] = CartItem(0, price)
                item.quantity += 1
                if price is not None:
                    item.unit_price = price

    def _remove_from_cart(self, rule: Rule, event: Event, source: str, state: UserState) -> None:
        key = self._match_key(rule, source, event)
        pending = state.pending.get(rule.name, {})
        entry = pending.get(key)
        sku = getattr(event, "sku", None)
        if entry is not None and sku and sku in entry.cart:
            item = entry.cart[sku]
            item.quantity -= 1
            if item.quantity <= 0:
                del entry.cart[sku]
            if not entry.cart:
                del pending[key]
                if not pending:
                    del state.pending[rule.name]

    # -- over time ----------------------------------------------------------------------

    def fire_due(self, turn: UserTurn, watermark: int) -> None:
        """Fire the user's deadlines at or before the watermark, earliest first."""
        state = turn.state
        for name, pending in list(state.pending.items()):
            rule = self.by_name.get(name)
            if rule is None:  # the rule was removed since the state was written
                del state.pending[name]
                continue
            for key, entry in sorted(pending.items(), key=lambda item: item[1].deadline_ms):
                if entry.deadline_ms <= watermark:
                    del pending[key]
                    self._fire(rule, key, entry, turn)
            if not pending:
                del state.pending[name]

    def next_due(self, state: UserState) -> int | None:
        """The earliest pending deadline of the user, if any."""
        due: int | None = None
        for pending in state.pending.values():
            for entry in pending.values():
                if due is None or entry.deadline_ms < due:
                    due = entry.deadline_ms
        return due

    def forget_markers(self, state: UserState, watermark: int) -> None:
        """Drop fired and stop markers older than :data:`MARKER_RETENTION_MS`."""
        horizon = watermark - MARKER_RETENTION_MS
        for markers in (state.fired, state.stops):
            for name, by_key in list(markers.items()):
                if by_key and min(by_key.values()) > horizon:
                    continue
                kept = {k: ts for k, ts in by_key.items() if ts > horizon}
                if kept:
                    markers[name] = kept
                else:
                    del markers[name]

    def forget_stops_before(self, state: UserState, oldest_ms: int) -> None:
        """Drop stop markers older than ``oldest_ms`` (no start that late can be read)."""
        for name, markers in list(state.stops.items()):
            kept = {key: ts for key, ts in markers.items() if ts >= oldest_ms}
            if kept:
                state.stops[name] = kept
            else:
                del state.stops[name]

    def _fire(self, rule: Rule, key: str, entry: PendingDeadline, turn: UserTurn) -> None:
        state = turn.state
        deadline = entry.deadline_ms
        fired = state.fired.setdefault(rule.name, {})
        fired[key] = deadline
        trim(fired)
        turn.out.fire_delays_ms.append(turn.now_ms - (deadline + self.lateness_ms))
        if rule.category == "marketing" and not state.personalization:
            return
        if state.stops.get(rule.name, {}).get(key, 0) > entry.first_start_ms:
            return  # the stop came just after the deadline but before it fired: moot
        live = state.tags.get(rule.tag)
        expires = deadline + rule.ttl_ms
        env = rule_env(rule, state, deadline)
        what = f"{rule.description} (started {iso_ms(entry.first_start_ms)}"
        what += f", {rule.absence.match} {key})" if rule.absence and rule.absence.match else ")"
        action: TagAction
        if live is None:
            self.tags.apply(rule, state, deadline, expires)
            action = "applied"
        else:
            live.expires_at_ms = max(live.expires_at_ms, expires)
            action = "renewed"
        self.tags.record(rule, turn, action, deadline, expires, what, env, entry.event_ids)
        if rule.coupon is not None:
            turn.out.triggers.append(_trigger(rule, turn.user_id, key, entry))


def _trigger(rule: Rule, user_id: str, key: str, entry: PendingDeadline) -> Trigger:
    """The coupon trigger for a fired cart deadline of a rule with a coupon."""
    assert rule.coupon is not None
    # Summed in the order the products were added: float sums depend on order.
    value = sum(item.quantity * (item.unit_price or 0.0) for item in entry.cart.values())
    items: list[TriggerItemDict] = []
    for sku in sorted(entry.cart):
        item = entry.cart[sku]
        items.append({"sku": sku, "quantity": item.quantity, "unit_price": item.unit_price})
    return {
        "trigger_id": digest(user_id, rule.name, key if key else entry.first_start_ms),
        "user_id": user_id,
        "cart_id": key or None,
        "items": items,
        "cart_value": round(value, 2),
        "abandoned_at": iso_ms(entry.deadline_ms),
        "coupon": {
            "discount_pct": rule.coupon.discount_pct,
            "valid_until": iso_ms(entry.deadline_ms + rule.coupon.valid_for_ms),
        },
        "rule": {"name": rule.name, "version": rule.version},
    }


def trim(markers: dict[str, int]) -> None:
    """Keep the newest :data:`MAX_KEYS_PER_RULE` markers (rule's match key -> event time)."""
    if len(markers) > MAX_KEYS_PER_RULE:
        for key in sorted(markers, key=markers.__getitem__)[: len(markers) - MAX_KEYS_PER_RULE]:
            del markers[key]
