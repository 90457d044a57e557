"""The shape of a rule file, as typed pydantic models (one document = one :class:`RuleSpec`).

A spec says which keys a rule may have and what kind of value each takes;
an unknown key anywhere is an error, so a typo fails at load instead of
being ignored. What needs the other parts of a rule (names used in a
condition, fields of a stream, ``coupon`` only with ``absence``) is checked
when the spec is compiled (:mod:`~streamtags.rulebook.loader`). The same
models give ``schemas/rule.schema.json``, which editors use to complete and
check rule files as analysts type.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    WithJsonSchema,
    model_validator,
)
from pydantic.config import JsonDict

from streamtags.contracts.records import Category, Severity
from streamtags.errors import ExpressionError
from streamtags.rulebook.documents import PROBLEM, bad_duration, problem, unknown_keys
from streamtags.rulebook.expressions import parse_duration_ms

__all__ = [
    "NAME_PATTERN",
    "AbsenceSpec",
    "AllOf",
    "AnyOf",
    "AverageSpec",
    "Condition",
    "CountSpec",
    "CouponSpec",
    "DistinctSpec",
    "Duration",
    "FeatureSpec",
    "GapSpec",
    "MaximumSpec",
    "MinimumSpec",
    "ModeCountSpec",
    "Name",
    "NotOf",
    "RuleSpec",
    "SequenceSpec",
    "SequenceSteps",
    "Spec",
    "StepSpec",
    "Stream",
    "Streams",
    "SumSpec",
    "Where",
    "check_duration",
]

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
"""Rule, tag, feature and parameter names: lower_snake_case, at most 64 characters."""

_NAME = re.compile(NAME_PATTERN)


def _check_name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise problem("must be a lower_snake_case name (a-z, 0-9, _; at most 64 characters)")
    return value


Name = Annotated[
    str, PlainValidator(_check_name), WithJsonSchema({"type": "string", "pattern": NAME_PATTERN})
]
"""A lower_snake_case name."""

Stream = Literal["orders", "browse", "logins", "accounts"]
"""An input stream (the keys of :data:`streamtags.contracts.events.STREAMS`)."""


# The docstrings and field descriptions of the models are what editors show
# (JSON Schema descriptions), so they quote with Markdown's single backticks.


class Spec(BaseModel):
    """Base of every spec: strict types, frozen, and no key that is not a field."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_keys(cls, data: Any) -> Any:
        # extra="forbid" would say "Extra inputs are not permitted"; an analyst
        # fixing a typo is better served by the list of keys that exist.
        if isinstance(data, dict):
            known = [field.alias or name for name, field in cls.model_fields.items()]
            unknown = [str(key) for key in data if key not in known]
            if unknown:
                raise unknown_keys(unknown, known)
        return data


def check_duration(value: Any) -> Any:
    """``value`` if it is a duration (``15m``, ``1h30m``, seconds as a number); else an error."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise bad_duration(f"{value!r} is not a duration (write e.g. 500ms, 30s, 15m, 1h, 7d)")
    try:
        parse_duration_ms(value)
    except ExpressionError as exc:
        raise bad_duration(str(exc)) from None
    return value


_DURATION_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+$"},
        {"type": "number", "exclusiveMinimum": 0},
    ],
    "description": "A duration: 500ms, 30s, 15m, 1h, 7d, 2w or 1h30m; a bare number is seconds.",
}

Duration = Annotated[
    str | int | float, PlainValidator(check_duration), WithJsonSchema(_DURATION_SCHEMA)
]
"""A duration as written (``15m``); parsed to milliseconds, scaled, when compiled."""


def _check_param(value: Any) -> Any:
    if isinstance(value, str):
        return check_duration(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise problem(f"must be a number or a duration, got {value!r}")
    return value


_Param = Annotated[
    str | int | float,
    PlainValidator(_check_param),
    WithJsonSchema({"anyOf": [{"type": "number"}, _DURATION_SCHEMA["anyOf"][0]]}),
]


def _one_or_many(value: Any) -> str:
    return "many" if isinstance(value, list) else "one"


Streams = Annotated[
    Annotated[Stream, Tag("one")] | Annotated[list[Stream], Tag("many"), Field(min_length=1)],
    Discriminator(_one_or_many),
]
"""``on:``: one input stream or a list of them."""

Operator = Literal["eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "present"]
Scalar = str | int | float | bool


def _field_test_form(value: Any) -> str:
    if isinstance(value, dict):
        return "comparison"
    return "one of" if isinstance(value, list) else "equals"


_FieldTest = Annotated[
    Annotated[Scalar, Tag("equals")]
    | Annotated[list[Scalar], Tag("one of")]
    | Annotated[dict[Operator, Any], Tag("comparison")],
    Discriminator(_field_test_form),
]

Where = dict[str, _FieldTest]
"""``where:`` event field -> a value (equals), a list (one of) or ``{operator: value}``."""

_WHERE = Field(
    default=None,
    description="Only events whose fields match: {status: paid} (equals), "
    "{action: [a, b]} (one of), {amount: {gte: 100}} (eq ne in not_in gt gte lt lte present).",
)
_ON = Field(description="The input stream, or a list of them: orders, browse, logins, accounts.")


class _Watching(Spec):
    on: Streams = _ON
    where: Where | None = _WHERE


class StepSpec(_Watching):
    """Which events a step of an `absence` matches: `on` streams, `where` fields."""


_Cap = Annotated[int, Field(ge=1, le=10_000)]
_WINDOW = Field(description="How far back the feature looks, ending at the event time.")
_CAP = Field(
    default=64, description="At most this many events or values kept per user (newest win)."
)
_BUCKET = Field(
    default=None,
    description="Keep totals per bucket of this length instead of single events "
    "(long horizons); window edges are then exact to one bucket.",
)


class _Windowed(_Watching):
    window: Duration = _WINDOW
    cap: _Cap = _CAP


class CountSpec(_Windowed):
    """`count: events`: matching events in the window."""

    count: Literal["events", True] = Field(description="Write `count: events`.")
    bucket: Duration | None = _BUCKET


class SumSpec(_Windowed):
    """`sum: FIELD`: the total of a numeric field over the window."""

    sum: str = Field(description="A numeric event field.")
    bucket: Duration | None = _BUCKET


class AverageSpec(_Windowed):
    """`avg: FIELD`: the mean of a numeric field over the window."""

    avg: str = Field(description="A numeric event field.")


class MinimumSpec(_Windowed):
    """`min: FIELD`: the smallest value of a numeric field in the window."""

    min: str = Field(description="A numeric event field.")


class MaximumSpec(_Windowed):
    """`max: FIELD`: the largest value of a numeric field in the window."""

    max: str = Field(description="A numeric event field.")


class DistinctSpec(_Windowed):
    """`distinct: FIELD`: how many distinct values a field took in the window."""

    distinct: str = Field(description="The event field whose distinct values are counted.")


class ModeCountSpec(_Windowed):
    """`mode_count: FIELD`: events sharing the most common value of a field."""

    mode_count: str = Field(description="The event field whose most common value counts.")


class SequenceSteps(Spec):
    """The two steps of a sequence, as `where` filters on the feature's streams."""

    first: Where = Field(description="The first step (a `where` filter).")
    then: Where = Field(description="The step that must follow within `within`.")


class SequenceSpec(_Windowed):
    """`sequence:`: `first` then `then` within `within`, counted over the window."""

    sequence: SequenceSteps
    within: Duration = Field(description="How soon `then` must follow `first`.")


class GapSpec(_Watching):
    """`gap: true`: the user's usual interval between matching events (a duration)."""

    gap: Literal[True] = Field(description="Write `gap: true`.")


_FEATURE_KINDS: dict[str, type[Spec]] = {
    "count": CountSpec,
    "sum": SumSpec,
    "avg": AverageSpec,
    "min": MinimumSpec,
    "max": MaximumSpec,
    "distinct": DistinctSpec,
    "mode_count": ModeCountSpec,
    "sequence": SequenceSpec,
    "gap": GapSpec,
}


def _feature_kind(value: Any) -> str | None:
    # Tags are not keys of the document, so an error's loc path skips them.
    if isinstance(value, Spec):
        return next(
            f"{kind} feature" for kind, spec in _FEATURE_KINDS.items() if spec is type(value)
        )
    if not isinstance(value, dict):
        return None
    kinds = [kind for kind in _FEATURE_KINDS if kind in value]
    return f"{kinds[0]} feature" if len(kinds) == 1 else None


FeatureSpec = Annotated[
    Annotated[CountSpec, Tag("count feature")]
    | Annotated[SumSpec, Tag("sum feature")]
    | Annotated[AverageSpec, Tag("avg feature")]
    | Annotated[MinimumSpec, Tag("min feature")]
    | Annotated[MaximumSpec, Tag("max feature")]
    | Annotated[DistinctSpec, Tag("distinct feature")]
    | Annotated[ModeCountSpec, Tag("mode_count feature")]
    | Annotated[SequenceSpec, Tag("sequence feature")]
    | Annotated[GapSpec, Tag("gap feature")],
    Discriminator(
        _feature_kind,
        custom_error_type=PROBLEM,
        custom_error_message="needs exactly one of: " + ", ".join(_FEATURE_KINDS),
    ),
]
"""One feature: a mapping with exactly one kind key (count, sum, ..., gap)."""


class AnyOf(Spec):
    """`any: [...]`: true when one of the conditions is."""

    any: list[Condition] = Field(min_length=1)


class AllOf(Spec):
    """`all: [...]`: true when every condition is."""

    all: list[Condition] = Field(min_length=1)


class NotOf(Spec):
    """`not: ...`: true when the condition is not."""

    not_: Condition = Field(alias="not")


_FORMS: dict[str, type[Spec]] = {"any": AnyOf, "all": AllOf, "not": NotOf}


def _condition_form(value: Any) -> str | None:
    if isinstance(value, str | int | float | bool):
        return "expression"
    if isinstance(value, Spec):
        return next(f"{word} of" for word, form in _FORMS.items() if form is type(value))
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in _FORMS:
        return f"{next(iter(value))} of"
    return None


Condition = Annotated[
    Annotated[Scalar, Tag("expression")]
    | Annotated[AnyOf, Tag("any of")]
    | Annotated[AllOf, Tag("all of")]
    | Annotated[NotOf, Tag("not of")],
    Discriminator(
        _condition_form,
        custom_error_type=PROBLEM,
        custom_error_message="must be an expression or a mapping with exactly one of any, all, not",
    ),
    Field(description="An expression over feature and parameter names, or any/all/not of them."),
]
"""A condition: an expression, or ``any``/``all``/``not`` of conditions."""

for _form in _FORMS.values():
    _form.model_rebuild()


class AbsenceSpec(Spec):
    """`absence:`: a `start` event not followed by a `stop` event within `within`."""

    start: StepSpec = Field(description="The event that arms the deadline.")
    stop: StepSpec = Field(description="The event that cancels it.")
    match: str | None = Field(
        default=None, description="A field `stop` must share with `start` (e.g. cart_id)."
    )
    within: str | int | float = Field(
        description="A duration, or an expression that is one (e.g. 2 * usual_gap)."
    )
    if_: Condition | None = Field(
        default=None, alias="if", description="Arm the deadline only when this holds at start."
    )
    clear_on_stop: bool = Field(default=False, description="A later `stop` clears the tag.")
    cart: bool = Field(
        default=False, description="Collect sku and price of start events for the coupon."
    )
    remove: StepSpec | None = Field(
        default=None, description="Events that take a product out of the cart."
    )


class CouponSpec(Spec):
    """`coupon:`: the coupon trigger an `absence` rule emits when it fires."""

    discount_pct: float = Field(default=10, gt=0, le=100, description="Percent off the cart.")
    valid_for: Duration = Field(default="1h", description="How long the coupon is valid.")


_NAMES_ONLY: JsonDict = {"additionalProperties": False}  # editors flag a name that is not one


class RuleSpec(Spec):
    """One rule (a YAML document in `rules/*.yaml`); see `rules/README.md`."""

    model_config = ConfigDict(title="streamtags rule")

    rule: Name = Field(description="Unique rule name (lower_snake_case).")
    version: int = Field(default=1, ge=1, description="Bump on every change.")
    tag: Name | None = Field(default=None, description="Tag to apply (default: the rule name).")
    category: Category = Field(description="risk, marketing, service or value.")
    severity: Severity = Field(default="medium", description="info, low, medium or high.")
    ttl: Duration = Field(description="How long the tag lives unless renewed.")
    cooldown: Duration | None = Field(default=None, description="No re-applying within this.")
    renew_throttle: Duration | None = Field(
        default=None,
        description="A still-true tag is renewed (a 'renewed' change on the topics) only when "
        "its expiry moves by at least this much; default 1 % of the ttl, so a tag lives "
        "within 1 % of 'ttl after the last qualifying signal'.",
    )
    clear: Literal["on_expiry", "when_false"] = Field(
        default="on_expiry",
        description="on_expiry, or when_false: clear as soon as the condition fails.",
    )
    description: str = Field(default="", description="Shown as the evidence's reason.")
    why: str = Field(default="", description="The analyst's reasoning, for the next analyst.")
    params: Annotated[dict[Name, _Param], Field(json_schema_extra=_NAMES_ONLY)] | None = Field(
        default=None, description="Named numbers or durations the condition may use."
    )
    features: Annotated[dict[Name, FeatureSpec], Field(json_schema_extra=_NAMES_ONLY)] | None = (
        Field(default=None, description="What to keep per user.")
    )
    when: Condition | None = None
    absence: AbsenceSpec | None = Field(
        default=None, description="A deadline pattern (instead of `when`)."
    )
    coupon: CouponSpec | None = Field(
        default=None, description="Emit a coupon trigger when the absence fires."
    )
