"""The tag book: evaluating rules for a user and turning results into tag changes.

A tag is applied, renewed (still true: each qualifying signal moves the
expiry to ``t + ttl``; a ``renewed`` change is emitted when it moves by at
least the rule's ``renew_throttle``, 1 % of the TTL by default), or cleared
(its TTL passed, the condition ended for
``clear: when_false`` rules, a stop event for ``clear_on_stop``, or the
user opted out of personalisation, for marketing tags). A cooldown stops a
tag being applied again too soon. Every change carries its evidence (the
feature values and event ids behind it) and a deterministic id.

Times are event time, epoch milliseconds UTC; ``t`` is the moment a rule
is evaluated at (the user's latest event time, or a deadline).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from streamtags.contracts.events import Event
from streamtags.contracts.records import Severity, TagAction, iso_ms
from streamtags.engine.output import Change, UserTurn, digest
from streamtags.engine.state import LiveTag, UserState
from streamtags.rulebook.expressions import Env
from streamtags.rulebook.loader import Rule

__all__ = ["TTL_PASSED", "TagBook", "rule_env"]

#: The reason a change gives when a tag lapsed.
TTL_PASSED = "the tag's time to live passed"


def rule_env(rule: Rule, state: UserState, t: int) -> Env:
    """What ``rule``'s expressions see for this user at event time ``t`` (epoch ms)."""
    return Env(rule.params, state.tags, state.features, t)


class TagBook:
    """Rule evaluation and tag changes; shared by every partition of an engine."""

    __slots__ = ("by_name", "by_tag", "conditions_of", "marketing", "rules")

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.by_name = {rule.name: rule for rule in rules}
        #: tag -> the rule that owns it (for expiries and rechecks)
        self.by_tag = {rule.tag: rule for rule in rules}
        self.rules = tuple(rules)
        #: a bit mask over rule positions -> its condition rules, in ruleset order
        #: (filled on first use: only the combinations events touch are kept)
        self.conditions_of: dict[int, tuple[Rule, ...]] = {}
        self.marketing = tuple(rule for rule in rules if rule.category == "marketing")

    # -- per event ------------------------------------------------------------------

    def evaluate_all(self, touched: int, turn: UserTurn, t: int, event_ids: list[str]) -> None:
        """Evaluate the condition rules in ``touched`` (those whose features took the event;
        a bit mask over rule positions), in ruleset order."""
        rules = self.conditions_of.get(touched)
        if rules is None:
            rules = tuple(
                rule
                for position, rule in enumerate(self.rules)
                if touched >> position & 1 and rule.condition is not None
            )
            self.conditions_of[touched] = rules
        evaluate = self.evaluate
        for rule in rules:
            evaluate(rule, turn, t, event_ids)

    def evaluate(self, rule: Rule, turn: UserTurn, t: int, event_ids: list[str]) -> None:
        """Evaluate a condition rule at ``t``; apply, renew or clear its tag."""
        assert rule.condition is not None
        state = turn.state
        live = state.tags.get(rule.tag)
        marketing_off = rule.category == "marketing" and not state.personalization
        if (
            live is not None
            and not rule.clear_when_false
            and t < live.expires_at_ms
            and t + rule.ttl_ms - live.expires_at_ms < rule.renew_throttle_ms
            and not marketing_off
        ):
            return  # live, sticky and not due for renewal: nothing can change
        env = Env(rule.params, state.tags, state.features, t)  # rule_env, without a call
        holds = bool(rule.condition.run(env)) and not marketing_off
        if live is not None and live.expires_at_ms <= t:
            self.clear(rule, turn, live.expires_at_ms, TTL_PASSED)
            live = None
        if holds:
            expires = t + rule.ttl_ms
            action: TagAction
            if live is None:
                last = state.last_applied.get(rule.tag)
                if rule.cooldown_ms and last is not None and t - last < rule.cooldown_ms:
                    return
                self.apply(rule, state, t, expires)
                action = "applied"
            elif expires - live.expires_at_ms >= max(1, rule.renew_throttle_ms):
                live.expires_at_ms = expires
                action = "renewed"
            else:
                return
            self.record(rule, turn, action, t, expires, rule.description, env, event_ids)
        elif live is not None and rule.clear_when_false:
            reason = "the condition no longer holds"
            self.clear(rule, turn, t, reason, env=env, event_ids=event_ids)

    def clear_marketing(self, turn: UserTurn, event: Event) -> None:
        """Clear every marketing tag: the user turned personalisation off with ``event``."""
        for rule in self.marketing:
            reason = "the user turned personalisation off"
            self.clear(rule, turn, event.ts, reason, event_ids=[event.event_id])

    # -- over time ------------------------------------------------------------------

    def expire(self, turn: UserTurn, watermark: int) -> None:
        """Clear tags whose TTL passed the watermark; recheck ``clear: when_false`` ones."""
        state = turn.state
        for tag, live in list(state.tags.items()):
            rule = self.by_tag.get(tag)
            if rule is None:  # the rule was removed since the state was written
                del state.tags[tag]
            elif live.expires_at_ms <= watermark:
                self.clear(rule, turn, live.expires_at_ms, TTL_PASSED)
            elif rule.clear_when_false:
                self._recheck(rule, turn, watermark)

    def _recheck(self, rule: Rule, turn: UserTurn, until_ms: int) -> None:
        """Evaluate a ``clear: when_false`` rule at each moment one of its values changes
        with no new event (a window entry ageing out), up to ``until_ms``: the same
        moments whenever the caller advances, so the changes do not depend on it.
        Each moment is later than the one before, so this ends."""
        state = turn.state
        after = max(state.latest_ts, state.processed_to_ms)
        while rule.tag in state.tags:
            moment = self.recheck_ms(rule, state, after)
            if moment is None or moment > until_ms:
                return
            live = state.tags[rule.tag]
            if live.expires_at_ms <= moment:
                self.clear(rule, turn, live.expires_at_ms, TTL_PASSED)
                return
            self.evaluate(rule, turn, moment, [])
            after = moment

    def next_due(self, state: UserState) -> int | None:
        """The earliest event time a live tag lapses or needs a recheck, if any."""
        due: int | None = None
        for tag, live in state.tags.items():
            if due is None or live.expires_at_ms < due:
                due = live.expires_at_ms
            rule = self.by_tag.get(tag)
            if rule is not None and rule.clear_when_false:
                recheck = self.recheck_ms(rule, state, max(state.latest_ts, state.processed_to_ms))
                if recheck is not None and recheck < due:
                    due = recheck
        return due

    @staticmethod
    def recheck_ms(rule: Rule, state: UserState, after_ms: int) -> int | None:
        """When, after ``after_ms``, one of ``rule``'s feature values next changes with no
        new event, if ever (event time, epoch ms)."""
        times = [
            feature.next_change_ms(state.features.get(feature.key), after_ms)
            for feature in rule.features.values()
        ]
        known = [t for t in times if t is not None]
        return min(known) if known else None

    # -- changes --------------------------------------------------------------------

    def apply(self, rule: Rule, state: UserState, t: int, expires_at_ms: int) -> None:
        """Give the user ``rule``'s tag from ``t`` until ``expires_at_ms``."""
        state.tags[rule.tag] = LiveTag(t, expires_at_ms)
        if rule.cooldown_ms:
            state.last_applied[rule.tag] = t

    def clear(
        self,
        rule: Rule,
        turn: UserTurn,
        t: int,
        reason: str,
        *,
        env: Env | None = None,
        event_ids: list[str] | None = None,
    ) -> None:
        """Take ``rule``'s tag away at ``t`` (and say so), if the user holds it."""
        if turn.state.tags.pop(rule.tag, None) is None:
            return
        self.record(rule, turn, "cleared", t, None, reason, env, event_ids or [])

    def record(
        self,
        rule: Rule,
        turn: UserTurn,
        action: TagAction,
        t: int,
        expires_at_ms: int | None,
        reason: str,
        env: Env | None,
        event_ids: list[str],
    ) -> None:
        """Append the change to the output, with the evidence ``env`` shows at ``t``."""
        figures: dict[str, float] = {}
        shown: dict[str, list[str]] = {}
        if env is not None:
            features = turn.state.features
            for name, feature in rule.features.items():
                data = features.get(feature.key)
                value = feature.value(data, t)
                figures[name] = value / 1000 if feature.value_type == "duration" else value
                values = feature.shown(data, t)
                if values:
                    shown[name] = values
        text = reason or rule.name
        if shown:
            text += " (" + "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(shown.items())) + ")"
        change: Change = {
            "change_id": digest(turn.user_id, rule.tag, action, rule.version, t),
            "user_id": turn.user_id,
            "tag": rule.tag,
            "action": action,
            "category": rule.category,
            # The loader admits only SEVERITIES; Rule.severity is typed as plain str.
            "severity": cast(Severity, rule.severity),
            "ts": iso_ms(t),
            "emitted_at": iso_ms(turn.now_ms),
            "expires_at": iso_ms(expires_at_ms) if expires_at_ms is not None else None,
            "rule": {"name": rule.name, "version": rule.version},
            "evidence": {"reason": text, "figures": figures, "event_ids": list(event_ids)},
        }
        turn.out.changes.append(change)
