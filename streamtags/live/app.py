"""The Faust worker: wiring of topics, the state table, the tagger, the agent, timers and pages.

One agent reads all four input topics as raw bytes (Faust never decodes
them, so bad input cannot crash it) in batches, and hands each batch to
:class:`~streamtags.live.intake.Intake` (decode, engine, dead letters,
metrics). The :class:`~streamtags.live.tagger.LiveTagger` writes each
changed user's state at most once per commit interval and acks events only
after the broker confirmed the state and outputs they produced; a timer
fires deadlines for quiet users between batches, a slow one deletes idle
users, and one probes Kafka for :mod:`streamtags.live.health`. Repeated
warnings (aiokafka's and Faust's during a broker outage among them) are
held back by :mod:`streamtags.live.quiet_logs`. Pages
(:mod:`streamtags.live.web`): ``/metrics``, ``/health`` and
``GET /v1/users/{user_id}/tags``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import logging
import uuid
from collections.abc import Mapping
from typing import Any, cast

import faust
from faust.types import TP

from streamtags.contracts.ingest import RawMessage
from streamtags.engine.partition import Engine
from streamtags.live.drain import BatchRoute, FetchLimits
from streamtags.live.drain import install as install_drain
from streamtags.live.faust_internals import committed_offset, producer_client
from streamtags.live.health import DependencyHealth, KafkaProbe, RedisProbe
from streamtags.live.intake import Intake
from streamtags.live.kafka_client import faust_credentials
from streamtags.live.metrics import Metrics
from streamtags.live.quiet_logs import RepeatFilter, install
from streamtags.live.seams import Delivery
from streamtags.live.table_store import TableStore, partition_of
from streamtags.live.tagger import Ack, LiveTagger, Senders
from streamtags.live.topics import ensure_topics
from streamtags.live.web import register_pages
from streamtags.rulebook.loader import Ruleset, load_rules
from streamtags.serving.lookup import AsyncTagClient
from streamtags.serving.projection import Projector
from streamtags.serving.redis_sink import RedisSink, TriggerGuard
from streamtags.settings import Settings

__all__ = [
    "ProducerSender",
    "create_app",
    "own_assigned_partitions",
    "run_worker",
    "state_table_name",
]

log = logging.getLogger("streamtags.live.app")

#: Most messages one fetch hands the agent (aiokafka's ``max_poll_records``).
FETCH_MAX_MESSAGES = 2000
#: How long the producer lets records gather, seconds, and its largest batch, bytes.
PRODUCER_LINGER_S = 0.005
PRODUCER_BATCH_BYTES = 256 * 1024
#: Fetches of input messages waiting for the agent; the drain waits beyond that.
FETCHES_BUFFERED = 4
#: RocksDB per-partition sizes; Faust's defaults (64 MiB x3 write buffers and a
#: 2 GiB block cache per partition) are far too big for a small worker.
ROCKSDB_OPTIONS = {
    "write_buffer_size": 8 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "target_file_size_base": 16 * 1024 * 1024,
    "block_cache_size": 32 * 1024 * 1024,
    "block_cache_compressed_size": 8 * 1024 * 1024,
}
#: Coupon-trigger ids are remembered this long (seconds) to keep them one-shot.
TRIGGER_TTL_S = 30 * 86_400
#: Seconds between Redis projection ticks (probe, catch-up, resync): a Redis that
#: lost its data is noticed within about this long of answering again.
PROJECTION_TICK_S = 1.0
#: Room for a record's framing above ``max_record_bytes`` in the producer's own limit.
RECORD_FRAMING_BYTES = 4096
#: How often Kafka is probed, and how long it may take to answer, seconds.
HEALTH_INTERVAL_S = 2.0
HEALTH_TIMEOUT_S = 2.0
#: A repeated warning or error is logged at most once per this many seconds.
LOG_REPEAT_INTERVAL_S = 60.0
#: Redis keys that tell the worker whether Redis is reachable and kept its data:
#: ``{prefix}{app_id}`` and ``{prefix}{app_id}:{worker}`` (see
#: :class:`~streamtags.live.health.RedisProbe`).
REDIS_MARKER_PREFIX = "streamtags:workers:"


def state_table_name() -> str:
    """Name of the user-state table; its changelog is ``{app_id}-user-state-changelog``."""
    return "user-state"


class ProducerSender:
    """One output topic, written through the app's Kafka producer.

    The production :class:`~streamtags.live.seams.Sender`: the producer
    directly, not ``Topic.send``, because Faust's per-record machinery costs
    several times more; Faust flushes this producer before it commits
    offsets all the same.
    """

    def __init__(self, app: faust.App, topic: str) -> None:
        self.app = app
        self.topic = topic

    @property
    def name(self) -> str:
        """The topic's name."""
        return self.topic

    async def send(self, key: bytes | None, value: bytes) -> Delivery:
        """Queue (key, value); returns the delivery future."""
        delivery: Delivery = await self.app.producer.send(self.topic, key, value, None, None, None)
        return delivery


def create_app(settings: Settings, *, metrics: Metrics | None = None) -> faust.App:
    """Build the Faust app for ``settings``; nothing connects until it runs."""
    metrics_: Metrics = metrics or Metrics()
    ruleset = load_rules(settings.rules_dir, time_scale=settings.time_scale)
    app = _faust_app(settings)
    stream_of_topic = {topic: stream for stream, topic in settings.inputs.by_stream().items()}
    inputs = app.topic(
        *stream_of_topic,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
        key_serializer="raw",
        value_serializer="raw",
    )
    table = _state_table(app, settings)
    sink = _redis_sink(settings, ruleset)
    tagger = _tagger(app, settings, ruleset, table, sink, stream_of_topic, metrics_)
    health = tagger.health
    intake = Intake(
        tagger,
        stream_of_topic=stream_of_topic,
        metrics=metrics_,
        max_future_skew_ms=settings.max_future_skew_ms,
        max_record_bytes=settings.max_record_bytes,
    )
    _follow_assignment(
        app, table, tagger, input_topics=set(stream_of_topic), stream_of_topic=stream_of_topic
    )
    fetch_limits = FetchLimits(settings.fetch_min_bytes, settings.fetch_max_wait_ms)
    _start_agent(app, inputs, intake, fetch_limits)
    _start_timers(app, settings, intake, sink)
    _keep_redis_projection(app, tagger, sink)
    _watch_dependencies(app, settings, tagger)
    register_pages(
        app,
        lookup=AsyncTagClient(
            redis_url=settings.redis_url,
            prefix=settings.redis_key_prefix,
            timeout_ms=max(settings.redis_timeout_ms, 200),
        ),
        metrics=metrics_,
        token=settings.web_token.reveal() or None,
        evidence=settings.web_evidence,
        health=lambda: {
            **health.status(),
            "app_id": settings.app_id,
            "partitions": sorted(tagger.partitions),
            "rebalancing": bool(app.rebalancing),
        },
    )
    cast(Any, app).streamtags_tagger = tagger
    return app


def _tagger(
    app: faust.App,
    settings: Settings,
    ruleset: Ruleset,
    table: Any,
    sink: RedisSink,
    stream_of_topic: Mapping[str, str],
    metrics: Metrics,
) -> LiveTagger:
    """The engine and everything the tagger writes to, wired for ``settings``."""
    return LiveTagger(
        Engine(
            ruleset,
            lateness_ms=settings.lateness_ms,
            max_future_skew_ms=settings.max_future_skew_ms,
        ),
        TableStore(table, partitions=settings.partitions),
        senders=_senders(app, settings),
        sink=sink,
        guard=TriggerGuard(
            redis_url=settings.redis_url,
            prefix=settings.redis_trigger_prefix,
            timeout_ms=settings.redis_timeout_ms,
            ttl_s=TRIGGER_TTL_S,
        ),
        metrics=metrics,
        commit_interval_s=settings.commit_interval_s,
        topic_of_stream={stream: topic for topic, stream in stream_of_topic.items()},
        partition_end=functools.partial(
            _partition_end,
            app,
            {
                (number, stream): TP(topic, number)
                for topic, stream in stream_of_topic.items()
                for number in range(settings.partitions)
            },
        ),
        max_record_bytes=settings.max_record_bytes,
        cache_max_bytes=settings.cache_max_mb * 2**20,
        health=DependencyHealth(metrics),
        state_topic=table.changelog_topic.get_topic_name(),
    )


def _redis_sink(settings: Settings, ruleset: Ruleset) -> RedisSink:
    """The tag sink. Redis projection (issue 9): revokes drop queued writes by
    partition, and a tombstone outlives its clear by the tag's TTL at most."""
    return RedisSink(
        redis_url=settings.redis_url,
        prefix=settings.redis_key_prefix,
        timeout_ms=settings.redis_timeout_ms,
        partition_of=lambda user_id: partition_of(user_id.encode(), settings.partitions),
        ttl_ms_of_tag={rule.tag: rule.ttl_ms for rule in ruleset.rules},
    )


def _faust_app(settings: Settings) -> faust.App:
    return faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=faust_credentials(settings.kafka_security),
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        table_standby_replicas=settings.standby_replicas,
        broker_commit_interval=settings.commit_interval_s,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        consumer_auto_offset_reset="earliest",
        # A revoke does not wait for every message read to be acked: the tagger's own
        # revoke handler flushes and acks what was processed, and what was read but not
        # acked is read again by the partition's next owner, whose state (the changelog
        # the flush wrote) drops it as a redelivery. Waiting stalled rebalances for
        # minutes with two workers (decision 0007).
        stream_wait_empty=False,
        broker_max_poll_records=FETCH_MAX_MESSAGES,
        web_enabled=True,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        # Tags are served from Redis, never from worker memory.
        web_tables_enabled=False,
        web_router_enabled=False,
        web_stats_enabled=False,
        producer_acks=-1,
        # A flush queues one changelog record per changed user: let them go in a few
        # large requests rather than many small ones (awaited at the flush anyway).
        producer_linger=PRODUCER_LINGER_S,
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        # Records are checked against max_record_bytes (key + value) before they are
        # sent; the producer's own limit counts the framing too.
        producer_max_request_size=settings.max_record_bytes + RECORD_FRAMING_BYTES,
    )


def _state_table(app: faust.App, settings: Settings) -> Any:
    return app.Table(
        state_table_name(),
        key_type=bytes,  # raw bytes in and out: the engine owns the state format
        value_type=bytes,
        partitions=settings.partitions,
        options=dict(ROCKSDB_OPTIONS) if settings.store.startswith("rocksdb") else None,
    )


def _senders(app: faust.App, settings: Settings) -> Senders:
    outputs = settings.outputs
    return Senders(
        tags=ProducerSender(app, outputs.tags),
        risk_tags=ProducerSender(app, outputs.risk_tags),
        coupon_triggers=ProducerSender(app, outputs.coupon_triggers),
        dead_letter=ProducerSender(app, outputs.dead_letter),
    )


def _partition_end(
    app: faust.App, tps: Mapping[tuple[int, str], TP], number: int, stream: str
) -> int | None:
    """The end offset the consumer last saw for a stream's partition, if any (asked for
    every partition and stream after each fetch)."""
    tp = tps.get((number, stream))
    if tp is None:
        return None
    try:
        end = app.consumer.highwater(tp)
    except Exception:  # not assigned (yet), or no fetch has told us: unknown
        return None
    return int(end) if end is not None else None


async def _backlog_ends(
    app: faust.App, tps: list[Any], stream_of_topic: Mapping[str, str]
) -> dict[tuple[int, str], tuple[int, int]]:
    """(partition, stream) -> (the first offset this owner reads, the partition's end).

    The first offset is the group's committed one (Faust seeks there once the
    assignment is handled), or the partition's earliest when nothing was committed
    (``consumer_auto_offset_reset="earliest"``). Not the consumer's position: the
    fetcher may already have taken records the agent has not handled (they may be
    dropped and read again), and a stream taken for read to its end would not hold
    the partition while they come (they were dead-lettered ``too_late``)."""
    if not tps:
        return {}
    ends = await asyncio.wait_for(app.consumer.highwaters(*tps), timeout=10)
    earliest = await asyncio.wait_for(app.consumer.earliest_offsets(*tps), timeout=10)
    found = {}
    for tp in tps:
        committed = await asyncio.wait_for(committed_offset(app, tp), timeout=10)
        start = max(committed or 0, earliest.get(tp) or 0)
        found[(tp.partition, stream_of_topic[tp.topic])] = (start, ends.get(tp, 0))
    return found


async def own_assigned_partitions(
    app: faust.App, tagger: LiveTagger, input_topics: set[str], stream_of_topic: Mapping[str, str]
) -> None:
    """Own the input partitions of the app's current assignment, and tell the tagger
    where the backlogs of those still waiting for it end.

    Skipped when the group rebalanced again while the broker was asked: Faust does
    not cancel this callback with its recovery, and ends learnt for an old
    assignment would overwrite the new one's. The partitions keep waiting, and the
    new assignment's own call asks for them again."""
    generation = app.consumer_generation_id
    actives = app.assignor.assigned_actives()
    numbers = {tp.partition for tp in actives if tp.topic in input_topics}
    await tagger.assign(numbers)
    log.info("own input partitions %s", sorted(numbers))
    waiting = tagger.awaiting_backlog & numbers
    tps = [tp for tp in actives if tp.topic in input_topics and tp.partition in waiting]
    try:
        ends = await _backlog_ends(app, tps, stream_of_topic)
    except Exception as exc:  # the broker did not say: judge as before, and say so
        log.warning("could not learn the backlog's end (%r); not waiting for it", exc)
        ends = None
    if app.consumer_generation_id != generation:
        log.info("rebalanced again while learning where backlogs end; asked again")
    elif ends is None:
        tagger.release_backlogs(waiting)
    else:
        tagger.expect_backlog(ends)


def _follow_assignment(
    app: faust.App,
    table: Any,
    tagger: LiveTagger,
    *,
    input_topics: set[str],
    stream_of_topic: Mapping[str, str],
) -> None:
    """Rebuild partitions once the table recovered; flush before partitions go."""

    @table.on_recover  # type: ignore[untyped-decorator]
    async def rebuild_partitions() -> None:
        await own_assigned_partitions(app, tagger, input_topics, stream_of_topic)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def flush_before_revoke(app: faust.App, revoked: Any, **_: Any) -> None:
        written = await tagger.flush()
        log.info("flushed %d user states before giving up %d partitions", written, len(revoked))

    _ = (rebuild_partitions, flush_before_revoke)


def _start_agent(app: faust.App, inputs: Any, intake: Intake, limits: FetchLimits) -> None:
    """The one agent: a fetch of input messages at a time (:mod:`streamtags.live.drain`),
    flushed (and so acked) once per commit interval."""
    tagger = intake.tagger
    fetches = app.channel(maxsize=FETCHES_BUFFERED)
    app.topics.add(inputs)  # subscribed and acked through Faust; delivered by the drain
    install_drain(app, BatchRoute(set(inputs.topics), fetches), limits)

    @app.agent(fetches, concurrency=1)
    async def tag_users(stream: Any) -> None:
        async for messages in stream.noack():
            if messages and messages[0].generation_id == app.consumer_generation_id:
                await intake.handle(
                    [_raw_message(m) for m in messages],
                    acks=_acks_by_partition(app.consumer, messages),
                )
            # Handled (its acks hold what they need) or from an old generation (read
            # again by the partition's owner): the stream keeps this list as its current
            # event, and a revoke waits until every message in it is acked or gone.
            messages.clear()
            if tagger.flush_due():  # the next fetches are tagged while it writes
                tagger.flush_in_background()

    _ = tag_users


def _raw_message(message: Any) -> RawMessage:
    return RawMessage(
        message.topic, message.partition, message.offset, message.key, message.value or b""
    )


def _acks_by_partition(consumer: Any, messages: list[Any]) -> dict[int, Ack]:
    by_partition: dict[int, list[Any]] = {}
    for message in messages:
        by_partition.setdefault(message.partition, []).append(message)
    return {
        number: functools.partial(_ack_all, consumer, batch)
        for number, batch in by_partition.items()
    }


async def _ack_all(consumer: Any, messages: list[Any]) -> None:
    ack = consumer.ack
    for message in messages:
        ack(message)


def _start_timers(app: faust.App, settings: Settings, intake: Intake, sink: RedisSink) -> None:
    tagger = intake.tagger

    @app.timer(interval=settings.tick_interval_s)  # type: ignore[untyped-decorator]
    async def fire_deadlines() -> None:
        if not app.rebalancing:
            await tagger.tick()
        # Also while rebalancing: the revoke waits for every message read to be acked,
        # and the agent may be waiting for a fetch that the rebalance holds back.
        if tagger.flush_due():
            tagger.flush_in_background()

    @app.timer(interval=10.0)  # type: ignore[untyped-decorator]
    async def log_counters() -> None:
        if intake.consumed or intake.rejected:
            log.info(
                "events valid %s; rejected %s; redis queued %d",
                dict(sorted(intake.consumed.items())),
                dict(sorted(intake.rejected.items())),
                sink.queued_users,
            )

    @app.timer(interval=settings.sweep_interval_s)  # type: ignore[untyped-decorator]
    async def delete_idle_users() -> None:
        if not app.rebalancing:
            await tagger.sweep()

    _ = (fire_deadlines, log_counters, delete_idle_users)


def _watch_dependencies(app: faust.App, settings: Settings, tagger: LiveTagger) -> None:
    """Probe Kafka and Redis, account outage time, and hold back repeated log lines."""
    health, metrics = tagger.health, tagger.metrics
    kafka = KafkaProbe(lambda: producer_client(app), timeout_s=HEALTH_TIMEOUT_S)
    redis_probe = RedisProbe(
        redis_url=settings.redis_url,
        worker_key=f"{REDIS_MARKER_PREFIX}{settings.app_id}:{uuid.uuid4().hex[:12]}",
        app_key=f"{REDIS_MARKER_PREFIX}{settings.app_id}",
        timeout_s=HEALTH_TIMEOUT_S,
    )

    async def check_redis() -> None:
        # Reports the outage only: the projector (serving.projection) restores the tags.
        await redis_probe.check(health)

    @app.task  # type: ignore[untyped-decorator]
    async def first_redis_check() -> None:
        # At once, before partitions are owned: a first check that finds the app's
        # marker gone restores every owned user, which should be nobody yet.
        await check_redis()

    @app.timer(interval=HEALTH_INTERVAL_S)  # type: ignore[untyped-decorator]
    async def check_dependencies() -> None:
        await kafka.check(health)
        await check_redis()
        health.account()

    @app.task  # type: ignore[untyped-decorator]
    async def quiet_repeated_logs() -> None:
        # Runs once the worker has set up logging: the filter goes on its handlers.
        held = metrics.log_records_held
        install(
            RepeatFilter(
                interval_s=LOG_REPEAT_INTERVAL_S, on_held=lambda name: held.labels(name).inc()
            )
        )

    _ = (first_redis_check, check_dependencies, quiet_repeated_logs)


def _keep_redis_projection(app: faust.App, tagger: LiveTagger, sink: RedisSink) -> None:
    """Redis projection (issue 9): once a second, probe Redis, send the rest of a
    catch-up, and project live tags again where Redis lost them (see
    :mod:`streamtags.serving.projection`)."""
    projector = Projector(
        sink, engine=tagger.engine, owned=lambda: tagger.partitions, scan=tagger.store.scan
    )

    @app.timer(interval=PROJECTION_TICK_S)  # type: ignore[untyped-decorator]
    async def keep_redis_projection() -> None:
        if not app.rebalancing:
            await projector.tick()

    _ = keep_redis_projection


def run_worker(settings: Settings) -> None:
    """Run a worker in the foreground until it is stopped (Ctrl-C or SIGTERM).

    Raises :class:`~streamtags.rulebook.RuleError` for a broken rule,
    :class:`~streamtags.topics.TopicMismatch` for a wrongly partitioned topic
    and :class:`~streamtags.errors.KafkaUnavailable` when Kafka is out of reach
    or refuses the login, before anything is consumed.
    """
    load_rules(settings.rules_dir, time_scale=settings.time_scale)  # fail at load, not mid-stream
    asyncio.run(
        ensure_topics(
            [*settings.inputs.by_stream().values(), *dataclasses.astuple(settings.outputs)],
            bootstrap=settings.kafka_bootstrap,
            partitions=settings.partitions,
            security=settings.kafka_security,
            replication_factor=settings.replication_factor,
        )
    )
    # Per-user state is many small long-lived containers; the default young-generation
    # threshold rescans them constantly (bench/engine.py measures the difference).
    gc.set_threshold(50_000, 50, 100)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level, override_logging=True)
    # Faust's terminal spinner sets the root logger to DEBUG so it can spin on every
    # record: every aiokafka send then builds a debug record (~10 % of a busy worker).
    worker.spinner = None
    worker.execute_from_commandline()
