"""The Faust worker: a thin shell that moves bytes in and out of the engine.

One agent reads all four input topics (raw bytes, never Faust-decoded) in
batches, decodes them (:mod:`streamtags.ingest`), sends rejects to the
dead-letter topic and awaits their delivery before the batch is acked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from typing import Any

import faust
from faust.web import Request, Response, View

from streamtags.codec import encode
from streamtags.ingest import RawMessage, decode_batch
from streamtags.metrics import Metrics
from streamtags.settings import Settings
from streamtags.topics import ensure_topics

__all__ = ["create_app", "run_worker"]

log = logging.getLogger("streamtags.worker")

#: Most events taken from the stream per batch, and the longest wait to fill one.
BATCH_MAX_EVENTS = 2000
BATCH_WITHIN_S = 0.02


def create_app(settings: Settings, *, metrics: Metrics | None = None) -> faust.App:
    """Build the Faust app for ``settings``; nothing connects until it runs."""
    metrics_: Metrics = metrics or Metrics()
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        broker_commit_interval=settings.commit_interval_s,
        consumer_auto_offset_reset="earliest",
        web_enabled=True,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        # Tables are served from Redis, not from worker memory.
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
        # Values stay raw bytes: Faust must never decode them (FAUST-NOTES.md).
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
    consumed: Counter[str] = Counter()
    rejected: Counter[str] = Counter()

    @app.agent(inputs, concurrency=1)
    async def ingest(stream: Any) -> None:
        async for events in stream.take_events(BATCH_MAX_EVENTS, within=BATCH_WITHIN_S):
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
            batch = decode_batch(
                messages, stream_of_topic=stream_of_topic, now_ms=int(time.time() * 1000)
            )
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

    @app.timer(interval=10.0)  # type: ignore[untyped-decorator]
    async def log_counters() -> None:
        if consumed or rejected:
            log.info(
                "events valid %s; rejected %s",
                dict(sorted(consumed.items())),
                dict(sorted(rejected.items())),
            )

    @app.page("/metrics")
    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(metrics_.render(), content_type="text/plain; version=0.0.4")

    @app.page("/health")
    class HealthView(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok", "app_id": settings.app_id})

    _ = (ingest, log_counters, MetricsView, HealthView)
    return app


def run_worker(settings: Settings) -> None:
    """Run a worker in the foreground until it is stopped (Ctrl-C or SIGTERM)."""
    asyncio.run(
        ensure_topics(
            [*settings.inputs.by_stream().values(), *dataclasses.astuple(settings.outputs)],
            bootstrap=settings.kafka_bootstrap,
            partitions=settings.partitions,
            replication_factor=settings.replication_factor,
        )
    )
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level, override_logging=True)
    worker.execute_from_commandline()
