"""The decoder's fast path: each model validated first with its value types' stand-ins.

Pydantic-core runs the models' checks natively but for the ones written in
Python: the id patterns, the event time, JSON integers and IP addresses, each
a call back into the interpreter. Those value types name a *stand-in* (see
:data:`~streamtags.contracts.values.STAND_IN`): a native check that accepts
only what the full check accepts, with the same result (an id that passes
the cheap shortcut, an integer that is an int, an IPv4 address already
canonical, an event time that is integer epoch ms). :func:`prevalidated`
validates the model's fields with a copy of their schema in which every check
that has a stand-in is replaced by it, so the values, defaults and the set of
fields given are what full validation gives, and builds the event from them
as validation does.

It never rejects anything: when a stand-in declines (an id with non-ASCII
characters, a whole float for an integer, an IPv6 address) or the message is
invalid, it returns ``None`` and the caller validates with the model, which
accepts the event or says why not exactly as before. The stand-ins change
speed, never verdicts; ``tests/unit/test_contract_fast_path.py`` holds the
fast path to that over generated messages of every stream, valid and spoiled.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic_core import SchemaValidator

from streamtags.contracts.events import STREAMS, Event
from streamtags.contracts.values import STAND_IN

__all__ = ["prevalidated"]


def _with_stand_ins(schema: Any) -> Any:
    """A copy of core ``schema`` with every node that names a stand-in replaced by it."""
    if isinstance(schema, list):
        return [_with_stand_ins(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    stand_in = schema.get("metadata", {}).get(STAND_IN)
    if stand_in is not None:
        return stand_in
    return {key: _with_stand_ins(value) for key, value in schema.items()}


def _fields_validator(model: type[Event]) -> SchemaValidator:
    # The fields alone: given a whole model's schema, pydantic-core reuses the validator
    # of the model class itself, stand-ins or not (a nested OrderItem is validated so).
    schema = model.__pydantic_core_schema__
    if schema["type"] != "model":
        raise TypeError(f"the fast path reads a model schema, not {schema['type']!r}")
    return SchemaValidator(_with_stand_ins(schema["schema"]), schema.get("config"))


#: model -> the validator of its fields with the stand-ins
_FAST = {model: _fields_validator(model) for model in STREAMS.values()}

# The slots every pydantic model instance fills (as model_construct does), set directly
# through their descriptors: a third cheaper than object.__setattr__ by name.
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


def prevalidated(model: type[Event], payload: dict[str, Any]) -> Event | None:
    """``payload`` as a ``model`` event if the stand-ins accept it, equal to what
    ``model.model_validate(payload)`` returns; else ``None``."""
    try:
        values, _, fields_set = _FAST[model].validate_python(payload)
    except Exception:  # declined or invalid: the model's own validation judges and explains
        return None
    # What validation does with the fields it validated (and model_construct with
    # given ones): the attributes, the fields given, no extra (ignored) or private state.
    event: Event = object.__new__(model)
    _set_dict(event, values)
    _set_fields_set(event, fields_set)
    _set_extra(event, None)
    _set_private(event, None)
    return event
