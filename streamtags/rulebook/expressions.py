"""The condition language of rules: parsed and type-checked once, evaluated many times.

A condition is data, never code: a small grammar of comparisons, arithmetic,
``and``/``or``/``not``, and two functions. No ``eval``, no attribute access,
no imports::

    ips >= 3 or countries >= 2
    paid_90d >= 5 and spend_90d >= top_spend and recent >= 1
    ratio(promo_orders, paid_orders) >= 0.8
    2 * usual_gap            # a duration (used for ``within``)
    tag('high_value') and not tag('frustrated')

Names are the rule's features and parameters. Values have one of three types,
checked at load: ``number``, ``duration`` (milliseconds; literals such as
``500ms``, ``30s``, ``15m``, ``1h``, ``7d``) and ``bool``. ``a / b`` and
``ratio(a, b)`` are 0 when ``b`` is 0.

Load-time problems raise :class:`ExpressionError`; evaluation cannot fail.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from streamtags.errors import ExpressionError

__all__ = [
    "Compiled",
    "Env",
    "Evaluator",
    "FeatureRead",
    "ValueType",
    "compile_expression",
    "parse_duration_ms",
]

ValueType = Literal["number", "duration", "bool"]
Value = float | bool


class Env:
    """What an expression can see while it runs: values by name, live tags, and (for
    names compiled as feature reads) one user's feature data at event time ``t``
    (epoch ms, UTC)."""

    __slots__ = ("features", "t", "tags", "values")

    def __init__(
        self,
        values: Mapping[str, float],
        tags: Mapping[str, object],
        features: Mapping[str, Any] | None = None,
        t: int = 0,
    ) -> None:
        self.values = values
        self.tags = tags
        #: feature key -> the user's data, for names compiled as feature reads
        self.features: Mapping[str, Any] = features if features is not None else {}
        self.t = t


Evaluator = Callable[[Env], Value]
"""A compiled expression (or part of one): reads what it needs from an :class:`Env`."""


_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration_ms(text: str | int | float, *, scale: float = 1.0) -> int:
    """Parse ``"15m"``-style durations into milliseconds, times ``scale``.

    A bare number is taken as seconds. Raises :class:`ExpressionError`.
    """
    if isinstance(text, bool):
        raise ExpressionError(f"{text!r} is not a duration")
    if isinstance(text, int | float):
        millis = float(text) * 1000
    else:
        if not _DURATION.match(text.strip()):
            raise ExpressionError(
                f"{text!r} is not a duration (write e.g. 500ms, 30s, 15m, 1h, 7d, 1h30m)"
            )
        millis = sum(
            float(number) * _UNITS_MS[unit] for number, unit in _DURATION_PART.findall(text)
        )
    if millis <= 0:
        raise ExpressionError(f"{text!r} must be longer than zero")
    return max(1, round(millis * scale))


@dataclass(frozen=True, slots=True)
class Compiled:
    """A checked expression: call :attr:`run` with an :class:`Env`."""

    source: str
    type: ValueType
    run: Evaluator
    names: frozenset[str]
    tags: frozenset[str]


_TOKEN = re.compile(
    r"\s*(?:(?P<duration>\d+(?:\.\d+)?(?:ms|s|m|h|d|w)\b)"
    r"|(?P<number>\d+(?:\.\d+)?)"
    r"|(?P<string>'[^']*'|\"[^\"]*\")"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>>=|<=|==|!=|>|<|\+|-|\*|/|\(|\)|,))"
)

_COMPARE: dict[str, Callable[[Value, Value], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}


def _div(a: float, b: float) -> float:
    return a / b if b else 0.0


_ARITH: dict[str, Callable[[float, float], float]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": _div,
}


def _any(parts: list[Evaluator]) -> Evaluator:
    """``a or b or ...`` in one call, left to right, stopping at the first true part."""
    if len(parts) == 2:
        first, second = parts
        return lambda env: bool(first(env) or second(env))
    steps = tuple(parts)

    def run(env: Env) -> bool:
        for step in steps:  # noqa: SIM110 - any() over a generator is slower, and this is hot
            if step(env):
                return True
        return False

    return run


def _all(parts: list[Evaluator]) -> Evaluator:
    """``a and b and ...`` in one call, left to right, stopping at the first false part."""
    if len(parts) == 2:
        first, second = parts
        return lambda env: bool(first(env) and second(env))
    steps = tuple(parts)

    def run(env: Env) -> bool:
        for step in steps:  # noqa: SIM110 - all() over a generator is slower, and this is hot
            if not step(env):
                return False
        return True

    return run


def _arith(fn: Callable[[float, float], float], a: Evaluator, b: Evaluator) -> Evaluator:
    return lambda env: fn(a(env), b(env))


class FeatureRead(NamedTuple):
    """How a compiled expression reads a feature: its key in :attr:`Env.features` and
    its value function ``(data, t) -> value`` (data None when the user has none yet;
    ``t`` event time, epoch ms)."""

    key: str
    value: Callable[[Any, int], float]


@dataclass(slots=True)
class _Node:
    type: ValueType
    run: Evaluator
    constant: float | None = None  # set for literals, so comparisons can inline them
    name: str | None = None  # set for plain names, so comparisons can read them directly
    read: FeatureRead | None = None  # set for features, so comparisons can read them directly


class _Parser:
    def __init__(
        self, source: str, names: Mapping[str, ValueType], scale: float, bound: _Bound
    ) -> None:
        self.source = source
        self.names = names
        self.scale = scale
        self.bound = bound
        self.tokens = self._tokenize(source)
        self.pos = 0
        self.used: set[str] = set()
        self.tags: set[str] = set()

    def _tokenize(self, source: str) -> list[tuple[str, str]]:
        tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(source):
            if source[pos:].strip() == "":
                break
            match = _TOKEN.match(source, pos)
            if not match or match.end() == pos:
                raise ExpressionError(f"unexpected {source[pos:].strip()[:12]!r} in {source!r}")
            kind = match.lastgroup or ""
            tokens.append((kind, match.group(kind)))
            pos = match.end()
        return tokens

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise ExpressionError(f"{self.source!r} ends too early")
        if value is not None and token[1] != value:
            raise ExpressionError(f"expected {value!r} but found {token[1]!r} in {self.source!r}")
        self.pos += 1
        return token

    def at(self, *values: str) -> bool:
        token = self.peek()
        return token is not None and token[1] in values and token[0] in ("op", "name")

    def parse(self) -> _Node:
        node = self.parse_or()
        if self.peek() is not None:
            raise ExpressionError(f"unexpected {self.peek()[1]!r} in {self.source!r}")  # type: ignore[index]
        return node

    def _boolean(self, node: _Node, word: str) -> None:
        if node.type != "bool":
            raise ExpressionError(
                f"'{word}' needs true/false operands, got a {node.type} in {self.source!r}"
            )

    def parse_or(self) -> _Node:
        return self._chain("or", self.parse_and, _any)

    def parse_and(self) -> _Node:
        return self._chain("and", self.parse_not, _all)

    def _chain(
        self,
        word: str,
        parse_part: Callable[[], _Node],
        combine: Callable[[list[Evaluator]], Evaluator],
    ) -> _Node:
        """``part word part word ...``: every part is checked, and combined in one call."""
        parts = [parse_part()]
        while self.at(word):
            self.take()
            right = parse_part()
            if len(parts) == 1:
                self._boolean(parts[0], word)
            self._boolean(right, word)
            parts.append(right)
        if len(parts) == 1:
            return parts[0]
        return _Node("bool", combine([part.run for part in parts]))

    def parse_not(self) -> _Node:
        if self.at("not"):
            self.take()
            inner = self.parse_not()
            self._boolean(inner, "not")
            run = inner.run
            return _Node("bool", lambda env: not run(env))
        return self.parse_compare()

    def parse_compare(self) -> _Node:
        left = self.parse_sum()
        token = self.peek()
        if token is not None and token[1] in _COMPARE:
            self.take()
            right = self.parse_sum()
            if left.type != right.type or left.type == "bool":
                raise ExpressionError(
                    f"cannot compare a {left.type} with a {right.type} using {token[1]!r} in "
                    f"{self.source!r}"
                )
            compare = _COMPARE[token[1]]
            a, b = left.run, right.run
            if left.read is not None and right.constant is not None:
                # ``feature >= 3`` in one call: the value read and compared in place.
                (key, value), limit = left.read, right.constant
                return _Node(
                    "bool", lambda env: compare(value(env.features.get(key), env.t), limit)
                )
            if left.name is not None and right.constant is not None:
                # The common shape, ``feature >= 3``, without the two inner calls.
                name, constant = left.name, right.constant
                return _Node("bool", lambda env: compare(env.values[name], constant))
            if right.constant is not None:
                constant = right.constant
                return _Node("bool", lambda env: compare(a(env), constant))
            return _Node("bool", lambda env: compare(a(env), b(env)))
        return left

    def _arith_type(self, op: str, left: ValueType, right: ValueType) -> ValueType:
        if "bool" in (left, right):
            raise ExpressionError(f"{op!r} needs numbers or durations in {self.source!r}")
        if op in "+-":
            if left != right:
                raise ExpressionError(
                    f"cannot add or subtract a {left} and a {right} in {self.source!r}"
                )
            return left
        if op == "*":
            if left == right == "duration":
                raise ExpressionError(f"cannot multiply two durations in {self.source!r}")
            return "duration" if "duration" in (left, right) else "number"
        # division
        if left == right:
            return "number"
        if left == "duration":
            return "duration"
        raise ExpressionError(f"cannot divide a number by a duration in {self.source!r}")

    def parse_sum(self) -> _Node:
        node = self.parse_product()
        while self.at("+", "-"):
            op = self.take()[1]
            right = self.parse_product()
            kind = self._arith_type(op, node.type, right.type)
            node = _Node(kind, _arith(_ARITH[op], node.run, right.run))
        return node

    def parse_product(self) -> _Node:
        node = self.parse_atom()
        while self.at("*", "/"):
            op = self.take()[1]
            right = self.parse_atom()
            kind = self._arith_type(op, node.type, right.type)
            node = _Node(kind, _arith(_ARITH[op], node.run, right.run))
        return node

    def parse_atom(self) -> _Node:
        kind, text = self.take()
        if kind == "number":
            number = float(text)
            return _Node("number", lambda env: number, constant=number)
        if kind == "duration":
            millis = float(parse_duration_ms(text, scale=self.scale))
            return _Node("duration", lambda env: millis, constant=millis)
        if kind == "op" and text == "(":
            node = self.parse_or()
            self.take(")")
            return node
        if kind == "op" and text == "-":
            inner = self.parse_atom()
            if inner.type == "bool":
                raise ExpressionError(f"cannot negate true/false in {self.source!r}")
            run = inner.run
            return _Node(inner.type, lambda env: -run(env))
        if kind == "name":
            if text in ("true", "false"):
                truth = text == "true"
                return _Node("bool", lambda env: truth)
            if self.at("("):
                return self.parse_call(text)
            if text not in self.names:
                known = ", ".join(sorted(self.names)) or "none"
                raise ExpressionError(f"unknown name {text!r} in {self.source!r} (known: {known})")
            self.used.add(text)
            return self.parse_name(text)
        raise ExpressionError(f"unexpected {text!r} in {self.source!r}")

    def parse_name(self, name: str) -> _Node:
        kind = self.names[name]
        constant = self.bound.constants.get(name)
        if constant is not None:
            return _Node(kind, lambda env: constant, constant=constant)
        read = self.bound.features.get(name)
        if read is not None:
            key, value = read
            return _Node(kind, lambda env: value(env.features.get(key), env.t), read=read)
        return _Node(kind, lambda env: env.values[name], name=name)

    def parse_call(self, function: str) -> _Node:
        self.take("(")
        if function == "tag":
            kind, text = self.take()
            if kind != "string":
                raise ExpressionError(f"tag() takes a quoted tag name in {self.source!r}")
            self.take(")")
            tag = text[1:-1]
            self.tags.add(tag)
            return _Node("bool", lambda env: tag in env.tags)
        if function == "ratio":
            num = self.parse_sum()
            self.take(",")
            den = self.parse_sum()
            self.take(")")
            if num.type != "number" or den.type != "number":
                raise ExpressionError(f"ratio() takes two numbers in {self.source!r}")
            a, b = num.run, den.run
            return _Node("number", lambda env: _div(a(env), b(env)))
        raise ExpressionError(
            f"unknown function {function!r} in {self.source!r} (known: tag, ratio)"
        )


@dataclass(frozen=True, slots=True)
class _Bound:
    constants: Mapping[str, float]
    features: Mapping[str, FeatureRead]


def compile_expression(
    source: str | int | float | bool,
    *,
    names: Mapping[str, ValueType],
    expect: ValueType | None = None,
    scale: float = 1.0,
    constants: Mapping[str, float] | None = None,
    features: Mapping[str, FeatureRead] | None = None,
) -> Compiled:
    """Parse, type-check and compile ``source``; durations are scaled by ``scale``.

    Names in ``constants`` (a rule's parameters) are inlined; names in ``features``
    are read from :attr:`Env.features` at :attr:`Env.t`, once per use; other names
    are looked up in :attr:`Env.values`."""
    text = str(source).lower() if isinstance(source, bool) else str(source)
    parser = _Parser(text, names, scale, _Bound(constants or {}, features or {}))
    node = parser.parse()
    if expect is not None and node.type != expect:
        raise ExpressionError(f"{text!r} is a {node.type}, but a {expect} is needed here")
    return Compiled(text, node.type, node.run, frozenset(parser.used), frozenset(parser.tags))
