"""`streamtags rules test` on a recorded file meets what the scenarios expect, and
`streamtags rules check|scenarios` report broken files in one line with file:line."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from streamtags.cli.main import main
from streamtags.contracts.records import CouponTrigger, TagChange
from streamtags.offline.scenarios import Scenario, load_scenarios, record_failures, run_scenario
from streamtags.rulebook.loader import load_rules

ROOT = Path(__file__).resolve().parents[2]
RULES = load_rules(ROOT / "rules")
SCENARIOS = load_scenarios(ROOT / "rules" / "scenarios", tags=RULES.by_tag())


def record(scenario: Scenario, path: Path) -> None:
    """Write a scenario's events as a recording, the way a producer would see them."""
    with path.open("wb") as handle:
        for decoded in scenario.events:
            body = decoded.event.model_dump(mode="json")
            handle.write(orjson.dumps({"stream": decoded.source, **body}) + b"\n")


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_rules_test_on_a_recording_meets_the_scenario_s_expectations(
    scenario: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recording = tmp_path / "events.jsonl"
    record(scenario, recording)
    args = [
        "rules",
        "test",
        "--events",
        str(recording),
        "--json",
        "--lateness-ms",
        "10000",
        "--rules",
        str(ROOT / "rules"),
    ]
    if scenario.until_ms is not None:
        args += ["--until", str(scenario.until_ms)]
    assert main(args) == 0
    printed = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    # What the scenario expects of the emitted records holds for the command's output
    # (live-tag expectations need the engine's state: test_rule_scenarios checks those).
    assert record_failures(scenario.expect, printed) == []
    expected = run_scenario(scenario, RULES, lateness_ms=10_000).records
    assert printed == [orjson.loads(orjson.dumps(r)) for r in expected]
    for line in printed:  # exactly the fields of the output topics
        (TagChange if "change_id" in line else CouponTrigger).model_validate(line)


def test_the_same_recording_gives_the_same_output_every_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recording = tmp_path / "events.jsonl"
    cart = next(s for s in SCENARIOS if s.name.startswith("a cart left for 15 minutes"))
    record(cart, recording)
    outputs = []
    for _ in range(2):
        assert (
            main(
                [
                    "rules",
                    "test",
                    "--events",
                    str(recording),
                    "--until",
                    "2026-11-22T12:00:00Z",
                    "--rules",
                    str(ROOT / "rules"),
                ]
            )
            == 0
        )
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    assert "cart_abandoned" in outputs[0] and "COUPON" in outputs[0]


def test_rules_check_reports_a_broken_rule_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.yaml").write_text(
        "rule: bad\ncategory: risk\nttl: 1h\nfeatures:\n"
        "  x: {count: events, on: logins, window: 1h}\n"
        "when: y > 1\n"
    )
    assert main(["rules", "check", str(tmp_path)]) == 1
    assert f"{tmp_path}/bad.yaml:1: rule 'bad': unknown name 'y'" in capsys.readouterr().err


def test_a_worker_with_a_broken_rule_stops_before_touching_kafka(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bad.yaml").write_text("rule: bad\ncategory: risk\nttl: forever\n")
    monkeypatch.setenv("STREAMTAGS_RULES_DIR", str(tmp_path))
    monkeypatch.setenv("STREAMTAGS_KAFKA_BOOTSTRAP", "127.0.0.1:1")  # never reached
    assert main(["worker"]) == 2
    assert "bad.yaml:1: rule 'bad': bad duration for 'ttl'" in capsys.readouterr().err


def test_rules_test_with_a_broken_rule_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.yaml").write_text("rule: bad\ncategory: risk\nttl: 1h\nwhen: x > 1\n")
    recording = tmp_path / "events.jsonl"
    recording.write_text("")
    code = main(["rules", "test", "--events", str(recording), "--rules", str(tmp_path)])
    assert code == 2
    assert capsys.readouterr().err == (
        f"streamtags rules test: {tmp_path}/bad.yaml:1: rule 'bad': unknown name 'x' in 'x > 1'"
        " (known: none)\n"
    )


def test_rules_scenarios_runs_every_scenario_and_passes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        [
            "rules",
            "scenarios",
            "--dir",
            str(ROOT / "rules" / "scenarios"),
            "--rules",
            str(ROOT / "rules"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.splitlines()[-1] == f"{len(SCENARIOS)} passed, 0 failed"


def test_rules_scenarios_exits_1_and_says_which_expectation_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "whale.yaml").write_text(
        "scenario: a small order makes a whale\n"
        "events: [{at: 0m, stream: orders, status: paid, amount: 5}]\n"
        "expect: {has: [whale]}\n"
    )
    code = main(["rules", "scenarios", "--dir", str(tmp_path), "--rules", str(ROOT / "rules")])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL  a small order makes a whale" in out
    assert "expected live tag 'whale'; live tags are []" in out
    assert out.splitlines()[-1] == "0 passed, 1 failed"


def test_rules_scenarios_with_a_typo_in_a_scenario_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "whale.yaml"
    path.write_text(
        "scenario: a big order makes a whale\n"
        "events: [{at: 0m, stream: orders, status: paid, amount: 5000}]\n"
        "expect: {hass: [whale]}\n"
    )
    code = main(["rules", "scenarios", "--dir", str(tmp_path), "--rules", str(ROOT / "rules")])
    assert code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"streamtags rules scenarios: {path}:3: unknown key 'hass' "
        "(known: changes, has, lacks, never, tags, triggers, user) in 'expect'\n"
    )
