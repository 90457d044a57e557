"""Tag lifecycle: evaluating a rule for a user and turning the result into changes.

Applied, renewed (still true and the expiry moves by at least a quarter of
the TTL), cleared (TTL passed, condition ended for ``clear: when_false``,
the user opted out of personalisation for marketing tags), cooldowns, and
the evidence and deterministic ids every change carries. A mixin of
:class:`streamtags.engine.Partition`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streamtags.contracts.events import Event
from streamtags.contracts.ingest import Decoded
from streamtags.contracts.records import iso_ms
from streamtags.engine.state import UserState
from streamtags.rulebook.expressions import Env
from streamtags.rulebook.loader import Rule

if TYPE_CHECKING:
    from streamtags.engine.partition import Engine

__all__ = ["Change", "Output", "TagLifecycle", "Trigger", "digest"]

Change = dict[str, Any]
"""A tag change, shaped exactly as :class:`streamtags.records.TagChange` (plain data:
the hot path builds thousands of these, and the pydantic model is the contract
that tests hold them to)."""
Trigger = dict[str, Any]
"""A coupon trigger, shaped exactly as :class:`streamtags.records.CouponTrigger`."""


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


def digest(*parts: object) -> str:
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=10).hexdigest()


class TagLifecycle:
    """Rule evaluation and tag changes for one partition's users."""

    engine: Engine

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
            "change_id": digest(user_id, rule.tag, action, rule.version, t),
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
