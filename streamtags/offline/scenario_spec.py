"""The shape of a scenario file, as typed pydantic models (one document = one scenario).

An unknown key anywhere (``untill:``, ``hass:``, an event field the stream
does not have, a tag-change field that does not exist) is an error at load,
so a typo cannot make a scenario pass by checking nothing. The event steps
are derived from the input contracts (:data:`~streamtags.contracts.events.STREAMS`)
and the ``changes``/``triggers`` matchers from the output records, so they
follow the contracts as they change. The same models give
``schemas/scenario.schema.json`` for editors.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    WithJsonSchema,
    create_model,
)
from pydantic.config import JsonDict

from streamtags.contracts.events import STREAMS, parse_event_time
from streamtags.contracts.records import CouponTrigger, TagChange
from streamtags.rulebook.documents import PROBLEM, problem
from streamtags.rulebook.spec import Name, Spec, check_duration

__all__ = [
    "DEFAULT_START",
    "ChangeMatch",
    "EventStep",
    "ExpectSpec",
    "Offset",
    "ScenarioSpec",
    "Start",
    "TriggerMatch",
    "is_zero_offset",
]

DEFAULT_START = "2026-11-22T10:00:00Z"
"""Where a scenario's clock starts unless it says ``start:``."""


def is_zero_offset(value: Any) -> bool:
    """True for ``0``, ``"0"``, ``0s``, ``0m``, ... (zero needs no unit, and is no duration)."""
    return value in (0, "0") or (
        isinstance(value, str) and value.strip("0") in ("s", "m", "h", "d", "ms", "w")
    )


def _check_offset(value: Any) -> Any:
    return value if is_zero_offset(value) else check_duration(value)


Offset = Annotated[
    str | int | float,
    PlainValidator(_check_offset),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^(?:0|(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+)$"},
                {"type": "number", "minimum": 0},
            ],
            "description": "Time after the scenario's start: 0, 905s, 15m, 2d, 1h30m.",
        }
    ),
]
"""An offset from the scenario's start, as written; parsed (and scaled) when the scenario is."""


def _start_ms(value: Any) -> int:
    if isinstance(value, datetime):  # YAML reads unquoted timestamps as datetimes
        value = int(value.replace(tzinfo=value.tzinfo or UTC).timestamp() * 1000)
    try:
        return parse_event_time(value)
    except ValueError as exc:
        raise problem(f"is not a start time: {exc}") from None


Start = Annotated[
    int,
    PlainValidator(_start_ms),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "format": "date-time"}, {"type": "integer"}],
            "description": "When offset 0 is: RFC 3339 with an offset, or epoch milliseconds.",
        }
    ),
]
"""The scenario's start, epoch milliseconds UTC once validated."""


def _no_default(schema: JsonDict) -> None:
    schema.pop("default", None)  # the field is optional; null is not a value to suggest


def _loose(model: type[BaseModel]) -> dict[str, Any]:
    """Every field of ``model`` as optional and unvalidated, keeping its JSON Schema for editors.

    The values are checked later, by the real decoder or against real records;
    here only the names matter. A field whose schema refers to another model
    keeps only its description (the reference would dangle in our schema).
    """
    properties = model.model_json_schema()["properties"]
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        schema = properties.get(name, {})
        if "$ref" in orjson.dumps(schema).decode():
            schema = {"description": info.description or ""}
        fields[name] = (
            Annotated[Any, WithJsonSchema(schema)],
            Field(None, json_schema_extra=_no_default),
        )
    return fields


def _event_step(stream: str, event: type[BaseModel]) -> Any:
    """The step model for one stream: ``at``, ``stream`` and any of the event's fields."""
    fields: dict[str, Any] = {
        "stream": (Literal[stream], Field(description="The input stream.")),
        "at": (Offset, Field(default=0, description="Event time, as an offset from `start`.")),
    }
    fields.update(_loose(event))
    step = create_model(
        f"{event.__name__}Step",
        __base__=Spec,
        __doc__=f"An event on the {stream} stream; unset fields get scenario defaults.",
        **fields,
    )
    return Annotated[step, Tag(f"{stream} event")]


def _step_kind(value: Any) -> str | None:
    stream = value.get("stream") if isinstance(value, dict) else getattr(value, "stream", None)
    return f"{stream} event" if isinstance(stream, str) and stream in STREAMS else None


def _record_matcher(record: type[BaseModel], what: str) -> Any:
    """A mapping of some of ``record``'s fields to the values they must have."""
    return create_model(f"{record.__name__}Match", __base__=Spec, __doc__=what, **_loose(record))


if TYPE_CHECKING:  # what the code reading these relies on; the real models are built below

    class EventStep(Spec):
        stream: str
        at: str | int | float

    class ChangeMatch(Spec):
        tag: str | None
        action: str | None

    TriggerMatch = Spec
else:
    # Built from the contracts, so a field added to an event or a record is
    # usable in scenarios at once, and a field that does not exist is a typo.
    EventStep = Annotated[
        Union[tuple(_event_step(stream, event) for stream, event in STREAMS.items())],  # noqa: UP007
        Discriminator(
            _step_kind,
            custom_error_type=PROBLEM,
            custom_error_message="needs 'stream': one of " + ", ".join(STREAMS),
        ),
    ]
    ChangeMatch = _record_matcher(TagChange, "Fields a tag change must have (tag, action, ts...).")
    TriggerMatch = _record_matcher(CouponTrigger, "Fields a coupon trigger must have (cart_id...).")


def _count_or_list(value: Any) -> str:
    return "list" if isinstance(value, list) else "count"


_Triggers = Annotated[
    Annotated[int, Tag("count"), Field(ge=0)] | Annotated[list[TriggerMatch], Tag("list")],
    Discriminator(_count_or_list),
]


class ExpectSpec(Spec):
    """What must hold at the end of the scenario; every key is optional."""

    user: str | None = Field(
        default=None, description="Whose live tags to check (default: the scenario's user)."
    )
    tags: list[Name] | None = Field(default=None, description="Exactly these live tags.")
    has: list[Name] = Field(default_factory=list, description="At least these live tags.")
    lacks: list[Name] = Field(default_factory=list, description="None of these live tags.")
    never: list[Name] = Field(default_factory=list, description="Never applied at any point.")
    changes: list[ChangeMatch] = Field(
        default_factory=list,
        description="These tag changes, in this order (others may interleave).",
    )
    triggers: _Triggers | None = Field(
        default=None, description="How many coupon triggers, or a list they must match in order."
    )


class ScenarioSpec(Spec):
    """One scenario (a YAML document in `rules/scenarios/*.yaml`)."""

    model_config = ConfigDict(title="streamtags scenario")

    scenario: str = Field(description="What the scenario shows, in one sentence.")
    start: Start = Field(default=parse_event_time(DEFAULT_START), description="When offset 0 is.")
    user: str = Field(default="u1", description="The user of events that name none.")
    events: list[EventStep] = Field(min_length=1, description="The events, in reading order.")
    until: Offset | None = Field(
        default=None, description="Advance the clock to this offset after the last event."
    )
    expect: ExpectSpec = Field(default_factory=ExpectSpec, description="What must hold.")
