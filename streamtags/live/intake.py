"""One batch of raw input messages through the worker: decode, engine, dead letters, metrics.

The agent hands over raw messages (:class:`~streamtags.contracts.ingest.RawMessage`)
and, per input partition, the ack of those messages. Invalid messages and
events the engine rejects (the tagger) become dead letters with a reason; the acks are
registered with the tagger, whose next flush runs them once the batch's
state, outputs and dead letters are on the broker.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping

from streamtags.contracts.codec import KEPT_KEY_BYTES, MAX_RECORD_BYTES, encode
from streamtags.contracts.ingest import IngestBatch, RawMessage, decode_batch
from streamtags.live.metrics import Metrics
from streamtags.live.tagger import Ack, LiveTagger

__all__ = ["Intake"]

log = logging.getLogger("streamtags.live.intake")


class Intake:
    """Turns batches of raw messages into engine work, dead letters and counts."""

    def __init__(
        self,
        tagger: LiveTagger,
        *,
        stream_of_topic: Mapping[str, str],
        metrics: Metrics,
        max_future_skew_ms: int = 300_000,
        max_record_bytes: int = MAX_RECORD_BYTES,
    ) -> None:
        self.tagger = tagger
        #: how far (ms) an event may be stamped ahead of the worker's wall clock
        self.max_future_skew_ms = max_future_skew_ms
        #: the largest record the producer sends, bytes: dead letters are cut to fit
        self.max_record_bytes = max_record_bytes
        self.stream_of_topic = dict(stream_of_topic)
        self.topic_of_stream = {stream: topic for topic, stream in stream_of_topic.items()}
        self.metrics = metrics
        #: valid events consumed, by stream; messages dead-lettered, by topic
        self.consumed: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()

    async def handle(self, messages: list[RawMessage], *, acks: Mapping[int, Ack]) -> None:
        """Decode, tag and dead-letter one batch; ``acks`` run after the flush covering it."""
        now_ms = self.tagger.now_ms()
        batch = decode_batch(
            messages,
            stream_of_topic=self.stream_of_topic,
            now_ms=now_ms,
            max_future_skew_ms=self.max_future_skew_ms,
            # The record key is the message key, cut to KEPT_KEY_BYTES by the outbox.
            max_record_bytes=self.max_record_bytes - KEPT_KEY_BYTES,
        )
        # Events the engine rejects (too late, a rule bug) it dead-letters itself: they
        # may come out of a user's reorder buffer long after their batch.
        letters = [(raw.key, encode(letter)) for raw, letter in batch.rejected]
        async with self.tagger.batch():
            # Read and admitted under one hold of the gate: a tick between the two saw
            # the batch's streams read (released, caught up, so following the wall clock)
            # without their events, settled users past them, and those events were then
            # dead-lettered too_late (bench/compare.py, about one drain in three).
            self.tagger.note_read(
                (m.partition, self.stream_of_topic[m.topic], m.offset) for m in messages
            )
            receipt = await self.tagger.process(batch.events, acks=acks)
            await self.tagger.settle(receipt, dead_letters=letters)
        self._count(batch, len(messages))

    def _count(self, batch: IngestBatch, size: int) -> None:
        for _, letter in batch.rejected:
            self.rejected[letter.topic] += 1
            self.metrics.events_rejected.labels(letter.topic, letter.error_kind).inc()
            log.warning(
                "dead-lettered %s[%d]@%d: %s",
                letter.topic,
                letter.partition,
                letter.offset,
                letter.reason,
            )
        for source, count in Counter(d.source for d in batch.events).items():
            self.consumed[source] += count
            self.metrics.events_consumed.labels(self.topic_of_stream[source]).inc(count)
        self.metrics.batch_size.observe(size)
