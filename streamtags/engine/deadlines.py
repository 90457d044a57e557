"""Deadlines: "A not followed by B within T", per user and match key.

A start arms (or re-arms) a deadline; a stop whose time is not after the
deadline cancels it, also when the stop was read first (a marker kept for
the allowed lateness); carts collect their products; with a ``match`` field
each matched value fires at most once; firing applies the tag and, for a
cart, builds the coupon trigger. A mixin of :class:`streamtags.engine.Partition`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamtags.contracts.events import Event
from streamtags.contracts.records import iso_ms
from streamtags.engine.lifecycle import Output, TagLifecycle, digest
from streamtags.engine.state import UserState
from streamtags.rulebook.expressions import Env
from streamtags.rulebook.loader import Rule

if TYPE_CHECKING:
    from streamtags.engine.partition import Engine

__all__ = ["CART_MAX_SKUS", "MARKER_RETENTION_MS", "MAX_KEYS_PER_RULE", "Deadlines", "trim"]

#: How long fired/stop markers are kept (one trigger per cart within this time).
MARKER_RETENTION_MS = 30 * 86_400_000
#: At most this many products are remembered per pending cart.
CART_MAX_SKUS = 50
#: At most this many pending deadlines / markers per rule and user.
MAX_KEYS_PER_RULE = 32


class Deadlines(TagLifecycle):
    """Arming, cancelling and firing absence deadlines."""

    engine: Engine

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
            trim(stops)
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
        trim(state.fired[rule.name])
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
                    "trigger_id": digest(user_id, rule.name, key if key else first_ts),
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


def trim(markers: dict[str, int]) -> None:
    if len(markers) > MAX_KEYS_PER_RULE:
        for key in sorted(markers, key=markers.__getitem__)[: len(markers) - MAX_KEYS_PER_RULE]:
            del markers[key]
