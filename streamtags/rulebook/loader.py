"""Rules: ``rules/*.yaml`` loaded, checked and compiled once at start-up.

A rule file holds one rule (or several, separated by ``---``). A rule names
its tag, category, TTL and severity, the features it keeps, and either a
condition (``when``) or a deadline pattern (``absence``). See
``rules/README.md`` for the language; every problem found here stops the
worker with the file, line, rule name and reason (:class:`RuleError`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from streamtags.contracts.events import STREAMS
from streamtags.errors import ExpressionError, FeatureSpecError, RuleError
from streamtags.rulebook.expressions import (
    Compiled,
    ValueType,
    compile_expression,
    parse_duration_ms,
)
from streamtags.rulebook.features import Feature, build_feature
from streamtags.rulebook.fields import Filter, compile_filter, field_reader

__all__ = ["Absence", "CouponSpec", "Matcher", "Rule", "Ruleset", "load_rules"]

Category = Literal["risk", "marketing", "service", "value"]
CATEGORIES = ("risk", "marketing", "service", "value")
SEVERITIES = ("info", "low", "medium", "high")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class _LineDict(dict[str, Any]):
    line: int = 0


class _Loader(yaml.SafeLoader):
    """A safe loader whose mappings remember their line (1-based).

    Only ``true``/``false`` are booleans: YAML 1.1 would read the key ``on``
    (and yes/no/off) as a bool, which is the word rules use for streams.
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _LineDict:
    loader.flatten_mapping(node)
    mapping = _LineDict()
    mapping.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise yaml.MarkedYAMLError(
                problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark
            )
        mapping[str(key)] = loader.construct_object(value_node, deep=True)
    return mapping


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@dataclass(frozen=True, slots=True)
class Matcher:
    """Which events a pattern step matches."""

    streams: frozenset[str]
    where: Filter


@dataclass(frozen=True, slots=True)
class CouponSpec:
    """The coupon a fired absence offers."""

    discount_pct: float
    valid_for_ms: int


@dataclass(frozen=True, slots=True)
class Absence:
    """``start`` not followed by ``stop`` (same ``match`` value) within ``within``."""

    start: Matcher
    stop: Matcher
    match: str | None
    within: Compiled
    guard: Compiled | None
    clear_on_stop: bool
    cart_remove: Matcher | None
    collect_cart: bool


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled rule."""

    name: str
    version: int
    tag: str
    category: Category
    severity: str
    ttl_ms: int
    cooldown_ms: int
    clear_when_false: bool
    description: str
    features: dict[str, Feature]
    params: dict[str, float]
    condition: Compiled | None
    absence: Absence | None
    coupon: CouponSpec | None
    path: str
    line: int
    tags_used: frozenset[str] = frozenset()

    @property
    def streams(self) -> frozenset[str]:
        """Input streams this rule's features watch."""
        return frozenset(s for f in self.features.values() for s in f.streams)


@dataclass(frozen=True, slots=True)
class Ruleset:
    """Every rule, in evaluation order (rules reading other tags come after them)."""

    rules: tuple[Rule, ...]
    time_scale: float

    def by_tag(self) -> dict[str, Rule]:
        """Tag name -> rule."""
        return {rule.tag: rule for rule in self.rules}


_RULE_KEYS = {
    "rule",
    "version",
    "tag",
    "category",
    "severity",
    "ttl",
    "cooldown",
    "clear",
    "description",
    "why",
    "params",
    "features",
    "when",
    "absence",
    "coupon",
}
_ABSENCE_KEYS = {"start", "stop", "match", "within", "if", "clear_on_stop", "cart", "remove"}


def _when_text(when: Any) -> str:
    """Turn ``any:``/``all:``/``not:`` YAML composition into one expression string."""
    if isinstance(when, Mapping):
        if len(when) != 1:
            raise ExpressionError("a condition mapping needs exactly one of any, all, not")
        ((word, body),) = when.items()
        if word in ("any", "all"):
            if not isinstance(body, list) or not body:
                raise ExpressionError(f"'{word}' takes a non-empty list of conditions")
            joiner = " or " if word == "any" else " and "
            return joiner.join(f"({_when_text(part)})" for part in body)
        if word == "not":
            return f"not ({_when_text(body)})"
        raise ExpressionError(f"unknown condition form {word!r} (any, all, not)")
    if isinstance(when, bool):
        return "true" if when else "false"
    if isinstance(when, str | int | float):
        return str(when)
    raise ExpressionError(f"cannot read condition {when!r}")


def _matcher(spec: Any, what: str) -> Matcher:
    if not isinstance(spec, Mapping) or "on" not in spec:
        raise FeatureSpecError(f"'{what}' needs 'on' (a stream) and optional 'where'")
    unknown = set(spec) - {"on", "where"}
    if unknown:
        raise FeatureSpecError(f"unknown keys in '{what}': {', '.join(sorted(unknown))}")
    on = spec["on"]
    streams = [on] if isinstance(on, str) else list(on)
    if not streams or any(s not in STREAMS for s in streams):
        raise FeatureSpecError(f"'{what}.on' must name input streams, got {on!r}")
    return Matcher(frozenset(streams), compile_filter(streams, spec.get("where")))


def _compile_rule(raw: _LineDict, path: Path, scale: float) -> Rule:
    name = raw.get("rule")
    line = raw.line

    def fail(reason: str, at: Any = None) -> RuleError:
        return RuleError(
            path, getattr(at, "line", line), name if isinstance(name, str) else None, reason
        )

    if not isinstance(name, str) or not _NAME.match(name):
        raise fail("'rule' must be a lower_snake_case name")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise fail(
            f"unknown keys: {', '.join(sorted(unknown))} (known: {', '.join(sorted(_RULE_KEYS))})"
        )
    category = raw.get("category")
    if category not in CATEGORIES:
        raise fail(f"'category' must be one of {', '.join(CATEGORIES)}, got {category!r}")
    severity = raw.get("severity", "medium")
    if severity not in SEVERITIES:
        raise fail(f"'severity' must be one of {', '.join(SEVERITIES)}, got {severity!r}")
    tag = raw.get("tag", name)
    if not isinstance(tag, str) or not _NAME.match(tag):
        raise fail("'tag' must be a lower_snake_case name")
    version = raw.get("version", 1)
    if not isinstance(version, int) or version < 1:
        raise fail("'version' must be a positive whole number")
    clear = raw.get("clear", "on_expiry")
    if clear not in ("on_expiry", "when_false"):
        raise fail(f"'clear' must be on_expiry or when_false, got {clear!r}")

    def duration(value: Any, what: str, at: Any = None) -> int:
        try:
            return parse_duration_ms(value, scale=scale)
        except ExpressionError as exc:
            raise fail(f"bad duration for '{what}': {exc}", at) from None

    if "ttl" not in raw:
        raise fail("'ttl' is required (how long a tag lives unless renewed)")
    ttl_ms = duration(raw["ttl"], "ttl")
    cooldown_ms = duration(raw["cooldown"], "cooldown") if "cooldown" in raw else 0

    params: dict[str, float] = {}
    names: dict[str, ValueType] = {}
    for pname, pvalue in (raw.get("params") or {}).items():
        if not _NAME.match(pname):
            raise fail(f"parameter name {pname!r} must be lower_snake_case", raw.get("params"))
        if isinstance(pvalue, bool) or not isinstance(pvalue, int | float | str):
            raise fail(f"parameter {pname!r} must be a number or a duration", raw.get("params"))
        if isinstance(pvalue, str):
            params[pname] = float(duration(pvalue, f"params.{pname}", raw.get("params")))
            names[pname] = "duration"
        else:
            params[pname] = float(pvalue)
            names[pname] = "number"

    features: dict[str, Feature] = {}
    for fname, fspec in (raw.get("features") or {}).items():
        if not _NAME.match(fname):
            raise fail(f"feature name {fname!r} must be lower_snake_case", raw.get("features"))
        if fname in names:
            raise fail(f"feature {fname!r} has the name of a parameter", fspec)
        if not isinstance(fspec, Mapping):
            raise fail(f"feature {fname!r} must be a mapping", raw.get("features"))
        try:
            features[fname] = build_feature(
                fspec, parse_duration=lambda v: parse_duration_ms(v, scale=scale)
            )
        except (FeatureSpecError, ExpressionError) as exc:
            raise fail(f"feature {fname!r}: {exc}", fspec) from None
        names[fname] = features[fname].value_type

    when = raw.get("when")
    absence_raw = raw.get("absence")
    if (when is None) == (absence_raw is None):
        raise fail("a rule needs exactly one of 'when' (a condition) or 'absence' (a deadline)")
    condition = None
    absence = None
    tags_used: frozenset[str] = frozenset()
    try:
        if when is not None:
            condition = compile_expression(
                _when_text(when), names=names, expect="bool", scale=scale
            )
            tags_used = condition.tags
            if not features:
                raise fail("a 'when' rule needs at least one feature to watch events")
        else:
            absence = _compile_absence(absence_raw, names, scale)
            if absence.guard is not None:
                tags_used = absence.guard.tags
    except (ExpressionError, FeatureSpecError) as exc:
        raise fail(str(exc), absence_raw if absence_raw is not None else None) from None
    if tag in tags_used:
        raise fail(f"the condition of {tag!r} refers to its own tag")

    coupon = None
    if "coupon" in raw:
        spec = raw["coupon"]
        if absence is None:
            raise fail("'coupon' only goes with an 'absence' rule", spec)
        if not isinstance(spec, Mapping):
            raise fail("'coupon' needs discount_pct and valid_for", spec)
        pct = spec.get("discount_pct", 10)
        if isinstance(pct, bool) or not isinstance(pct, int | float) or not 0 < pct <= 100:
            raise fail("'coupon.discount_pct' must be a number in (0, 100]", spec)
        coupon = CouponSpec(
            float(pct), duration(spec.get("valid_for", "1h"), "coupon.valid_for", spec)
        )
    if clear == "when_false" and absence is not None:
        raise fail("'clear: when_false' needs a 'when' condition")

    return Rule(
        name=name,
        version=version,
        tag=tag,
        category=category,
        severity=severity,
        ttl_ms=ttl_ms,
        cooldown_ms=cooldown_ms,
        clear_when_false=clear == "when_false",
        description=str(raw.get("description", "")).strip(),
        features=features,
        params=params,
        condition=condition,
        absence=absence,
        coupon=coupon,
        path=str(path),
        line=line,
        tags_used=tags_used,
    )


def _compile_absence(spec: Any, names: Mapping[str, ValueType], scale: float) -> Absence:
    if not isinstance(spec, Mapping):
        raise FeatureSpecError("'absence' needs start, stop and within")
    unknown = set(spec) - _ABSENCE_KEYS
    if unknown:
        raise FeatureSpecError(f"unknown keys in 'absence': {', '.join(sorted(unknown))}")
    for needed in ("start", "stop", "within"):
        if needed not in spec:
            raise FeatureSpecError(f"'absence' needs '{needed}'")
    start = _matcher(spec["start"], "start")
    stop = _matcher(spec["stop"], "stop")
    match = spec.get("match")
    if match is not None:
        field_reader(sorted(start.streams | stop.streams), str(match))
    within = compile_expression(spec["within"], names=names, expect="duration", scale=scale)
    guard = (
        compile_expression(_when_text(spec["if"]), names=names, expect="bool", scale=scale)
        if "if" in spec
        else None
    )
    cart = bool(spec.get("cart", False))
    remove = _matcher(spec["remove"], "remove") if "remove" in spec else None
    if cart:
        field_reader(sorted(start.streams), "sku")
        field_reader(sorted(start.streams), "price")
    return Absence(
        start,
        stop,
        str(match) if match else None,
        within,
        guard,
        bool(spec.get("clear_on_stop", False)),
        remove,
        cart,
    )


def _order(rules: list[Rule]) -> list[Rule]:
    by_tag = {r.tag: r for r in rules}
    ordered: list[Rule] = []
    state: dict[str, int] = {}

    def visit(rule: Rule, trail: tuple[str, ...]) -> None:
        if state.get(rule.tag) == 2:
            return
        if state.get(rule.tag) == 1:
            cycle = " -> ".join((*trail, rule.tag))
            raise RuleError(rule.path, rule.line, rule.name, f"tags depend on each other: {cycle}")
        state[rule.tag] = 1
        for used in sorted(rule.tags_used):
            if used not in by_tag:
                raise RuleError(
                    rule.path, rule.line, rule.name, f"tag({used!r}) names no rule's tag"
                )
            visit(by_tag[used], (*trail, rule.tag))
        state[rule.tag] = 2
        ordered.append(rule)

    for rule in rules:
        visit(rule, ())
    return ordered


def load_rules(paths: Path | Iterable[Path], *, time_scale: float = 1.0) -> Ruleset:
    """Load every ``*.yaml`` rule under a directory (or the given files).

    ``time_scale`` multiplies every duration (demos and tests shorten
    windows with it). Raises :class:`RuleError` on the first problem.
    """
    if isinstance(paths, Path):
        files = sorted(paths.glob("*.yaml")) if paths.is_dir() else [paths]
    else:
        files = sorted(paths)
    if not files:
        raise RuleError(
            paths if isinstance(paths, Path) else "rules", 0, None, "no rule files (*.yaml) found"
        )
    rules: list[Rule] = []
    for path in files:
        try:
            documents = list(yaml.load_all(path.read_text(), Loader=_Loader))
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else 0
            raise RuleError(path, line, None, f"not valid YAML: {exc.problem}") from None
        except OSError as exc:
            raise RuleError(path, 0, None, f"cannot read: {exc}") from None
        for document in documents:
            if document is None:
                continue
            if not isinstance(document, _LineDict):
                raise RuleError(path, 1, None, "a rule file holds mappings, one per rule")
            rules.append(_compile_rule(document, path, time_scale))
    seen: dict[str, Rule] = {}
    for rule in rules:
        for other_key in (rule.name, "tag:" + rule.tag):
            if other_key in seen:
                other = seen[other_key]
                raise RuleError(
                    rule.path,
                    rule.line,
                    rule.name,
                    f"{other_key!r} is already defined at {other.path}:{other.line}",
                )
            seen[other_key] = rule
    return Ruleset(tuple(_order(rules)), time_scale)
