"""Every analyst scenario's expectations hold, every catalogue tag has both kinds, and a
scenario file with a typo fails to load with its file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamtags.errors import ScenarioError
from streamtags.offline.scenarios import Scenario, load_scenarios, run_scenario
from streamtags.rulebook.loader import load_rules

ROOT = Path(__file__).resolve().parents[2]
RULES = load_rules(ROOT / "rules")
SCENARIOS = load_scenarios(ROOT / "rules" / "scenarios", tags=RULES.by_tag())


def test_every_scenario_file_holds_scenarios() -> None:
    files = {Path(s.path).name for s in SCENARIOS}
    assert files == {p.name for p in (ROOT / "rules" / "scenarios").glob("*.yaml")}
    assert len({s.name for s in SCENARIOS}) == len(SCENARIOS), "scenario names must be unique"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(scenario: Scenario) -> None:
    result = run_scenario(scenario, RULES, lateness_ms=10_000)
    assert result.passed, f"{scenario.path}:{scenario.line}\n" + "\n".join(result.failures)


def _fires(scenario: Scenario) -> set[str]:
    expect = scenario.expect
    tags = set(expect.has) | set(expect.tags or ())
    tags |= {c.tag for c in expect.changes if c.tag and c.action == "applied"}
    return tags


def _holds_off(scenario: Scenario) -> set[str]:
    return set(scenario.expect.never) | set(scenario.expect.lacks)


@pytest.mark.parametrize("tag", sorted(RULES.by_tag()))
def test_every_catalogue_tag_has_a_firing_and_a_non_firing_scenario(tag: str) -> None:
    assert any(tag in _fires(s) for s in SCENARIOS), f"no scenario shows {tag} firing"
    assert any(tag in _holds_off(s) for s in SCENARIOS), f"no scenario shows {tag} not firing"


CART = """\
scenario: an order at minute 14 cancels the coupon
events:
  - {at: 0m, stream: browse, action: add_to_cart, cart_id: c1, sku: gc-50, price: 50}
  - {at: 14m, stream: orders, status: created, cart_id: c1, amount: 50}
until: 40m
expect:
  lacks: [cart_abandoned]
  changes: []
  triggers: 0
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cart.yaml"
    path.write_text(text)
    return path


def test_the_sample_scenario_loads_and_passes(tmp_path: Path) -> None:
    (scenario,) = load_scenarios(write(tmp_path, CART), tags=RULES.by_tag())
    assert run_scenario(scenario, RULES, lateness_ms=10_000).passed


def test_a_scenario_whose_expectation_does_not_hold_fails_and_says_why(tmp_path: Path) -> None:
    text = CART.replace("lacks: [cart_abandoned]", "has: [cart_abandoned]")
    (scenario,) = load_scenarios(write(tmp_path, text))
    result = run_scenario(scenario, RULES, lateness_ms=10_000)
    assert result.failures == ["expected live tag 'cart_abandoned'; live tags are []"]


@pytest.mark.parametrize(
    ("old", "new", "line", "fragment"),
    [
        ("until: 40m", "untill: 40m", 1, "unknown key 'untill' (known: events, expect,"),
        (
            "  lacks:",
            "  hass: [cart_abandoned]\n  lacks:",
            7,
            "unknown key 'hass' (known: changes,",
        ),
        ("status: created", "statuz: created", 4, "unknown key 'statuz' (known: amount,"),
        ("stream: orders", "stream: order", 4, "'events.1' needs 'stream': one of orders,"),
        ("stream: orders", "stream: [orders]", 4, "'events.1' needs 'stream': one of orders,"),
        ("at: 14m", "at: 14 min", 4, "bad duration for 'events.1.at'"),
        ("changes: []", "changes: [{tag: cart_abandoned, actoin: applied}]", 8, "'actoin'"),
        ("triggers: 0", "triggers: [{cart: c1}]", 9, "unknown key 'cart' (known: abandoned_at,"),
        ("triggers: 0", "triggers: lots", 7, "'expect.triggers' must be a valid integer"),
        ("lacks: [cart_abandoned]", "lacks: [cart_abandonned]", 7, "names 'cart_abandonned',"),
        ("changes: []", "changes: [{tag: cart_abandonned}]", 8, "names 'cart_abandonned',"),
        ("status: created", "status: creatd", 4, "'events.1': invalid orders event: status"),
        ("scenario: an order at minute 14 cancels the coupon\n", "", 1, "'scenario' is required"),
        ("until: 40m", "until: 40m\nstart: yesterday", 1, "'start' is not a start time"),
    ],
)
def test_a_typo_anywhere_in_a_scenario_fails_to_load_with_file_and_line(
    tmp_path: Path, old: str, new: str, line: int, fragment: str
) -> None:
    assert old in CART
    path = write(tmp_path, CART.replace(old, new))
    with pytest.raises(ScenarioError) as caught:
        load_scenarios(path, tags=RULES.by_tag())
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert fragment in message, message


def test_an_error_in_a_later_scenario_of_a_file_gives_its_own_line(tmp_path: Path) -> None:
    path = write(tmp_path, CART + "---\n" + CART.replace("until:", "untill:"))
    with pytest.raises(ScenarioError, match=r"cart\.yaml:11: unknown key 'untill'"):
        load_scenarios(path)
