"""Every command answers --help with what it does, and every error family it can meet
ends the command with one line and the exit code of its family."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamtags.cli.main import failure, main
from streamtags.errors import (
    EngineError,
    ExpressionError,
    InvalidEvent,
    RecordingError,
    RuleError,
    ScenarioError,
    SettingsError,
    StateFormatError,
    StreamtagsError,
    TopicMismatch,
)

COMMANDS = [
    [],
    ["worker"],
    ["produce"],
    ["schemas", "export"],
    ["stack"],
    ["rules", "check"],
    ["rules", "test"],
    ["rules", "scenarios"],
    ["score"],
    ["tags"],
    ["watch"],
    ["simulate"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "streamtags")
def test_help_describes_the_command(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: streamtags")
    assert len(out.splitlines()) > 3


def test_a_bad_setting_is_one_clear_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMTAGS_PARTITIONS", "many")
    assert main(["rules", "check"]) == 2
    assert capsys.readouterr().err.strip() == (
        "streamtags: STREAMTAGS_PARTITIONS='many' is not a valid int"
    )


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (SettingsError("STREAMTAGS_X is bad"), 2),
        (RuleError("r.yaml", 3, "r", "unknown key 'x'"), 2),
        (ExpressionError("unknown name 'x'"), 2),
        (ScenarioError("s.yaml:4: unknown key 'untill'"), 2),
        (RecordingError("f.jsonl:2: no stream"), 2),
        (TopicMismatch("orders has 4 partitions, not 8"), 2),
        (FileNotFoundError(2, "No such file or directory", "x.jsonl"), 2),
        (InvalidEvent("ts is missing", "invalid"), 1),
        (StateFormatError("not a state"), 1),
        (EngineError("rule whale failed"), 1),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_each_error_family_maps_to_its_exit_code_and_one_line(
    error: StreamtagsError | OSError, code: int
) -> None:
    assert failure("streamtags rules test", error) == (code, f"streamtags rules test: {error}")


def test_a_recording_that_cannot_be_read_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.jsonl"
    assert main(["produce", str(missing)]) == 2
    assert capsys.readouterr().err == (
        f"streamtags produce: [Errno 2] No such file or directory: '{missing}'\n"
    )


def test_a_recording_with_a_bad_line_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recording = tmp_path / "events.jsonl"
    recording.write_text('{"stream": "nowhere", "user_id": "u1"}\n')
    assert main(["produce", str(recording)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"streamtags produce: {recording}:1: ")
    assert err.count("\n") == 1


def test_rules_check_answers_a_broken_rule_with_exit_1_and_file_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "typo.yaml").write_text(
        "rule: typo\ncategory: risk\nttl: 1h\n"
        "features:\n  n: {count: events, on: orders, window: 1h, cap: lots}\nwhen: n > 1\n"
    )
    assert main(["rules", "check", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        f"streamtags rules check: {tmp_path}/typo.yaml:5: rule 'typo': "
        "'features.n.cap' must be a valid integer, got 'lots'\n"
    )
