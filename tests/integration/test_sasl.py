"""On a Kafka listener that demands SASL/SCRAM, a worker logs in, tags users, serves them
behind its bearer token and writes no secret to its log; with a wrong password it stops at
start-up with one clear line.

The stack's Kafka listens with SASL_PLAINTEXT/SCRAM on 127.0.0.1:9094 and has the user
``streamtags`` (``stack/stack.sh``); ``STREAMTAGS_TEST_KAFKA_SASL_BOOTSTRAP`` points the
tests elsewhere. Like every integration test, these fail when the listener is not there.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest
import redis

from streamtags.errors import KafkaUnavailable
from streamtags.live.kafka_client import check_reachable
from streamtags.serving.lookup import TagClient
from streamtags.settings import KafkaSecurity, Secret
from tests.integration.conftest import REDIS_URL, ROOT, Names, Worker, wait_for

SASL_BOOTSTRAP = os.environ.get("STREAMTAGS_TEST_KAFKA_SASL_BOOTSTRAP", "127.0.0.1:9094")
SASL_USER = os.environ.get("STREAMTAGS_STACK_SASL_USER", "streamtags")
SASL_PASSWORD = os.environ.get("STREAMTAGS_STACK_SASL_PASSWORD", "streamtags-local-secret")
#: Short lateness and intervals so a tag shows within a second or two.
QUICK = {
    "STREAMTAGS_LATENESS_MS": "500",
    "STREAMTAGS_TICK_INTERVAL_S": "0.2",
    "STREAMTAGS_COMMIT_INTERVAL_S": "0.5",
}


def scram_env(password: str = SASL_PASSWORD) -> dict[str, str]:
    return {
        "STREAMTAGS_KAFKA_BOOTSTRAP": SASL_BOOTSTRAP,
        "STREAMTAGS_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "STREAMTAGS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "STREAMTAGS_KAFKA_SASL_USERNAME": SASL_USER,
        "STREAMTAGS_KAFKA_SASL_PASSWORD": password,
    }


@pytest.fixture(scope="module", autouse=True)
def sasl_listener() -> None:
    """Fail (never skip) every test here when the SASL listener does not let us in."""
    security = KafkaSecurity(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username=SASL_USER,
        sasl_password=Secret(SASL_PASSWORD),
    )
    try:
        asyncio.run(check_reachable(bootstrap=SASL_BOOTSTRAP, security=security))
    except KafkaUnavailable as exc:
        pytest.fail(
            f"the SASL/SCRAM listener is not usable: {exc}. Run `stack/stack.sh up` (a stack "
            f"started before it had the SASL listener needs `stack/stack.sh down` first), or "
            f"set STREAMTAGS_TEST_KAFKA_SASL_BOOTSTRAP.",
            pytrace=False,
        )


@pytest.fixture
def redis_acl_url(names: Names) -> Iterator[str]:
    """A Redis URL that logs in as a fresh ACL user allowed only this test's keys."""
    admin = redis.Redis.from_url(REDIS_URL)
    password = f"{names.prefix}-redis-secret"
    admin.acl_setuser(
        names.prefix,
        enabled=True,
        passwords=[f"+{password}"],
        keys=[f"{names.prefix}:*"],
        categories=["+@all"],
    )
    parts = urlsplit(REDIS_URL)
    yield f"redis://{names.prefix}:{password}@{parts.hostname}:{parts.port or 6379}{parts.path}"
    admin.acl_deluser(names.prefix)
    admin.close()


def streamtags(
    *argv: str, env: dict[str, str], timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the command line with ``env`` on top of this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "streamtags", *argv],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def http_status(worker: Worker, path: str, token: str | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(worker.url(path), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def login_recording(path: Path, user: str) -> Path:
    """Three logins from three countries: enough for ip_hopping."""
    with path.open("wb") as handle:
        for number, (ip, country) in enumerate(
            [("203.0.113.1", "SG"), ("198.51.100.2", "MY"), ("192.0.2.3", "TH")]
        ):
            line = {
                "stream": "logins",
                "event_id": f"{user}-l{number}",
                "user_id": user,
                "ts": int(time.time() * 1000),
                "outcome": "success",
                "ip": ip,
                "country": country,
            }
            handle.write(orjson.dumps(line) + b"\n")
    return path


async def test_a_worker_logs_in_with_scram_tags_users_and_logs_no_secret(
    names: Names,
    worker_factory: Callable[..., Worker],
    redis_acl_url: str,
    tmp_path: Path,
) -> None:
    web_token = f"{names.prefix}-web-token-0123456789"
    worker = worker_factory(
        **scram_env(),
        **QUICK,
        STREAMTAGS_REDIS_URL=redis_acl_url,
        STREAMTAGS_WEB_TOKEN=web_token,
        STREAMTAGS_WEB_EVIDENCE="off",
        STREAMTAGS_LOG_LEVEL="debug",  # the most a log can ever hold
    )
    worker.start()

    produced = streamtags(
        "produce", str(login_recording(tmp_path / "logins.jsonl", "hopper")), env=worker.env
    )
    assert produced.returncode == 0, produced.stderr
    assert produced.stdout == f"produced 3 messages to {SASL_BOOTSTRAP}\n"

    # an authenticated consumer (`streamtags watch`) sees the tag on the tags topic
    watched = streamtags(
        "watch", "--from-beginning", "--json", "--limit", "1", "--timeout", "40", env=worker.env
    )
    assert watched.returncode == 0, watched.stderr
    change = json.loads(watched.stdout.splitlines()[0])
    assert (change["user_id"], change["tag"], change["action"]) == (
        "hopper",
        "ip_hopping",
        "applied",
    )

    # Redis, written by the worker logged in as the ACL user, read by that user too
    client = TagClient(redis_url=redis_acl_url, prefix=f"{names.prefix}:user:", timeout_ms=500)
    await wait_for(
        lambda: [tag["tag"] for tag in client.tags("hopper")] == ["ip_hopping"],
        timeout_s=20,
        what="ip_hopping in Redis",
    )

    assert http_status(worker, "/v1/users/hopper/tags")[0] == 401
    assert http_status(worker, "/metrics")[0] == 401
    status, body = http_status(worker, "/v1/users/hopper/tags", web_token)
    assert status == 200
    tags = json.loads(body)["tags"]
    assert [tag["tag"] for tag in tags] == ["ip_hopping"] and "evidence" not in tags[0]
    assert b"203.0.113.1" not in body

    worker.stop()
    log = worker.log()
    assert "SaslAuthenticateRequest_v1(<redacted>)" in log  # logged in, at debug level
    for secret in (SASL_PASSWORD, web_token, str(urlsplit(redis_acl_url).password)):
        for text in (log, produced.stdout, produced.stderr, watched.stderr):
            assert secret not in text


def test_a_worker_with_a_wrong_password_stops_at_start_with_one_clear_line(
    names: Names, tmp_path: Path
) -> None:
    wrong = "not-the-password-0815"
    result = streamtags(
        "worker",
        env={
            **names.env(),
            **scram_env(password=wrong),
            "STREAMTAGS_STORE": "memory://",
            "STREAMTAGS_DATA_DIR": str(tmp_path / "data"),
        },
    )
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(
        f"streamtags worker: cannot use Kafka at {SASL_BOOTSTRAP} "
        f"(SASL_PLAINTEXT, SCRAM-SHA-256 as '{SASL_USER}'): "
    )
    assert "SaslAuthenticationFailed" in line
    assert wrong not in line
