"""Degradation that is visible but not noisy: one line per outage, /health names the
dependency, outage time is counted, and repeated warnings are held back."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from streamtags.live.health import DependencyHealth, KafkaProbe, RedisProbe
from streamtags.live.metrics import Metrics
from streamtags.live.quiet_logs import RepeatFilter, install
from tests.unit.test_live_tagger import World, whale


class Ticking:
    """A monotonic clock the test moves, seconds."""

    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


HEALTH_LOG = "streamtags.live.health"


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=HEALTH_LOG)
    clock, metrics = Ticking(), Metrics()
    health = DependencyHealth(metrics, clock=clock)
    for _ in range(500):
        health.failed("kafka", ConnectionError("refused"))
        clock.now_s += 0.04
    health.account()
    assert sample(metrics, "streamtags_dependency_up", dependency="kafka") == 0
    assert sample(metrics, "streamtags_dependency_down_seconds_total", dependency="kafka") == (
        pytest.approx(20.0)
    )
    clock.now_s += 1
    health.ok("kafka")
    health.ok("kafka")
    # Only this logger: another test's garbage (an unclosed client) may log meanwhile.
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == HEALTH_LOG]
    assert len(lines) == 2, lines
    assert lines[0][0] == "WARNING" and "kafka is unreachable (refused)" in lines[0][1]
    assert lines[1][0] == "INFO" and "after 21.0 s down (500 failures)" in lines[1][1]
    assert sample(metrics, "streamtags_dependency_up", dependency="kafka") == 1
    assert sample(metrics, "streamtags_dependency_down_seconds_total", dependency="kafka") == (
        pytest.approx(21.0)
    )
    assert health.status() == {"status": "ok", "degraded": []}


async def test_health_names_redis_while_the_tag_sink_is_down_and_clears_when_it_is_back() -> None:
    world = World()
    await world.assign([0])
    world.sink.fault.down()
    await world.feed([whale("ann")], "batch-1")
    await world.release()
    assert world.tagger.health.status() == {"status": "degraded", "degraded": ["redis"]}
    assert world.metric("streamtags_redis_pending_users") == 1
    world.sink.fault.up()
    await world.tagger.tick()
    assert world.tagger.health.status() == {"status": "ok", "degraded": []}


async def test_health_names_kafka_while_records_are_not_delivered() -> None:
    world = World()
    await world.assign([0])
    world.store.fault.down()
    await world.feed([whale("ann")], "batch-1")
    await world.tagger.flush()
    assert world.tagger.health.degraded() == ["kafka"]
    world.store.fault.up()
    await world.tagger.flush()
    assert world.tagger.health.degraded() == []
    assert world.acked == ["batch-1"]


class Client:
    """Answers metadata requests as told: ``answer``, raise, or hang."""

    def __init__(self) -> None:
        self.mode = "answer"

    async def fetch_all_metadata(self) -> object:
        if self.mode == "raise":
            raise ConnectionError("Unable to connect")
        if self.mode == "hang":
            await asyncio.sleep(10)
        return object()


@pytest.mark.parametrize("failure", ["raise", "hang"])
async def test_the_kafka_probe_reports_a_broker_that_refuses_or_does_not_answer(
    failure: str,
) -> None:
    client, health = Client(), DependencyHealth(Metrics())
    probe = KafkaProbe(lambda: client, timeout_s=0.05)
    await probe.check(health)
    assert health.degraded() == []
    client.mode = failure
    await probe.check(health)
    assert health.degraded() == ["kafka"]
    client.mode = "answer"
    await probe.check(health)
    assert health.degraded() == []


async def test_the_kafka_probe_says_nothing_before_the_producer_exists() -> None:
    health = DependencyHealth(Metrics())
    health.failed("kafka", "earlier")
    await KafkaProbe(lambda: None, timeout_s=0.05).check(health)
    assert health.degraded() == ["kafka"]


def records(filter_: RepeatFilter, messages: list[tuple[str, int, str, Any]]) -> list[str]:
    passed = []
    for name, level, template, args in messages:
        record = logging.LogRecord(name, level, __file__, 1, template, args, None)
        if filter_.filter(record):
            passed.append(record.getMessage())
    return passed


def test_repeated_warnings_pass_once_per_interval_and_say_how_many_were_held() -> None:
    clock, held = Ticking(), list[str]()
    quiet = RepeatFilter(interval_s=60, clock=clock, on_held=held.append)
    noisy = [("aiokafka", logging.ERROR, "Unable connect to node with id %s: %r", (1, "x"))]
    assert records(quiet, noisy * 2000) == ["Unable connect to node with id 1: 'x'"]
    assert len(held) == 1999 and set(held) == {"aiokafka"}
    own = [("streamtags.live.app", logging.INFO, "events valid %s", ({"browse": 1},))]
    assert records(quiet, own * 3) == ["events valid {'browse': 1}"] * 3  # ours: deliberate
    retries = [("aiokafka.consumer.group_coordinator", logging.INFO, "OffsetCommit failed", ())]
    assert records(quiet, retries * 12) == ["OffsetCommit failed"]
    clock.now_s += 61
    [line] = records(quiet, noisy)
    assert line.endswith("[1999 more like this in the last 61 s]")


def test_a_library_that_builds_a_new_message_each_time_is_held_after_a_few() -> None:
    quiet = RepeatFilter(interval_s=60, per_logger=3, clock=Ticking())
    varied = [(f"faust.{i % 7}", logging.ERROR, f"send {i} failed", ()) for i in range(100)]
    assert len(records(quiet, varied)) == 3  # across all of faust's loggers
    assert quiet.held == 97
    assert len(records(quiet, [("aiokafka", logging.ERROR, "other library", ())])) == 1


def test_the_filter_decides_once_per_record_whatever_the_number_of_handlers() -> None:
    logger = logging.getLogger("streamtags.test.quiet")
    logger.propagate = False
    first, second = logging.Handler(), logging.Handler()
    seen: list[str] = []
    for handler in (first, second):
        handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
        logger.addHandler(handler)
    try:
        assert install(RepeatFilter(interval_s=60), logger) == 2
        for _ in range(10):
            logger.warning("the same thing")
        assert seen == ["the same thing", "the same thing"]  # once per handler
    finally:
        for handler in (first, second):
            logger.removeHandler(handler)


async def test_the_redis_probe_reports_an_unreachable_redis() -> None:
    health = DependencyHealth(Metrics())
    probe = RedisProbe(
        redis_url="redis://127.0.0.1:1/0", worker_key="w", app_key="a", timeout_s=0.05
    )
    assert await probe.check(health) is False
    assert health.degraded() == ["redis"]
    await probe.close()
