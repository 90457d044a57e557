"""Feature routing: which features an event feeds, and which rules to evaluate after.

Compiled once per engine. Per stream, features are grouped by identical
``where`` (each filter runs once per event however many features and rules
share it), and the groups are indexed by the value of the stream's
discriminating field (``orders.status``, ``browse.action``, ...): a page
view tries no filter at all, a paid order only those that accept "paid".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from streamtags.contracts.events import Event
from streamtags.engine.state import UserState
from streamtags.rulebook.features import Feature
from streamtags.rulebook.fields import Filter, compile_filter
from streamtags.rulebook.loader import Rule

__all__ = ["DISPATCH_FIELDS", "FeatureRouter"]

#: The field whose value decides which ``where`` filters can match, per stream.
DISPATCH_FIELDS = {
    "orders": "status",
    "browse": "action",
    "logins": "outcome",
    "accounts": "action",
}

_Group = tuple[Filter, list[Feature]]


class _Dispatch:
    """A stream's filter groups, indexed by the value of its discriminating field."""

    __slots__ = ("always", "by_value", "field")

    def __init__(self, stream: str, groups: list[tuple[bytes, Filter, list[Feature]]]) -> None:
        self.field = DISPATCH_FIELDS.get(stream)
        self.always: list[_Group] = []
        specific: dict[str, list[_Group]] = {}
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

    def groups_for(self, event: Event) -> list[_Group]:
        """The groups whose filter may accept ``event``."""
        if self.field is None:
            return self.always
        return self.by_value.get(getattr(event, self.field), self.always)


class FeatureRouter:
    """Feeds events to the features that take them; shared by an engine's partitions."""

    __slots__ = ("features", "filters_by_stream", "rule_names_of_feature")

    def __init__(self, rules: Sequence[Rule]) -> None:
        features: dict[str, Feature] = {}
        rule_names: dict[str, list[str]] = {}
        retain: dict[str, int] = {}
        for rule in rules:
            for feature in rule.features.values():
                features.setdefault(feature.key, feature)
                rule_names.setdefault(feature.key, []).append(rule.name)
                retain[feature.key] = max(retain.get(feature.key, 0), feature.window_ms)
        # Rules may share a feature with different windows: keep data for the longest.
        for rule in rules:
            for feature in rule.features.values():
                feature.retain_ms = retain[feature.key]
        #: feature key -> feature (also the packers of a user's stored state)
        self.features = features
        #: feature key -> the rules that read it
        self.rule_names_of_feature = {key: tuple(names) for key, names in rule_names.items()}
        groups: dict[str, dict[bytes, tuple[Filter, list[Feature]]]] = {}
        for feature in features.values():
            spec = orjson.dumps(feature.where_spec, option=orjson.OPT_SORT_KEYS)
            for stream in feature.streams:
                by_spec = groups.setdefault(stream, {})
                if spec not in by_spec:
                    by_spec[spec] = (compile_filter([stream], feature.where_spec), [])
                by_spec[spec][1].append(feature)
        self.filters_by_stream = {
            stream: _Dispatch(stream, [(spec, *group) for spec, group in by_spec.items()])
            for stream, by_spec in groups.items()
        }

    def update(self, event: Event, source: str, state: UserState) -> set[str]:
        """Fold ``event`` into the features that take it; the names of rules reading them."""
        touched: set[str] = set()
        dispatch = self.filters_by_stream.get(source)
        if dispatch is None:
            return touched
        features = state.features
        tz = state.tz
        rule_names_of_feature = self.rule_names_of_feature
        for where, group in dispatch.groups_for(event):
            if not where(event, tz):
                continue
            for feature in group:
                # No pruning here: values only count what is inside their window, raw
                # data is capped, and every state is pruned when it is written (dump).
                data = feature.update(features.get(feature.key), event, tz)
                if data is not None:
                    features[feature.key] = data
                touched.update(rule_names_of_feature[feature.key])
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
