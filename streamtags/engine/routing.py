"""Feature routing: which features an event feeds, and which rules to evaluate after.

Compiled once per engine. Per stream, features are grouped by identical
``where`` (each filter runs once per event however many features and rules
share it), and the groups are indexed by the value of the stream's
discriminating field (``orders.status``, ``browse.action``, ...): a page
view tries no filter at all, a paid order only those that accept "paid", and
only the part of each filter that the value does not already settle. The
rules a feature update touches travel as a bit mask over rule positions.
:class:`RuleIndex` does the same for the steps of absence rules (deadlines).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from streamtags.contracts.events import Event
from streamtags.engine.state import UserState
from streamtags.rulebook.features import Feature
from streamtags.rulebook.fields import Filter, compile_filter
from streamtags.rulebook.loader import Rule

__all__ = ["DISPATCH_FIELDS", "FeatureRouter", "RuleIndex", "settled_values"]

#: The field whose value decides which ``where`` filters can match, per stream.
DISPATCH_FIELDS = {
    "orders": "status",
    "browse": "action",
    "logins": "outcome",
    "accounts": "action",
}


def settled_values(stream: str, where: Any) -> list[str] | None:
    """The values of ``stream``'s dispatch field that settle its condition in ``where``
    (each passes it, no other does), or None when the condition is not that simple."""
    field = DISPATCH_FIELDS.get(stream)
    if field is None or not isinstance(where, Mapping) or field not in where:
        return None
    condition = where[field]
    if isinstance(condition, str):
        return [condition]
    if isinstance(condition, list):
        return [str(v) for v in condition]
    if isinstance(condition, Mapping) and len(condition) == 1:
        if "in" in condition:
            return [str(v) for v in condition["in"]]
        if "eq" in condition:
            return [str(condition["eq"])]
    return None


class RuleIndex:
    """The rules whose step may match an event of one stream, in ruleset order, by the
    value of the stream's dispatch field: the others need not run their filters."""

    __slots__ = ("by_value", "field", "others")

    def __init__(self, stream: str, steps: Sequence[tuple[Rule, Sequence[Any]]]) -> None:
        """``steps``: each rule with the ``where`` specs of its steps on ``stream``."""
        self.field = DISPATCH_FIELDS.get(stream)
        accepted: list[tuple[Rule, set[str] | None]] = []
        for rule, wheres in steps:
            settled = [settled_values(stream, where) for where in wheres]
            values = None if None in settled else {v for vs in settled if vs for v in vs}
            accepted.append((rule, values))
        every = {value for _, values in accepted if values is not None for value in values}
        #: dispatch value -> the rules that may match it
        self.by_value = {
            value: tuple(rule for rule, values in accepted if values is None or value in values)
            for value in sorted(every)
        }
        #: the rules that may match any other value
        self.others = tuple(rule for rule, values in accepted if values is None)

    def rules_for(self, event: Event) -> tuple[Rule, ...]:
        """The rules whose step may match ``event``."""
        if self.field is None:
            return self.others
        return self.by_value.get(getattr(event, self.field), self.others)


class _Group:
    """Features sharing one ``where``, the filter still to run on an event the dispatch
    sent here (None: the dispatch value alone decides), and the rules reading them."""

    __slots__ = ("features", "rules", "where")

    def __init__(self, where: Filter | None, features: list[Feature], rules: int) -> None:
        self.where = where
        self.features = tuple(features)
        #: the rules reading these features, as a bit mask over rule positions
        self.rules = rules


class _Dispatch:
    """A stream's filter groups, indexed by the value of its discriminating field."""

    __slots__ = ("always", "by_value", "field")

    def __init__(self, stream: str, groups: list[tuple[Any, list[Feature], int]]) -> None:
        self.field = DISPATCH_FIELDS.get(stream)
        always: list[_Group] = []
        specific: dict[str, list[_Group]] = {}
        for where, features, rules in groups:
            values = settled_values(stream, where)
            if values is None:
                always.append(_Group(compile_filter([stream], where), features, rules))
                continue
            # The dispatch already checked the field; only the rest of the filter runs.
            assert self.field is not None
            rest = {name: spec for name, spec in where.items() if name != self.field}
            residual = compile_filter([stream], rest) if rest else None
            group = _Group(residual, features, rules)
            for value in dict.fromkeys(values):
                specific.setdefault(value, []).append(group)
        self.always = tuple(always)
        self.by_value = {value: (*groups, *self.always) for value, groups in specific.items()}

    def groups_for(self, event: Event) -> tuple[_Group, ...]:
        """The groups whose filter may accept ``event``."""
        if self.field is None:
            return self.always
        return self.by_value.get(getattr(event, self.field), self.always)


class FeatureRouter:
    """Feeds events to the features that take them; shared by an engine's partitions."""

    __slots__ = ("dispatch_by_stream", "features")

    def __init__(self, rules: Sequence[Rule]) -> None:
        features: dict[str, Feature] = {}
        readers: dict[str, int] = {}
        retain: dict[str, int] = {}
        for position, rule in enumerate(rules):
            for feature in rule.features.values():
                features.setdefault(feature.key, feature)
                readers[feature.key] = readers.get(feature.key, 0) | 1 << position
                retain[feature.key] = max(retain.get(feature.key, 0), feature.window_ms)
        # Rules may share a feature with different windows: keep data for the longest.
        for rule in rules:
            for feature in rule.features.values():
                feature.retain_ms = retain[feature.key]
        #: feature key -> feature (also the packers of a user's stored state)
        self.features = features
        groups: dict[str, dict[bytes, tuple[Any, list[Feature], int]]] = {}
        for feature in features.values():
            spec = orjson.dumps(feature.where_spec, option=orjson.OPT_SORT_KEYS)
            for stream in feature.streams:
                by_spec = groups.setdefault(stream, {})
                where, members, mask = by_spec.get(spec, (feature.where_spec, [], 0))
                by_spec[spec] = (where, [*members, feature], mask | readers[feature.key])
        #: stream -> its features' filter groups, by the value of the dispatch field
        self.dispatch_by_stream = {
            stream: _Dispatch(stream, list(by_spec.values())) for stream, by_spec in groups.items()
        }

    def update(self, event: Event, source: str, state: UserState) -> int:
        """Fold ``event`` into the features that take it; the rules reading them, as a bit
        mask over rule positions (bit ``i`` is the ruleset's ``i``-th rule)."""
        dispatch = self.dispatch_by_stream.get(source)
        if dispatch is None:
            return 0
        # groups_for, without a call: this runs for every event.
        field, always = dispatch.field, dispatch.always
        groups = always if field is None else dispatch.by_value.get(getattr(event, field), always)
        if not groups:
            return 0
        touched = 0
        features = state.features
        tz = state.tz
        for group in groups:
            where = group.where
            if where is not None and not where(event, tz):
                continue
            for feature in group.features:
                # No pruning here: values only count what is inside their window, raw
                # data is capped, and every state is pruned when it is written (dump).
                key = feature.key
                data = feature.update(features.get(key), event, tz)
                if data is not None:
                    features[key] = data
            touched |= group.rules
        return touched

    def prune(self, state: UserState, horizon_ms: int) -> None:
        """Drop feature data no window reaching back from ``horizon_ms`` can use."""
        features = state.features
        for key, data in list(features.items()):
            feature = self.features.get(key)
            kept = feature.prune(data, horizon_ms) if feature is not None else None
            if kept is None:
                del features[key]
            elif kept is not data:
                features[key] = kept
