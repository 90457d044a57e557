"""The checked-in JSON Schemas match what the models generate."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamtags.contracts.schemas import CONTRACTS, render

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


@pytest.mark.parametrize("name", list(CONTRACTS))
def test_checked_in_schema_matches_the_model(name: str) -> None:
    path = SCHEMAS / f"{name}.schema.json"
    assert path.exists(), f"{path} missing: run `streamtags schemas export`"
    assert path.read_bytes() == render(name), (
        f"{path} drifted from the model: run `streamtags schemas export` and commit"
    )


def test_no_stale_schema_files() -> None:
    names = {p.name.removesuffix(".schema.json") for p in SCHEMAS.glob("*.schema.json")}
    assert names == set(CONTRACTS)
