"""Integration fixtures: the real Kafka and Redis that `make test` starts.

If either cannot be reached the tests fail (never skip): in CI a skipped
integration test would hide a broken stack.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

KAFKA = os.environ.get("STREAMTAGS_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
REDIS_URL = os.environ.get("STREAMTAGS_REDIS_URL", "redis://127.0.0.1:6379/0")
ROOT = Path(__file__).resolve().parents[2]


async def _kafka_answers() -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA, request_timeout_ms=5000)
    await admin.start()
    try:
        await admin.list_topics()
    finally:
        await admin.close()


@pytest.fixture(scope="session", autouse=True)
def real_stack() -> None:
    """Fail every integration test at once if Kafka or Redis is not there."""
    try:
        asyncio.run(_kafka_answers())
    except Exception as exc:  # any failure to reach the broker
        pytest.fail(
            f"Kafka at {KAFKA} is unreachable ({exc!r}); run `make test` or `stack/stack.sh up`",
            pytrace=False,
        )
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.fail(
            f"Redis at {REDIS_URL} is unreachable ({exc!r}); run `make test` or "
            f"`stack/stack.sh up`",
            pytrace=False,
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Names:
    """Unique topic names and app id for one test."""

    prefix: str

    @property
    def app_id(self) -> str:
        return f"{self.prefix}-app"

    def topic(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def env(self) -> dict[str, str]:
        return {
            "STREAMTAGS_APP_ID": self.app_id,
            "STREAMTAGS_TOPIC_ORDERS": self.topic("orders"),
            "STREAMTAGS_TOPIC_BROWSE": self.topic("browse"),
            "STREAMTAGS_TOPIC_LOGINS": self.topic("logins"),
            "STREAMTAGS_TOPIC_ACCOUNTS": self.topic("accounts"),
            "STREAMTAGS_TOPIC_TAGS": self.topic("tags"),
            "STREAMTAGS_TOPIC_RISK_TAGS": self.topic("risk-tags"),
            "STREAMTAGS_TOPIC_COUPON_TRIGGERS": self.topic("coupon-triggers"),
            "STREAMTAGS_TOPIC_DEAD_LETTER": self.topic("dead-letter"),
            "STREAMTAGS_REDIS_KEY_PREFIX": f"{self.prefix}:user:",
            "STREAMTAGS_REDIS_TRIGGER_PREFIX": f"{self.prefix}:trigger:",
        }


@pytest.fixture
def names() -> Names:
    return Names(f"it{uuid.uuid4().hex[:10]}")


@dataclass
class Worker:
    """A real `streamtags worker` process."""

    env: dict[str, str]
    log_path: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    starts: int = field(default=0)

    def start(self, *, timeout_s: float = 60.0) -> None:
        self.starts += 1
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamtags", "worker"],
            env={**os.environ, **self.env, "STREAMTAGS_WEB_PORT": str(self.port)},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited at start:\n{self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url("/health"), timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"worker did not serve /health in {timeout_s}s:\n{self.log()[-3000:]}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url(path), timeout=5) as response:
            body: bytes = response.read()
            return body

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a Prometheus sample from /metrics (0 if absent)."""
        total = 0.0
        for line in self.get("/metrics").decode().splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            if head.split("{")[0] != name:
                continue
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total


@pytest.fixture
def worker_factory(names: Names, tmp_path: Path) -> Iterator[type[Worker] | object]:
    started: list[Worker] = []

    def make(**extra_env: str) -> Worker:
        env = {
            **names.env(),
            "STREAMTAGS_STORE": "memory://",
            "STREAMTAGS_DATA_DIR": str(tmp_path / f"data{len(started)}"),
            "STREAMTAGS_PARTITIONS": "4",
            **extra_env,
        }
        worker = Worker(env=env, log_path=tmp_path / f"worker{len(started)}.log", port=free_port())
        started.append(worker)
        return worker

    yield make
    for worker in started:
        worker.stop()


async def produce(topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
    """Send (key, value) pairs and wait until all are acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in messages]
        for future in futures:
            await future
    finally:
        await producer.stop()


async def consume(
    topic: str, *, count: int, timeout_s: float = 30.0, settle_s: float = 0.0
) -> list[dict[str, Any]]:
    """Read JSON records from the start of ``topic`` until ``count`` arrived (then
    ``settle_s`` more seconds, to catch extras) or ``timeout_s`` ran out."""
    records: list[dict[str, Any]] = []
    settled_at: float | None = None
    async for record in follow(topic, timeout_s=timeout_s):
        if record:
            records.append(record)
        if settled_at is None and len(records) >= count:
            settled_at = time.monotonic() + settle_s
        if settled_at is not None and time.monotonic() >= settled_at:
            break
    return records


async def follow(topic: str, *, timeout_s: float) -> AsyncIterator[dict[str, Any]]:
    """Records of ``topic`` from its start; an empty dict after each empty poll."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=KAFKA,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for messages in batches.values():
                for message in messages:
                    assert message.value is not None
                    yield orjson.loads(message.value)
            yield {}
    finally:
        await consumer.stop()


async def wait_for(predicate: object, *, timeout_s: float, what: str) -> None:
    """Poll a zero-argument callable until it returns true."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
