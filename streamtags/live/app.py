"""The Faust worker: a thin shell that moves bytes in and out of the engine.

One agent reads all four input topics as raw bytes (Faust never decodes
them, so bad input cannot crash it) in batches. For each batch it decodes
(:mod:`streamtags.contracts.ingest`), dead-letters rejects, runs the engine and ships
tag changes to Kafka and Redis (:mod:`streamtags.live.tagger`). Events are acked
only after the states they changed were written to the changelog, which
happens at most once per changed user per commit interval; a timer fires
deadlines for quiet users between batches. Pages: ``/metrics``,
``/health`` and ``GET /v1/users/{user_id}/tags``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, cast

import faust
from faust.web import Request, Response, View
from mode.utils.futures import notify

from streamtags.contracts.codec import encode
from streamtags.contracts.ingest import RawMessage, decode_batch
from streamtags.engine.partition import Engine
from streamtags.errors import InvalidEvent
from streamtags.live.metrics import Metrics
from streamtags.live.table_store import TableStore
from streamtags.live.tagger import LiveTagger
from streamtags.live.topics import ensure_topics
from streamtags.rulebook.loader import load_rules
from streamtags.serving.lookup import AsyncTagClient
from streamtags.serving.redis_sink import RedisSink, TriggerGuard
from streamtags.settings import Settings

__all__ = ["create_app", "run_worker", "state_table_name"]

log = logging.getLogger("streamtags.live.app")

#: Most events taken from the stream per batch, and the longest wait to fill one.
BATCH_MAX_EVENTS = 2000
BATCH_WITHIN_S = 0.02
#: RocksDB per-partition sizes; Faust's defaults (64 MiB x3 write buffers and a
#: 2 GiB block cache per partition) are far too big for a small worker.
ROCKSDB_OPTIONS = {
    "write_buffer_size": 8 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "target_file_size_base": 16 * 1024 * 1024,
    "block_cache_size": 32 * 1024 * 1024,
    "block_cache_compressed_size": 8 * 1024 * 1024,
}


def state_table_name() -> str:
    """Name of the user-state table; its changelog is ``{app_id}-user-state-changelog``."""
    return "user-state"


async def _take_unacked(stream: Any, max_events: int, within_s: float) -> AsyncIterator[list[Any]]:
    """Like Faust's ``Stream.take_events`` but leaves acking to the caller.

    Yields a list of events at most every ``within_s`` (an empty list when
    nothing arrived, so the caller can still flush and ack on time).
    """
    events: list[Any] = []
    full = asyncio.Event()
    consumed = asyncio.Event()
    consuming: asyncio.Future[None] | None = None

    async def add(value: Any) -> Any:
        nonlocal consuming
        if consuming is not None:
            try:
                await consuming
            finally:
                consuming = None
        events.append(stream.current_event)
        if len(events) >= max_events:
            full.set()
            consumed.clear()
            await stream.wait(consumed)
        return value

    stream.enable_acks = False
    stream.add_processor(add)
    stream._enable_passive(stream.channel.__aiter__())
    try:
        while not stream.should_stop:
            await stream.wait_for_stopped(full, timeout=within_s)
            consuming = stream.loop.create_future()
            try:
                yield list(events)
            finally:
                events.clear()
                notify(consuming)
                full.clear()
                consumed.set()
    finally:
        stream._processors.remove(add)


def create_app(settings: Settings, *, metrics: Metrics | None = None) -> faust.App:
    """Build the Faust app for ``settings``; nothing connects until it runs."""
    metrics_: Metrics = metrics or Metrics()
    ruleset = load_rules(settings.rules_dir, time_scale=settings.time_scale)
    engine = Engine(ruleset, lateness_ms=settings.lateness_ms)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        broker_commit_interval=settings.commit_interval_s,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        consumer_auto_offset_reset="earliest",
        web_enabled=True,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        # Tags are served from Redis, never from worker memory.
        web_tables_enabled=False,
        web_router_enabled=False,
        web_stats_enabled=False,
        producer_acks=-1,
    )

    topic_of_stream = settings.inputs.by_stream()
    stream_of_topic = {topic: stream for stream, topic in topic_of_stream.items()}
    inputs = app.topic(
        *stream_of_topic,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
        key_serializer="raw",
        value_serializer="raw",
    )
    dead_letters = app.topic(
        settings.outputs.dead_letter,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
        key_serializer="raw",
        value_serializer="raw",
    )
    table = app.Table(
        state_table_name(),
        key_type=bytes,  # raw bytes in and out: the engine owns the state format
        value_type=bytes,
        partitions=settings.partitions,
        options=dict(ROCKSDB_OPTIONS) if settings.store.startswith("rocksdb") else None,
    )
    redis_sink = RedisSink(
        redis_url=settings.redis_url,
        prefix=settings.redis_key_prefix,
        timeout_ms=settings.redis_timeout_ms,
    )

    async def send_to(topic: str, key: bytes, value: bytes) -> Any:
        # The app's producer directly (Faust flushes it before committing offsets);
        # Topic.send's per-record machinery costs several times more.
        return await app.producer.send(topic, key, value, None, None, None)

    outputs = settings.outputs
    tagger = LiveTagger(
        engine,
        TableStore(table, partitions=settings.partitions),
        send_tag=lambda k, v: send_to(outputs.tags, k, v),
        send_risk=lambda k, v: send_to(outputs.risk_tags, k, v),
        send_trigger=lambda k, v: send_to(outputs.coupon_triggers, k, v),
        redis=redis_sink,
        guard=TriggerGuard(
            redis_url=settings.redis_url,
            prefix=settings.redis_trigger_prefix,
            timeout_ms=settings.redis_timeout_ms,
            ttl_s=30 * 86_400,
        ),
        metrics=metrics_,
    )
    consumed: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    input_topics = set(stream_of_topic)

    def assigned_partitions() -> set[int]:
        return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic in input_topics}

    @table.on_recover
    async def rebuild_partitions() -> None:
        numbers = assigned_partitions()
        tagger.assign(numbers)
        log.info("own input partitions %s", sorted(numbers))

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def flush_before_revoke(app: faust.App, revoked: Any, **_: Any) -> None:
        written = await tagger.flush()
        log.info("flushed %d user states before giving up %d partitions", written, len(revoked))

    @app.agent(inputs, concurrency=1)
    async def tag_users(stream: Any) -> None:
        unacked: list[Any] = []
        trigger_deliveries: list[tuple[str, Any]] = []
        async for events in _take_unacked(stream, BATCH_MAX_EVENTS, BATCH_WITHIN_S):
            if events:
                trigger_deliveries.extend(await handle(events))
                unacked.extend(events)
            if unacked and time.time() - tagger.last_flush >= settings.commit_interval_s:
                await tagger.flush()
                # a coupon trigger must land before the events behind it are acked
                await tagger.confirm(trigger_deliveries)
                trigger_deliveries.clear()
                for event in unacked:
                    await stream.ack(event)
                unacked.clear()

    async def handle(events: list[Any]) -> list[tuple[str, Any]]:
        messages = [
            RawMessage(
                e.message.topic,
                e.message.partition,
                e.message.offset,
                e.message.key,
                e.message.value or b"",
            )
            for e in events
        ]
        now_ms = int(time.time() * 1000)
        batch = decode_batch(messages, stream_of_topic=stream_of_topic, now_ms=now_ms)
        triggers, failed = await tagger.process(batch.events)
        if failed:
            raw_of = {(m.topic, m.partition, m.offset): m for m in messages}
            for decoded, reason in failed:
                raw = raw_of[(topic_of_stream[decoded.source], decoded.partition, decoded.offset)]
                log.error(
                    "engine failed on %s[%d]@%d: %s", raw.topic, raw.partition, raw.offset, reason
                )
                batch.reject(raw, InvalidEvent(reason, "engine_error"), now_ms=now_ms)
        deliveries = [
            await dead_letters.send(key=raw.key, value=encode(letter))
            for raw, letter in batch.rejected
        ]
        for delivery in deliveries:
            await delivery  # a dead letter must land before its offset is committed
        for _, letter in batch.rejected:
            rejected[letter.topic] += 1
            metrics_.events_rejected.labels(letter.topic, letter.error_kind).inc()
            log.warning(
                "dead-lettered %s[%d]@%d: %s",
                letter.topic,
                letter.partition,
                letter.offset,
                letter.reason,
            )
        for source, count in Counter(d.source for d in batch.events).items():
            consumed[source] += count
            metrics_.events_consumed.labels(topic_of_stream[source]).inc(count)
        metrics_.batch_size.observe(len(events))
        return triggers

    @app.timer(interval=settings.tick_interval_s)  # type: ignore[untyped-decorator]
    async def fire_deadlines() -> None:
        if app.rebalancing:
            return
        await tagger.confirm(await tagger.tick())
        if tagger.dirty and time.time() - tagger.last_flush >= settings.commit_interval_s:
            await tagger.flush()

    @app.timer(interval=10.0)  # type: ignore[untyped-decorator]
    async def log_counters() -> None:
        if consumed or rejected:
            log.info(
                "events valid %s; rejected %s; redis queued %d",
                dict(sorted(consumed.items())),
                dict(sorted(rejected.items())),
                redis_sink.queued_users,
            )

    lookup = AsyncTagClient(
        redis_url=settings.redis_url,
        prefix=settings.redis_key_prefix,
        timeout_ms=max(settings.redis_timeout_ms, 200),
    )

    @app.page("/v1/users/{user_id}/tags")
    class UserTagsView(View):
        async def get(self, request: Request, user_id: str) -> Response:
            failed: list[Any] = []
            tags = await lookup.tags(user_id, default=failed)
            if tags is failed:
                return self.json({"user_id": user_id, "error": "tag store unavailable"}, status=503)
            return self.json({"user_id": user_id, "tags": tags})

    @app.page("/metrics")
    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(metrics_.render(), content_type="text/plain; version=0.0.4")

    @app.page("/health")
    class HealthView(View):
        async def get(self, request: Request) -> Response:
            return self.json(
                {
                    "status": "ok",
                    "app_id": settings.app_id,
                    "partitions": sorted(tagger.partitions),
                    "rebalancing": bool(app.rebalancing),
                }
            )

    cast(Any, app).streamtags_tagger = tagger
    _ = (tag_users, fire_deadlines, log_counters, UserTagsView, MetricsView, HealthView)
    return app


def run_worker(settings: Settings) -> None:
    """Run a worker in the foreground until it is stopped (Ctrl-C or SIGTERM).

    Raises :class:`~streamtags.rulebook.RuleError` for a broken rule and
    :class:`~streamtags.topics.TopicMismatch` for a wrongly partitioned topic,
    before anything is consumed.
    """
    load_rules(settings.rules_dir, time_scale=settings.time_scale)  # fail at load, not mid-stream
    asyncio.run(
        ensure_topics(
            [*settings.inputs.by_stream().values(), *dataclasses.astuple(settings.outputs)],
            bootstrap=settings.kafka_bootstrap,
            partitions=settings.partitions,
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
