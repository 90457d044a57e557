"""JSON Schemas of every contract, generated from the pydantic models.

``streamtags schemas export`` writes them to ``schemas/``; a unit test fails
when the checked-in files differ from what the models generate. Never edit
the files by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from streamtags.contracts.events import Account, Browse, Login, Order
from streamtags.contracts.records import CouponTrigger, DeadLetter, TagChange

__all__ = ["CONTRACTS", "export", "render"]

#: File stem -> (model, JSON Schema mode). Input events are validated on the way
#: in, output records are serialised on the way out.
CONTRACTS: dict[str, tuple[type[BaseModel], str]] = {
    "orders": (Order, "validation"),
    "browse": (Browse, "validation"),
    "logins": (Login, "validation"),
    "accounts": (Account, "validation"),
    "tag-change": (TagChange, "serialization"),
    "coupon-trigger": (CouponTrigger, "serialization"),
    "dead-letter": (DeadLetter, "serialization"),
}


def render(name: str) -> bytes:
    """The JSON Schema document of contract ``name``, as stable, indented bytes."""
    model, mode = CONTRACTS[name]
    schema: dict[str, Any] = model.model_json_schema(mode=mode)  # type: ignore[arg-type]
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def export(directory: Path) -> list[Path]:
    """Write every schema to ``directory``; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in CONTRACTS:
        path = directory / f"{name}.schema.json"
        path.write_bytes(render(name))
        written.append(path)
    return written
