"""Settings come from STREAMTAGS_* variables and bad values stop with the variable's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamtags.errors import SettingsError
from streamtags.settings import KafkaSecurity, Settings, masked_url


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


SCRAM = {
    "STREAMTAGS_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "STREAMTAGS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
    "STREAMTAGS_KAFKA_SASL_USERNAME": "streamtags",
    "STREAMTAGS_KAFKA_SASL_PASSWORD": "kafka-pass-4711",
}


def test_kafka_is_plaintext_without_login_by_default() -> None:
    security = Settings.from_env({}).kafka_security
    assert security == KafkaSecurity()
    assert (security.security_protocol, security.uses_sasl, security.uses_tls) == (
        "PLAINTEXT",
        False,
        False,
    )


def test_sasl_settings_are_read_with_protocol_and_mechanism_in_any_case() -> None:
    security = Settings.from_env(
        {
            **SCRAM,
            "STREAMTAGS_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext",
            "STREAMTAGS_KAFKA_SASL_MECHANISM": "scram-sha-512",
        }
    ).kafka_security
    assert security.security_protocol == "SASL_PLAINTEXT"
    assert security.sasl_mechanism == "SCRAM-SHA-512"
    assert security.sasl_username == "streamtags"
    assert security.sasl_password.reveal() == "kafka-pass-4711"


def test_tls_files_are_read_when_they_exist(tmp_path: Path) -> None:
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("pem")
    security = Settings.from_env(
        {
            "STREAMTAGS_KAFKA_SECURITY_PROTOCOL": "SSL",
            "STREAMTAGS_KAFKA_SSL_CAFILE": str(tmp_path / "ca.pem"),
            "STREAMTAGS_KAFKA_SSL_CERTFILE": str(tmp_path / "client.pem"),
            "STREAMTAGS_KAFKA_SSL_KEYFILE": str(tmp_path / "client.key"),
        }
    ).kafka_security
    assert security.uses_tls
    assert security.ssl_keyfile == tmp_path / "client.key"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"STREAMTAGS_KAFKA_SECURITY_PROTOCOL": "TLS"},
            "STREAMTAGS_KAFKA_SECURITY_PROTOCOL='TLS' must be one of PLAINTEXT, SSL, "
            "SASL_PLAINTEXT, SASL_SSL",
        ),
        (
            {**SCRAM, "STREAMTAGS_KAFKA_SASL_MECHANISM": "GSSAPI"},
            "STREAMTAGS_KAFKA_SASL_MECHANISM='GSSAPI' must be one of PLAIN, SCRAM-SHA-256, "
            "SCRAM-SHA-512",
        ),
        (
            {**SCRAM, "STREAMTAGS_KAFKA_SASL_MECHANISM": ""},
            "STREAMTAGS_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT needs "
            "STREAMTAGS_KAFKA_SASL_MECHANISM as well",
        ),
        (
            {**SCRAM, "STREAMTAGS_KAFKA_SASL_USERNAME": " "},
            "STREAMTAGS_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT needs "
            "STREAMTAGS_KAFKA_SASL_USERNAME as well",
        ),
        (
            {key: value for key, value in SCRAM.items() if "PASSWORD" not in key},
            "STREAMTAGS_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT needs "
            "STREAMTAGS_KAFKA_SASL_PASSWORD as well",
        ),
        (
            {**SCRAM, "STREAMTAGS_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"},
            "STREAMTAGS_KAFKA_SASL_MECHANISM is set but STREAMTAGS_KAFKA_SECURITY_PROTOCOL="
            "PLAINTEXT does not log in; use SASL_PLAINTEXT or SASL_SSL",
        ),
        (
            {"STREAMTAGS_KAFKA_SSL_CAFILE": __file__},
            "STREAMTAGS_KAFKA_SSL_CAFILE is set but STREAMTAGS_KAFKA_SECURITY_PROTOCOL="
            "PLAINTEXT does not use TLS; use SSL or SASL_SSL",
        ),
        (
            {
                "STREAMTAGS_KAFKA_SECURITY_PROTOCOL": "SSL",
                "STREAMTAGS_KAFKA_SSL_CAFILE": "/nowhere/ca.pem",
            },
            "STREAMTAGS_KAFKA_SSL_CAFILE='/nowhere/ca.pem' is not a readable file",
        ),
        (
            {
                "STREAMTAGS_KAFKA_SECURITY_PROTOCOL": "SSL",
                "STREAMTAGS_KAFKA_SSL_KEYFILE": __file__,
            },
            "STREAMTAGS_KAFKA_SSL_KEYFILE needs STREAMTAGS_KAFKA_SSL_CERTFILE",
        ),
        (
            {"STREAMTAGS_REDIS_URL": "http://user:redis-pass-0815@cache:6379/0"},
            "STREAMTAGS_REDIS_URL must start with redis://, rediss:// (TLS) or unix://, got "
            "'http://user:***@cache:6379/0'",
        ),
        (
            {"STREAMTAGS_WEB_TOKEN": "short"},
            "STREAMTAGS_WEB_TOKEN must be at least 16 characters",
        ),
        (
            {"STREAMTAGS_WEB_EVIDENCE": "nope"},
            "STREAMTAGS_WEB_EVIDENCE='nope' is not a valid bool",
        ),
    ],
)
def test_unusable_security_settings_stop_with_the_variable_and_the_fix(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env(env)
    assert str(error.value).startswith(message)


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", True), ("on", True), ("TRUE", True), ("0", False), ("off", False)]
)
def test_the_evidence_switch_reads_the_usual_words(raw: str, expected: bool) -> None:
    assert Settings.from_env({"STREAMTAGS_WEB_EVIDENCE": raw}).web_evidence is expected


def test_evidence_is_shown_and_no_token_is_required_by_default() -> None:
    settings = Settings.from_env({})
    assert settings.web_evidence is True
    assert not settings.web_token


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("rediss://tagger:redis-pass-0815@cache:6380/2", "rediss://tagger:***@cache:6380/2"),
        ("redis://:redis-pass-0815@cache/0", "redis://:***@cache/0"),
        (
            "unix:///run/redis.sock?db=1&password=redis-pass-0815",
            "unix:///run/redis.sock?db=1&password=***",
        ),
    ],
)
def test_a_redis_url_is_shown_with_its_password_masked(url: str, masked: str) -> None:
    assert masked_url(url) == masked


def test_the_settings_repr_shows_no_secret() -> None:
    settings = Settings.from_env(
        {
            **SCRAM,
            "STREAMTAGS_REDIS_URL": "rediss://tagger:redis-pass-0815@cache:6380/0",
            "STREAMTAGS_WEB_TOKEN": "web-token-0123456789",
        }
    )
    for shown in (repr(settings), str(settings), repr(settings.kafka_security)):
        for secret in ("kafka-pass-4711", "redis-pass-0815", "web-token-0123456789"):
            assert secret not in shown
    assert "rediss://tagger:***@cache:6380/0" in repr(settings)
    assert "sasl_username='streamtags'" in repr(settings)
