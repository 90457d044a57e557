"""The checked-in JSON Schemas match what the models generate, and the rule and scenario
schemas editors use agree with the loaders on every file in ``rules/``."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from streamtags.cli.main import main
from streamtags.cli.schemas import SCHEMAS
from streamtags.contracts.schemas import CONTRACTS, render_model
from streamtags.errors import ExpressionError, LoadError
from streamtags.rulebook.documents import read_documents
from streamtags.rulebook.expressions import parse_duration_ms

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "schemas"


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_checked_in_schema_matches_the_model(name: str) -> None:
    path = SCHEMA_DIR / f"{name}.schema.json"
    assert path.exists(), f"{path} missing: run `streamtags schemas export`"
    assert path.read_bytes() == render_model(*SCHEMAS[name]), (
        f"{path} drifted from the model: run `streamtags schemas export` and commit"
    )


def test_no_stale_schema_files() -> None:
    names = {p.name.removesuffix(".schema.json") for p in SCHEMA_DIR.glob("*.schema.json")}
    assert names == set(SCHEMAS)


def test_every_contract_and_the_rule_and_scenario_files_have_a_schema() -> None:
    assert set(SCHEMAS) == set(CONTRACTS) | {"rule", "scenario"}


def test_schemas_export_writes_every_schema_as_checked_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schemas", "export", "--dir", str(tmp_path)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(SCHEMAS)
    written = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert written == {p.name: p.read_bytes() for p in SCHEMA_DIR.glob("*.schema.json")}


def _documents(pattern: str) -> list[tuple[str, Any]]:
    def fail(line: int, reason: str) -> LoadError:
        return LoadError(reason)

    return [
        (f"{path.name} #{number}", _as_json(document))
        for path in sorted(ROOT.glob(pattern))
        for number, document in read_documents(path, fail)
    ]


def _as_json(value: Any) -> Any:
    """What an editor sees: YAML's unquoted timestamps are RFC 3339 strings to it."""
    return orjson.loads(orjson.dumps(value))


@functools.cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = orjson.loads((SCHEMA_DIR / f"{name}.schema.json").read_bytes())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


RULE_FILES = _documents("rules/*.yaml")
SCENARIO_FILES = _documents("rules/scenarios/*.yaml")


@pytest.mark.parametrize(("name", "document"), RULE_FILES, ids=[n for n, _ in RULE_FILES])
def test_the_rule_schema_accepts_every_rule(name: str, document: Any) -> None:
    errors = [error.message for error in _validator("rule").iter_errors(document)]
    assert errors == []


@pytest.mark.parametrize(("name", "document"), SCENARIO_FILES, ids=[n for n, _ in SCENARIO_FILES])
def test_the_scenario_schema_accepts_every_scenario(name: str, document: Any) -> None:
    errors = [error.message for error in _validator("scenario").iter_errors(document)]
    assert errors == []


@pytest.mark.parametrize(
    ("path", "typo"),
    [
        (("ttl",), "1 hour"),
        (("features", "ips", "cap"), "lots"),
        (("features", "ips", "on"), 5),
        (("features", "ips", "windw"), "1h"),
        (("features", "IPs"), {"distinct": "ip", "on": "logins", "window": "1h"}),
        (("severity",), "urgent"),
        (("untill",), "1h"),
        (("when",), {"anyy": ["ips >= 3"]}),
    ],
)
def test_the_rule_schema_flags_the_typos_the_loader_rejects(
    path: tuple[str, ...], typo: Any
) -> None:
    rule: dict[str, Any] = {
        "rule": "sample",
        "category": "risk",
        "ttl": "1h",
        "features": {"ips": {"distinct": "ip", "on": "logins", "window": "1h"}},
        "when": "ips >= 3",
    }
    assert list(_validator("rule").iter_errors(rule)) == []
    target = rule
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = typo
    assert list(_validator("rule").iter_errors(rule)) != []


@pytest.mark.parametrize(
    ("key", "typo"),
    [
        ("untill", "40m"),
        ("expect", {"hass": ["whale"]}),
        ("events", [{"stream": "orders", "statuz": "paid"}]),
    ],
)
def test_the_scenario_schema_flags_the_typos_the_loader_rejects(key: str, typo: Any) -> None:
    scenario: dict[str, Any] = {
        "scenario": "a big order makes a whale",
        "events": [{"at": "0m", "stream": "orders", "status": "paid", "amount": 5000}],
        "expect": {"has": ["whale"]},
    }
    assert list(_validator("scenario").iter_errors(scenario)) == []
    scenario[key] = typo
    assert list(_validator("scenario").iter_errors(scenario)) != []


@pytest.mark.parametrize(
    "text",
    ["15m", "1h30m", "1.5h", "500ms", "2w", "7d", "15 m", "1 hour", "soon", "15", "m", "1h 30m"],
)
def test_the_rule_schema_and_the_loader_agree_on_what_a_duration_is(text: str) -> None:
    rule = {"rule": "sample", "category": "risk", "ttl": text, "absence": {}}
    schema_accepts = not any(
        list(error.path) == ["ttl"] for error in _validator("rule").iter_errors(rule)
    )
    try:
        parse_duration_ms(text)
        loader_accepts = True
    except ExpressionError:
        loader_accepts = False
    assert schema_accepts == loader_accepts
