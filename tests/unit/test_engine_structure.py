"""The engine's shape: records typed to the published contracts, modules without cycles."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import pytest
from pydantic import BaseModel

from streamtags.contracts.records import (
    CouponOffer,
    CouponTrigger,
    Evidence,
    RuleRef,
    TagChange,
    TriggerItem,
)
from streamtags.engine.output import (
    Change,
    CouponOfferDict,
    EvidenceDict,
    RuleRefDict,
    Trigger,
    TriggerItemDict,
)

ENGINE = Path(__file__).resolve().parents[2] / "streamtags" / "engine"

#: Each TypedDict the engine builds, and the pydantic model it must match.
MODEL_OF: dict[Any, type[BaseModel]] = {
    Change: TagChange,
    Trigger: CouponTrigger,
    RuleRefDict: RuleRef,
    EvidenceDict: Evidence,
    TriggerItemDict: TriggerItem,
    CouponOfferDict: CouponOffer,
}


def _shape(annotation: Any) -> Any:
    """A type with every engine TypedDict replaced by its model, for comparison."""
    if annotation in MODEL_OF:
        return MODEL_OF[annotation]
    origin = get_origin(annotation)
    if origin is None:
        return annotation
    return (origin, tuple(_shape(arg) for arg in get_args(annotation)))


@pytest.mark.parametrize("typed_dict", list(MODEL_OF), ids=lambda t: t.__name__)
def test_every_record_typed_dict_has_exactly_its_models_fields_and_types(typed_dict: Any) -> None:
    model = MODEL_OF[typed_dict]
    hints = get_type_hints(typed_dict)
    assert set(hints) == set(model.model_fields)
    assert typed_dict.__required_keys__ == frozenset(hints)  # the engine writes every key
    for name, field in model.model_fields.items():
        assert _shape(hints[name]) == _shape(field.annotation), name


def test_engine_modules_import_each_other_without_cycles() -> None:
    graph: dict[str, set[str]] = {}
    for path in ENGINE.glob("*.py"):
        if path.stem == "__init__":
            continue
        imported: set[str] = set()
        # ast.walk also sees imports under ``if TYPE_CHECKING``: type-only cycles count.
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
        graph[f"streamtags.engine.{path.stem}"] = {
            name for name in imported if name.startswith("streamtags.engine.")
        }
    assert len(graph) >= 7
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError on a cycle
