"""JSON Schemas of every contract, generated from the pydantic models.

``streamtags schemas export`` writes them to ``schemas/``, together with the
schemas of rule and scenario files (those models live in higher layers, so
the command line passes them in: :func:`export` takes any named models). A
unit test fails when the checked-in files differ from what the models
generate. Never edit the files by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel

from streamtags.contracts.events import Account, Browse, Login, Order
from streamtags.contracts.records import CouponTrigger, DeadLetter, TagChange

__all__ = ["CONTRACTS", "SchemaSource", "export", "render", "render_model"]

SchemaSource = tuple[type[BaseModel], Literal["validation", "serialization"]]
"""A model and the JSON Schema mode to generate it in."""

#: File stem -> (model, JSON Schema mode). Input events are validated on the way
#: in, output records are serialised on the way out.
CONTRACTS: dict[str, SchemaSource] = {
    "orders": (Order, "validation"),
    "browse": (Browse, "validation"),
    "logins": (Login, "validation"),
    "accounts": (Account, "validation"),
    "tag-change": (TagChange, "serialization"),
    "coupon-trigger": (CouponTrigger, "serialization"),
    "dead-letter": (DeadLetter, "serialization"),
}


def render_model(model: type[BaseModel], mode: Literal["validation", "serialization"]) -> bytes:
    """The JSON Schema document of ``model``, as stable, indented bytes."""
    schema: dict[str, Any] = model.model_json_schema(mode=mode)
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def render(name: str) -> bytes:
    """The JSON Schema document of contract ``name``, as stable, indented bytes."""
    return render_model(*CONTRACTS[name])


def export(directory: Path, schemas: Mapping[str, SchemaSource] = CONTRACTS) -> list[Path]:
    """Write ``<name>.schema.json`` for each of ``schemas`` to ``directory``; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (model, mode) in schemas.items():
        path = directory / f"{name}.schema.json"
        path.write_bytes(render_model(model, mode))
        written.append(path)
    return written
