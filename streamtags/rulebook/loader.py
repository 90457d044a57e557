"""Rules: ``rules/*.yaml`` loaded, checked and compiled once at start-up.

A rule file holds one rule (or several, separated by ``---``). A rule names
its tag, category, TTL and severity, the features it keeps, and either a
condition (``when``) or a deadline pattern (``absence``). See
``rules/README.md`` for the language. Each document is first validated as a
:class:`~streamtags.rulebook.spec.RuleSpec` (keys, types, names), then
compiled in small steps (parameters, features, condition or absence,
coupon) that check what needs the whole rule. Every problem stops the
worker with the file, line, rule name and reason (:class:`RuleError`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamtags.contracts.records import Category
from streamtags.errors import ExpressionError, FeatureSpecError, RuleError
from streamtags.rulebook.documents import LineDict, line_of, read_documents, validated
from streamtags.rulebook.expressions import (
    Compiled,
    FeatureRead,
    ValueType,
    compile_expression,
    parse_duration_ms,
)
from streamtags.rulebook.features import Feature, build_feature
from streamtags.rulebook.fields import Filter, compile_filter, field_reader
from streamtags.rulebook.spec import (
    AbsenceSpec,
    AllOf,
    AnyOf,
    Condition,
    Duration,
    NotOf,
    RuleSpec,
    StepSpec,
    Streams,
)

__all__ = ["Absence", "Coupon", "Matcher", "Rule", "Ruleset", "load_rules"]


@dataclass(frozen=True, slots=True)
class Matcher:
    """Which events a pattern step matches."""

    streams: frozenset[str]
    where: Filter
    #: the ``where`` mapping as written (None: every event of the streams)
    where_spec: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Coupon:
    """The coupon a fired absence offers: percent off, valid for ``valid_for_ms`` (ms)."""

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
    #: a renewal is emitted only when the expiry moves by at least this much (event time, ms)
    renew_throttle_ms: int
    clear_when_false: bool
    description: str
    features: dict[str, Feature]
    params: dict[str, float]
    condition: Compiled | None
    absence: Absence | None
    coupon: Coupon | None
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


@dataclass(frozen=True, slots=True)
class _Source:
    """Where a rule was read: turns a reason and a path into the document into a RuleError."""

    path: Path
    document: LineDict
    scale: float

    @property
    def rule(self) -> str | None:
        name = self.document.get("rule")
        return name if isinstance(name, str) else None

    def error(self, reason: str, *loc: str | int) -> RuleError:
        return RuleError(self.path, line_of(self.document, loc), self.rule, reason)

    def duration_ms(self, value: Duration, *loc: str) -> int:
        try:
            return parse_duration_ms(value, scale=self.scale)
        except ExpressionError as exc:
            raise self.error(f"bad duration for '{'.'.join(loc)}': {exc}", *loc) from None


def _compile_rule(document: LineDict, path: Path, scale: float) -> Rule:
    source = _Source(path, document, scale)
    spec = validated(RuleSpec, document, lambda line, why: RuleError(path, line, source.rule, why))
    params, names = _params(spec, source)
    features = _features(spec, source, names)
    if (spec.when is None) == (spec.absence is None):
        raise source.error(
            "a rule needs exactly one of 'when' (a condition) or 'absence' (a deadline)"
        )
    bound = _Names(names, params, features)
    condition = _condition(spec, source, bound)
    absence = _absence(spec.absence, source, bound) if spec.absence is not None else None
    tags_used = _tags_used(condition, absence)
    tag = spec.tag or spec.rule
    if tag in tags_used:
        raise source.error(f"the condition of {tag!r} refers to its own tag")
    if spec.clear == "when_false" and absence is not None:
        raise source.error("'clear: when_false' needs a 'when' condition", "clear")
    return Rule(
        name=spec.rule,
        version=spec.version,
        tag=tag,
        category=spec.category,
        severity=spec.severity,
        ttl_ms=source.duration_ms(spec.ttl, "ttl"),
        cooldown_ms=source.duration_ms(spec.cooldown, "cooldown") if spec.cooldown else 0,
        renew_throttle_ms=_renew_throttle_ms(spec, source),
        clear_when_false=spec.clear == "when_false",
        description=spec.description.strip(),
        features=features,
        params=params,
        condition=condition,
        absence=absence,
        coupon=_coupon(spec, source, absence),
        path=str(path),
        line=document.line,
        tags_used=tags_used,
    )


def _params(spec: RuleSpec, source: _Source) -> tuple[dict[str, float], dict[str, ValueType]]:
    """Parameter values (durations in ms) and the type each has in conditions."""
    params: dict[str, float] = {}
    names: dict[str, ValueType] = {}
    for name, value in (spec.params or {}).items():
        if isinstance(value, str):
            params[name] = float(source.duration_ms(value, "params", name))
            names[name] = "duration"
        else:
            params[name] = float(value)
            names[name] = "number"
    return params, names


def _features(spec: RuleSpec, source: _Source, names: dict[str, ValueType]) -> dict[str, Feature]:
    """Compile every feature; adds each feature's value type to ``names``."""
    features: dict[str, Feature] = {}
    for name in spec.features or {}:
        if name in names:
            raise source.error(f"feature {name!r} has the name of a parameter", "features", name)
        # Compiled from the mapping as written: a feature's state key is a hash of
        # its text, and stored state must keep its key across versions.
        written = source.document["features"][name]
        try:
            features[name] = build_feature(
                written, parse_duration=lambda v: parse_duration_ms(v, scale=source.scale)
            )
        except (FeatureSpecError, ExpressionError) as exc:
            raise source.error(f"feature {name!r}: {exc}", "features", name) from None
        names[name] = features[name].value_type
    return features


def _when_text(condition: Condition) -> str:
    """Turn ``any:``/``all:``/``not:`` composition into one expression string."""
    if isinstance(condition, AnyOf):
        return " or ".join(f"({_when_text(part)})" for part in condition.any)
    if isinstance(condition, AllOf):
        return " and ".join(f"({_when_text(part)})" for part in condition.all)
    if isinstance(condition, NotOf):
        return f"not ({_when_text(condition.not_)})"
    if isinstance(condition, bool):
        return "true" if condition else "false"
    return str(condition)


@dataclass(frozen=True, slots=True)
class _Names:
    """What a rule's expressions may name: each name's type, the parameters' values
    (inlined) and the features (read from the user's data when evaluated)."""

    types: dict[str, ValueType]
    params: dict[str, float]
    features: dict[str, Feature]


def _expression(
    text: str | int | float,
    source: _Source,
    names: _Names,
    expect: ValueType,
    *loc: str,
) -> Compiled:
    reads = {name: FeatureRead(f.key, f.value) for name, f in names.features.items()}
    try:
        return compile_expression(
            text,
            names=names.types,
            expect=expect,
            scale=source.scale,
            constants=names.params,
            features=reads,
        )
    except ExpressionError as exc:
        # The rule's own condition needs no label; the message quotes the expression.
        where = "" if loc == ("when",) else f"'{'.'.join(loc)}': "
        raise source.error(f"{where}{exc}", *loc) from None


def _condition(spec: RuleSpec, source: _Source, names: _Names) -> Compiled | None:
    if spec.when is None:
        return None
    condition = _expression(_when_text(spec.when), source, names, "bool", "when")
    if not names.features:
        raise source.error("a 'when' rule needs at least one feature to watch events")
    return condition


def _streams(on: Streams) -> list[str]:
    return [on] if isinstance(on, str) else list(on)


def _matcher(step: StepSpec, source: _Source, what: str) -> Matcher:
    streams = _streams(step.on)
    try:
        return Matcher(frozenset(streams), compile_filter(streams, step.where), step.where)
    except FeatureSpecError as exc:
        raise source.error(f"'absence.{what}': {exc}", "absence", what) from None


def _read_field(streams: Iterable[str], field: str, source: _Source, what: str) -> None:
    """Fail at load unless every one of ``streams`` has ``field``."""
    try:
        field_reader(sorted(streams), field)
    except FeatureSpecError as exc:
        raise source.error(f"'absence.{what}': {exc}", "absence") from None


def _absence(spec: AbsenceSpec, source: _Source, names: _Names) -> Absence:
    start = _matcher(spec.start, source, "start")
    stop = _matcher(spec.stop, source, "stop")
    if spec.match is not None:
        _read_field(start.streams | stop.streams, spec.match, source, "match")
    if spec.cart:
        _read_field(start.streams, "sku", source, "cart")
        _read_field(start.streams, "price", source, "cart")
    within = _expression(spec.within, source, names, "duration", "absence", "within")
    guard = None
    if spec.if_ is not None:
        guard = _expression(_when_text(spec.if_), source, names, "bool", "absence", "if")
    return Absence(
        start,
        stop,
        spec.match or None,
        within,
        guard,
        spec.clear_on_stop,
        _matcher(spec.remove, source, "remove") if spec.remove is not None else None,
        spec.cart,
    )


def _tags_used(condition: Compiled | None, absence: Absence | None) -> frozenset[str]:
    if condition is not None:
        return condition.tags
    if absence is not None and absence.guard is not None:
        return absence.guard.tags
    return frozenset()


def _renew_throttle_ms(spec: RuleSpec, source: _Source) -> int:
    """How far a renewal must move the expiry; 1 % of the ttl unless the rule says."""
    ttl_ms = source.duration_ms(spec.ttl, "ttl")
    if spec.renew_throttle is None:
        return ttl_ms // 100
    throttle_ms = source.duration_ms(spec.renew_throttle, "renew_throttle")
    if throttle_ms > ttl_ms:
        raise source.error("'renew_throttle' must not be longer than 'ttl'", "renew_throttle")
    return throttle_ms


def _coupon(spec: RuleSpec, source: _Source, absence: Absence | None) -> Coupon | None:
    if spec.coupon is None:
        return None
    if absence is None:
        raise source.error("'coupon' only goes with an 'absence' rule", "coupon")
    valid_for_ms = source.duration_ms(spec.coupon.valid_for, "coupon", "valid_for")
    return Coupon(float(spec.coupon.discount_pct), valid_for_ms)


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


def _read_file(path: Path, scale: float) -> list[Rule]:
    def fail(line: int, reason: str) -> RuleError:
        return RuleError(path, line, None, reason)

    rules = []
    for _, document in read_documents(path, fail):
        if not isinstance(document, LineDict):
            raise fail(line_of(document, ()) or 1, "a rule file holds mappings, one per rule")
        rules.append(_compile_rule(document, path, scale))
    return rules


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
    rules = [rule for path in files for rule in _read_file(path, time_scale)]
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
