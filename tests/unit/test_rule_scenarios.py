"""Every analyst scenario beside the rules passes, and every catalogue tag has both kinds."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamtags.offline.scenarios import Scenario, load_scenarios, run_scenario
from streamtags.rulebook.loader import load_rules

ROOT = Path(__file__).resolve().parents[2]
RULES = load_rules(ROOT / "rules")
SCENARIOS = load_scenarios(ROOT / "rules" / "scenarios")


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(scenario: Scenario) -> None:
    result = run_scenario(scenario, RULES, lateness_ms=10_000)
    assert result.passed, "\n".join(result.failures)


def _fires(scenario: Scenario) -> set[str]:
    expect = scenario.expect
    tags = set(expect.get("has", [])) | set(expect.get("tags", []))
    tags |= {c["tag"] for c in expect.get("changes", []) if c.get("action") == "applied"}
    return tags


def _holds_off(scenario: Scenario) -> set[str]:
    return set(scenario.expect.get("never", [])) | set(scenario.expect.get("lacks", []))


@pytest.mark.parametrize("tag", sorted(RULES.by_tag()))
def test_every_catalogue_tag_has_a_firing_and_a_non_firing_scenario(tag: str) -> None:
    assert any(tag in _fires(s) for s in SCENARIOS), f"no scenario shows {tag} firing"
    assert any(tag in _holds_off(s) for s in SCENARIOS), f"no scenario shows {tag} not firing"
