"""No secret (the Kafka SASL password, the web token, the Redis password) ever reaches a
log, an error line or the settings' repr, on the worker's start-up path or any command's;
and every command that talks to Kafka connects as the security settings say."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import pytest

from streamtags.cli.main import main
from streamtags.live.app import create_app
from streamtags.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SECRETS = ("kafka-pass-4711", "web-token-0123456789", "redis-pass-0815")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Every secret set, Kafka pointed at a closed port; returns the bootstrap address."""
    bootstrap = f"127.0.0.1:{closed_port()}"
    env = {
        "STREAMTAGS_KAFKA_BOOTSTRAP": bootstrap,
        "STREAMTAGS_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "STREAMTAGS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "STREAMTAGS_KAFKA_SASL_USERNAME": "streamtags",
        "STREAMTAGS_KAFKA_SASL_PASSWORD": SECRETS[0],
        "STREAMTAGS_WEB_TOKEN": SECRETS[1],
        "STREAMTAGS_REDIS_URL": f"redis://tagger:{SECRETS[2]}@127.0.0.1:1/0",
        "STREAMTAGS_RULES_DIR": str(ROOT / "rules"),
        "STREAMTAGS_STORE": "memory://",
        "STREAMTAGS_DATA_DIR": str(tmp_path / "data"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return bootstrap


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


@pytest.mark.parametrize(
    "command",
    [
        ["worker"],
        ["produce", "{recording}"],
        ["simulate", "--duration", "1", "--personas", "1"],
        ["watch", "--timeout", "1"],
        ["score", "--truth", "{recording}"],
    ],
    ids=lambda command: command[0],
)
def test_a_command_that_cannot_log_in_says_so_in_one_line_without_any_secret(
    command: list[str],
    secret_env: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    recording = tmp_path / "events.jsonl"
    recording.write_text("")
    argv = [part.format(recording=recording) for part in command]
    with caplog.at_level(logging.DEBUG):
        code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2
    assert err.startswith(
        f"streamtags {command[0]}: cannot use Kafka at {secret_env} "
        f"(SASL_PLAINTEXT, SCRAM-SHA-256 as 'streamtags'): {secret_env}: "
    )
    assert err.count("\n") == 1
    assert_no_secret(out, err, caplog.text)


def test_building_the_worker_logs_no_secret_and_its_settings_show_none(
    secret_env: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings.from_env()
    with caplog.at_level(logging.DEBUG):
        app = create_app(settings)
    assert settings.web_token.reveal() == SECRETS[1]  # the secrets really are set
    credentials: Any = app.conf.broker_credentials
    assert credentials.password == SECRETS[0]
    assert_no_secret(caplog.text, repr(settings), str(settings), repr(credentials))
