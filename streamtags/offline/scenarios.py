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
decoder, so an invalid event is a failing scenario, not a silent one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import yaml

from streamtags.contracts.codec import decode_event
from streamtags.contracts.events import parse_event_time
from streamtags.contracts.ingest import Decoded
from streamtags.engine.partition import Change, Trigger
from streamtags.errors import ExpressionError, InvalidEvent, ScenarioError
from streamtags.rulebook.expressions import parse_duration_ms
from streamtags.rulebook.loader import Ruleset

__all__ = ["Scenario", "ScenarioResult", "load_scenarios", "run_scenario"]

_DEFAULTS: dict[str, dict[str, Any]] = {
    "orders": {"amount": 10.0},
    "logins": {"outcome": "success"},
    "browse": {},
    "accounts": {},
}


@dataclass(frozen=True, slots=True)
class Scenario:
    """One parsed scenario."""

    name: str
    path: str
    events: list[Decoded]
    until_ms: int | None
    expect: Mapping[str, Any]
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


def _offset(value: Any, *, scale: float, where: str) -> int:
    if value in (0, "0") or (isinstance(value, str) and value.strip("0") in ("s", "m", "h", "d")):
        return 0
    try:
        return parse_duration_ms(value, scale=scale)
    except ExpressionError as exc:
        raise ScenarioError(f"{where}: {exc}") from None


def load_scenarios(path: Path, *, time_scale: float = 1.0) -> list[Scenario]:
    """Parse every scenario in a file or in ``*.yaml`` under a directory."""
    files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    scenarios = []
    for file in files:
        for number, doc in enumerate(yaml.safe_load_all(file.read_text()), start=1):
            if doc is None:
                continue
            where = f"{file} (scenario {number})"
            if not isinstance(doc, dict) or "scenario" not in doc or "events" not in doc:
                raise ScenarioError(f"{where}: needs 'scenario' and 'events'")
            scenarios.append(_parse(doc, str(file), where, time_scale))
    return scenarios


def _parse(doc: dict[str, Any], path: str, where: str, scale: float) -> Scenario:
    raw_start = doc.get("start", "2026-11-22T10:00:00Z")
    if isinstance(raw_start, datetime):  # YAML reads unquoted timestamps as datetimes
        raw_start = int(raw_start.replace(tzinfo=raw_start.tzinfo or UTC).timestamp() * 1000)
    start = parse_event_time(raw_start)
    default_user = str(doc.get("user", "u1"))
    events = []
    users = set()
    for index, raw in enumerate(doc["events"], start=1):
        if not isinstance(raw, dict) or "stream" not in raw:
            raise ScenarioError(f"{where}, event {index}: needs 'stream'")
        fields = dict(raw)
        stream = fields.pop("stream")
        at = _offset(fields.pop("at", 0), scale=scale, where=f"{where}, event {index}")
        body = {
            **_DEFAULTS.get(stream, {}),
            "event_id": f"{stream}-{index}",
            "user_id": default_user,
            "ts": start + at,
            **fields,
        }
        if stream == "orders":
            body.setdefault("order_id", f"order-{index}")
        users.add(str(body["user_id"]))
        try:
            event = decode_event(stream, orjson.dumps(body))
        except (InvalidEvent, KeyError) as exc:
            raise ScenarioError(f"{where}, event {index}: {exc}") from None
        events.append(Decoded(0, stream, index, event))
    until = doc.get("until")
    until_ms = start + _offset(until, scale=scale, where=f"{where}, until") if until else None
    expect = doc.get("expect") or {}
    if not isinstance(expect, dict):
        raise ScenarioError(f"{where}: 'expect' must be a mapping")
    return Scenario(str(doc["scenario"]), path, events, until_ms, expect, frozenset(users))


def run_scenario(scenario: Scenario, ruleset: Ruleset, *, lateness_ms: int) -> ScenarioResult:
    """Replay a scenario on a simulated clock and check its expectations."""
    from streamtags.offline.replay import Replay

    replay = Replay(ruleset, lateness_ms)
    replay.feed(scenario.events)
    if scenario.until_ms is not None:
        replay.until(scenario.until_ms)
    expect = scenario.expect
    failures: list[str] = []
    user = str(expect.get("user", next(iter(sorted(scenario.users)), "u1")))
    live = replay.live_tags(user)
    if "tags" in expect and set(expect["tags"]) != live:
        failures.append(f"live tags are {sorted(live)}, expected exactly {sorted(expect['tags'])}")
    for tag in expect.get("has", []):
        if tag not in live:
            failures.append(f"expected live tag {tag!r}; live tags are {sorted(live)}")
    for tag in expect.get("lacks", []):
        if tag in live:
            failures.append(f"tag {tag!r} should not be live")
    changes = [r for r in replay.records if "change_id" in r]
    failures.extend(_match_sequence(expect.get("changes", []), changes, "change"))
    for tag in expect.get("never", []):
        if any(c["tag"] == tag and c["action"] == "applied" for c in changes):
            failures.append(f"tag {tag!r} was applied at some point")
    triggers = [r for r in replay.records if "trigger_id" in r]
    wanted = expect.get("triggers")
    if isinstance(wanted, int) and len(triggers) != wanted:
        failures.append(f"{len(triggers)} coupon triggers, expected {wanted}")
    elif isinstance(wanted, list):
        if len(triggers) != len(wanted):
            failures.append(f"{len(triggers)} coupon triggers, expected {len(wanted)}")
        failures.extend(_match_sequence(wanted, triggers, "trigger"))
    return ScenarioResult(scenario, failures, replay.records)


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
