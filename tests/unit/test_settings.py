"""Settings come from STREAMTAGS_* variables and bad values stop with the variable's name."""

from __future__ import annotations

import pytest

from streamtags.errors import SettingsError
from streamtags.settings import Settings


def test_defaults_without_environment() -> None:
    settings = Settings.from_env({})
    assert settings.inputs.orders == "orders"
    assert settings.outputs.risk_tags == "streamtags.risk-tags"
    assert settings.partitions == 8


def test_environment_overrides_topics_and_numbers() -> None:
    settings = Settings.from_env(
        {
            "STREAMTAGS_PARTITIONS": "4",
            "STREAMTAGS_TOPIC_LOGINS": "auth.logins",
            "STREAMTAGS_TIME_SCALE": "0.01",
        }
    )
    assert settings.partitions == 4
    assert settings.inputs.logins == "auth.logins"
    assert settings.time_scale == 0.01


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"STREAMTAGS_PARTITIONS": "eight"}, "STREAMTAGS_PARTITIONS='eight'"),
        ({"STREAMTAGS_PARTITIONS": "0"}, "at least 1"),
        ({"STREAMTAGS_STORE": "redis://"}, "STREAMTAGS_STORE"),
        ({"STREAMTAGS_TIME_SCALE": "-1"}, "TIME_SCALE"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(SettingsError, match=fragment):
        Settings.from_env(env)
