"""Every command answers --help with what it does."""

from __future__ import annotations

import pytest

from streamtags.cli.main import main

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
