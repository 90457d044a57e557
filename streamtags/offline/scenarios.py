"""Rule scenarios: "given these events, advance the clock, expect these tags".

A scenario file (``rules/scenarios/*.yaml``) holds one or more scenarios,
separated by ``---``, written for analysts::

    scenario: an order at minute 14 cancels the coupon
    start: 2026-11-22T10:00:00Z      # times below are offsets from here
    events:
      - {at: 0m, stream: browse, action: add_to_cart, cart_id: c1, sku: gc-50, price: 50}
      - {at: 14m, stream: orders, status: created, cart_id: c1, amount: 50}
    until: 40m                       # advance the clock to here
    expect:
      tags: []                       # exactly these live tags at the end (optional)
      has: []                        # at least these live tags
      lacks: [cart_abandoned]        # none of these
      changes: [{tag: cart_abandoned, action: applied}]   # these, in this order
      triggers: 0                    # how many coupon triggers (or a list to match)

Events default to user ``u1`` (override with ``user:``), get ids and the
order fields a scenario rarely cares about, and go through the real
decoder, so an invalid event is a failing scenario, not a silent one. Each
document is validated as a :class:`~streamtags.offline.scenario_spec.ScenarioSpec`
first: an unknown key anywhere (``untill:``, ``hass:``, a misspelt event
field) stops the load with ``file:line: reason`` (:class:`ScenarioError`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from streamtags.contracts.codec import decode_event
from streamtags.contracts.ingest import Decoded
from streamtags.engine.partition import Change, Trigger
from streamtags.errors import InvalidEvent, ScenarioError
from streamtags.offline.scenario_spec import EventStep, ExpectSpec, ScenarioSpec, is_zero_offset
from streamtags.rulebook.documents import LineDict, line_of, read_documents, validated
from streamtags.rulebook.expressions import parse_duration_ms
from streamtags.rulebook.loader import Ruleset

__all__ = [
    "Scenario",
    "ScenarioResult",
    "live_failures",
    "load_scenarios",
    "record_failures",
    "run_scenario",
]

_DEFAULTS: dict[str, dict[str, Any]] = {
    "orders": {"amount": 10.0},
    "logins": {"outcome": "success"},
    "browse": {},
    "accounts": {},
}


@dataclass(frozen=True, slots=True)
class Scenario:
    """One parsed scenario: decoded events (offset = position, 1-based) and expectations."""

    name: str
    path: str
    line: int
    events: list[Decoded]
    until_ms: int | None
    expect: ExpectSpec
    users: frozenset[str]


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """What a scenario run found."""

    scenario: Scenario
    failures: list[str]
    records: list[Change | Trigger]

    @property
    def passed(self) -> bool:
        """True when every expectation held."""
        return not self.failures


def load_scenarios(
    path: Path, *, time_scale: float = 1.0, tags: Collection[str] | None = None
) -> list[Scenario]:
    """Parse every scenario in a file or in ``*.yaml`` under a directory.

    ``time_scale`` multiplies every offset. With ``tags`` (the ruleset's tag
    names), an expectation naming any other tag is a typo and an error.
    Raises :class:`ScenarioError` with ``file:line: reason``.
    """
    files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    scenarios = []
    for file in files:

        def fail(line: int, reason: str, file: Path = file) -> ScenarioError:
            return ScenarioError(f"{file}:{line}: {reason}")

        for _, document in read_documents(file, fail):
            if not isinstance(document, LineDict):
                raise fail(line_of(document, ()) or 1, "a scenario file holds mappings")
            spec = validated(ScenarioSpec, document, fail)
            if tags is not None:
                _check_tags(spec.expect, document, tags, fail)
            scenarios.append(_scenario(spec, document, str(file), time_scale, fail))
    return scenarios


def _check_tags(expect: ExpectSpec, document: LineDict, tags: Collection[str], fail: Any) -> None:
    named = [
        (key, tag)
        for key in ("tags", "has", "lacks", "never")
        for tag in getattr(expect, key) or ()
    ]
    named += [("changes", change.tag) for change in expect.changes if change.tag is not None]
    for key, tag in named:
        if tag not in tags:
            line = line_of(document, ("expect", key))
            raise fail(line, f"'expect.{key}' names {tag!r}, which no rule tags")


def _offset_ms(value: str | int | float, scale: float) -> int:
    return 0 if is_zero_offset(value) else parse_duration_ms(value, scale=scale)


def _scenario(
    spec: ScenarioSpec, document: LineDict, path: str, scale: float, fail: Any
) -> Scenario:
    events = []
    for index, step in enumerate(spec.events, start=1):
        try:
            events.append(_decoded(step, index, spec, scale))
        except (InvalidEvent, KeyError) as exc:
            where = ("events", index - 1)
            raise fail(line_of(document, where), f"'events.{index - 1}': {exc}") from None
    until_ms = None if spec.until is None else spec.start + _offset_ms(spec.until, scale)
    users = frozenset(decoded.event.user_id for decoded in events)
    return Scenario(spec.scenario, path, document.line, events, until_ms, spec.expect, users)


def _decoded(step: EventStep, index: int, spec: ScenarioSpec, scale: float) -> Decoded:
    """One step as the decoder would see it from a producer, with scenario defaults filled in."""
    fields = step.model_dump(exclude_unset=True, exclude={"stream", "at"})
    stream = step.stream
    body = {
        **_DEFAULTS[stream],
        "event_id": f"{stream}-{index}",
        "user_id": spec.user,
        "ts": spec.start + _offset_ms(step.at, scale),
        **fields,
    }
    if stream == "orders":
        body.setdefault("order_id", f"order-{index}")
    return Decoded(0, stream, index, decode_event(stream, orjson.dumps(body)))


def run_scenario(scenario: Scenario, ruleset: Ruleset, *, lateness_ms: int) -> ScenarioResult:
    """Replay a scenario on a simulated clock and check its expectations."""
    from streamtags.offline.replay import Replay

    replay = Replay(ruleset, lateness_ms, end_ms=scenario.until_ms)
    replay.feed(scenario.events)
    if scenario.until_ms is not None:
        replay.until(scenario.until_ms)
    else:
        replay.settle()
    expect = scenario.expect
    user = expect.user or next(iter(sorted(scenario.users)), "u1")
    failures = live_failures(expect, replay.live_tags(user))
    failures += record_failures(expect, replay.records)
    return ScenarioResult(scenario, failures, replay.records)


def live_failures(expect: ExpectSpec, live: set[str]) -> list[str]:
    """The expectations on live tags at the end (``tags``, ``has``, ``lacks``) that failed."""
    failures = []
    if expect.tags is not None and set(expect.tags) != live:
        failures.append(f"live tags are {sorted(live)}, expected exactly {sorted(expect.tags)}")
    for tag in expect.has:
        if tag not in live:
            failures.append(f"expected live tag {tag!r}; live tags are {sorted(live)}")
    for tag in expect.lacks:
        if tag in live:
            failures.append(f"tag {tag!r} should not be live")
    return failures


def record_failures(expect: ExpectSpec, records: Iterable[Mapping[str, Any]]) -> list[str]:
    """The expectations on emitted records (``changes``, ``never``, ``triggers``) that failed."""
    records = list(records)
    changes = [r for r in records if "change_id" in r]
    wanted_changes = [c.model_dump(exclude_unset=True) for c in expect.changes]
    failures = _match_sequence(wanted_changes, changes, "change")
    for tag in expect.never:
        if any(c["tag"] == tag and c["action"] == "applied" for c in changes):
            failures.append(f"tag {tag!r} was applied at some point")
    triggers = [r for r in records if "trigger_id" in r]
    wanted = expect.triggers
    if isinstance(wanted, int) and len(triggers) != wanted:
        failures.append(f"{len(triggers)} coupon triggers, expected {wanted}")
    elif isinstance(wanted, list):
        if len(triggers) != len(wanted):
            failures.append(f"{len(triggers)} coupon triggers, expected {len(wanted)}")
        specs = [t.model_dump(exclude_unset=True) for t in wanted]
        failures.extend(_match_sequence(specs, triggers, "trigger"))
    return failures


def _match_sequence(
    wanted: Iterable[Mapping[str, Any]], records: list[Any], what: str
) -> list[str]:
    """Each wanted mapping must match a later record than the previous one did."""
    failures = []
    position = 0
    for spec in wanted:
        for index in range(position, len(records)):
            if all(records[index].get(k) == v for k, v in spec.items()):
                position = index + 1
                break
        else:
            seen = [{k: r.get(k) for k in spec} for r in records[position:]]
            failures.append(
                f"no {what} matching {dict(spec)} (after position {position}; saw {seen})"
            )
    return failures
