"""What rules may read from events: field types, readers and ``where`` filters.

Every field a rule names is looked up here at load time, so a misspelt
field, a value a field cannot have, or a numeric comparison on text fails
with a reason before any event is read. Besides the contract fields there
are virtual ones: ``local_hour`` (0-23 in the user's time zone),
``orders.brand`` (brand of the highest-value line) and ``orders.item_count``.
"""

from __future__ import annotations

import operator
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from streamtags.contracts.events import STREAMS, Event, Order
from streamtags.errors import FeatureSpecError

__all__ = [
    "FIELDS",
    "FieldInfo",
    "Filter",
    "Reader",
    "compile_filter",
    "field_reader",
]

FieldKind = Literal["text", "number", "bool"]


class FieldInfo(typing.NamedTuple):
    """What a rule may read from an event field."""

    kind: FieldKind
    choices: frozenset[str] | None  # allowed values of an enumerated text field


def _field_info(annotation: Any) -> FieldInfo | None:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _field_info(typing.get_args(annotation)[0])
    if origin is Literal:
        return FieldInfo("text", frozenset(str(a) for a in typing.get_args(annotation)))
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _field_info(inner[0]) if len(inner) == 1 else None
    if annotation is str:
        return FieldInfo("text", None)
    if annotation is bool:
        return FieldInfo("bool", None)
    if annotation in (int, float):
        return FieldInfo("number", None)
    return None


def _catalogue() -> dict[str, dict[str, FieldInfo]]:
    fields: dict[str, dict[str, FieldInfo]] = {}
    for stream, model in STREAMS.items():
        known = {}
        for name, spec in model.model_fields.items():
            info = _field_info(spec.annotation)
            if info is not None and name != "ts":
                known[name] = info
        # Virtual fields, computed from the event and the user's time zone.
        known["local_hour"] = FieldInfo("number", None)
        known["ts"] = FieldInfo("number", None)
        fields[stream] = known
    fields["orders"]["brand"] = FieldInfo("text", None)
    fields["orders"]["item_count"] = FieldInfo("number", None)
    return fields


#: stream -> field -> what rules may do with it; includes the virtual fields
#: ``local_hour`` (0-23 in the user's time zone), ``orders.brand`` (brand of the
#: highest-value line) and ``orders.item_count``.
FIELDS: dict[str, dict[str, FieldInfo]] = _catalogue()

Reader = Callable[[Event, str | None], Any]
Filter = Callable[[Event, str | None], bool]
"""A compiled ``where``: ``(event, user time zone) -> matches``."""


def _local_hour(event: Event, tz: str | None) -> int:
    moment = datetime.fromtimestamp(event.ts / 1000, tz=ZoneInfo(tz) if tz else UTC)
    return moment.hour


def _main_brand(event: Event, tz: str | None) -> str | None:
    assert type(event) is Order
    best = None
    best_value = -1.0
    for item in event.items:
        value = item.unit_price * item.quantity
        if value > best_value and item.brand:
            best, best_value = item.brand, value
    return best


def _item_count(event: Event, tz: str | None) -> int:
    assert type(event) is Order
    return sum(item.quantity for item in event.items)


def field_reader(streams: Sequence[str], name: str) -> tuple[Reader, FieldInfo]:
    """A function reading field ``name`` from events of every stream in ``streams``."""
    infos = []
    for stream in streams:
        info = FIELDS[stream].get(name)
        if info is None:
            known = ", ".join(sorted(FIELDS[stream]))
            raise FeatureSpecError(f"{stream} events have no field {name!r} (known: {known})")
        infos.append(info)
    if len({i.kind for i in infos}) > 1:
        raise FeatureSpecError(f"field {name!r} has different types in {', '.join(streams)}")
    info = infos[0]
    readers = {stream: _reader_for(stream, name) for stream in streams}
    distinct = set(readers.values())
    if len(distinct) == 1:
        return distinct.pop(), info
    # The field is computed on some streams and plain on others (orders.brand is the
    # brand of the highest-value line; browse.brand is an attribute): pick per event.
    return (lambda event, tz: readers[event.stream](event, tz)), info


_VIRTUAL: dict[tuple[str | None, str], Reader] = {
    (None, "local_hour"): _local_hour,
    ("orders", "brand"): _main_brand,
    ("orders", "item_count"): _item_count,
}
_ATTRIBUTES: dict[str, Reader] = {}


def _reader_for(stream: str, name: str) -> Reader:
    virtual = _VIRTUAL.get((stream, name)) or _VIRTUAL.get((None, name))
    if virtual is not None:
        return virtual
    if name not in _ATTRIBUTES:
        _ATTRIBUTES[name] = _attribute(name)
    return _ATTRIBUTES[name]


def _attribute(name: str) -> Reader:
    getter = operator.attrgetter(name)
    reader: Reader = lambda event, tz: getter(event)  # noqa: E731
    reader.attribute = name  # type: ignore[attr-defined]
    return reader


_OPS = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "present")


def compile_filter(streams: Sequence[str], where: Mapping[str, Any] | None) -> Filter:
    """Compile a ``where`` mapping into a filter; errors name the field and the problem.

    ``{status: paid}`` equals; ``{status: [paid, created]}`` is one of;
    ``{amount: {gte: 100}}`` compares (eq, ne, in, not_in, gt, gte, lt, lte,
    present). All conditions must hold.
    """
    if not where:
        return lambda event, tz: True
    if not isinstance(where, Mapping):
        raise FeatureSpecError("'where' must map field names to values or {op: value}")
    checks: list[Filter] = []
    for name, spec in where.items():
        reader, info = field_reader(streams, str(name))
        ops = (
            spec if isinstance(spec, Mapping) else {"in" if isinstance(spec, list) else "eq": spec}
        )
        for op, value in ops.items():
            checks.append(_compile_check(str(name), reader, info, str(op), value))
    combined = checks[0]
    for check in checks[1:]:
        combined = _both(combined, check)
    return combined


def _both(first: Filter, second: Filter) -> Filter:
    return lambda event, tz: first(event, tz) and second(event, tz)


def _compile_check(name: str, reader: Reader, info: FieldInfo, op: str, value: Any) -> Filter:
    if op not in _OPS:
        raise FeatureSpecError(f"unknown operator {op!r} on {name!r} (known: {', '.join(_OPS)})")
    if op == "present":
        if not isinstance(value, bool):
            raise FeatureSpecError(f"'present' on {name!r} takes true or false")
        return lambda event, tz: (reader(event, tz) is not None) is value
    values = value if op in ("in", "not_in") else [value]
    if op in ("in", "not_in") and not isinstance(value, list):
        raise FeatureSpecError(f"{op!r} on {name!r} takes a list")
    for item in values:
        _check_value(name, info, op, item)
    attribute = getattr(reader, "attribute", None)
    if op in ("in", "not_in"):
        allowed = frozenset(values)
        if op == "in" and attribute is not None:
            get = operator.attrgetter(attribute)
            return lambda event, tz: get(event) in allowed
        if op == "in":
            return lambda event, tz: reader(event, tz) in allowed
        return lambda event, tz: reader(event, tz) not in allowed
    if op == "eq" and attribute is not None:
        get = operator.attrgetter(attribute)
        return lambda event, tz: bool(get(event) == value)
    compare: Callable[[Any, Any], bool] = {
        "eq": lambda a, b: a == b,
        "ne": lambda a, b: a != b,
        "gt": lambda a, b: a is not None and a > b,
        "gte": lambda a, b: a is not None and a >= b,
        "lt": lambda a, b: a is not None and a < b,
        "lte": lambda a, b: a is not None and a <= b,
    }[op]
    return lambda event, tz: bool(compare(reader(event, tz), value))


def _check_value(name: str, info: FieldInfo, op: str, value: Any) -> None:
    if info.kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FeatureSpecError(f"{name!r} is a number; {value!r} is not")
    elif info.kind == "bool":
        if op in ("gt", "gte", "lt", "lte") or not isinstance(value, bool):
            raise FeatureSpecError(f"{name!r} is true/false; use eq/ne with true or false")
    else:
        if op in ("gt", "gte", "lt", "lte"):
            raise FeatureSpecError(f"{name!r} is text; {op!r} compares numbers")
        if not isinstance(value, str):
            raise FeatureSpecError(f"{name!r} is text; {value!r} is not")
        if info.choices is not None and value not in info.choices:
            raise FeatureSpecError(
                f"{value!r} is not a possible {name!r} (one of {', '.join(sorted(info.choices))})"
            )
