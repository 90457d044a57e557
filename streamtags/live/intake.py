"""One batch of raw input messages through the worker: decode, engine, dead letters, metrics.

The agent hands over raw messages (:class:`~streamtags.contracts.ingest.RawMessage`)
and, per input partition, the ack of those messages. Invalid messages and
events the engine failed on become dead letters with a reason; the acks are
registered with the tagger, whose next flush runs them once the batch's
state, outputs and dead letters are on the broker.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping

from streamtags.contracts.codec import encode
from streamtags.contracts.ingest import IngestBatch, RawMessage, decode_batch
from streamtags.errors import InvalidEvent
from streamtags.live.metrics import Metrics
from streamtags.live.tagger import Ack, LiveTagger

__all__ = ["Intake"]

log = logging.getLogger("streamtags.live.intake")


class Intake:
    """Turns batches of raw messages into engine work, dead letters and counts."""

    def __init__(
        self, tagger: LiveTagger, *, stream_of_topic: Mapping[str, str], metrics: Metrics
    ) -> None:
        self.tagger = tagger
        self.stream_of_topic = dict(stream_of_topic)
        self.topic_of_stream = {stream: topic for topic, stream in stream_of_topic.items()}
        self.metrics = metrics
        #: valid events consumed, by stream; messages dead-lettered, by topic
        self.consumed: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()

    async def handle(self, messages: list[RawMessage], *, acks: Mapping[int, Ack]) -> None:
        """Decode, tag and dead-letter one batch; ``acks`` run after the flush covering it."""
        now_ms = self.tagger.now_ms()
        batch = decode_batch(messages, stream_of_topic=self.stream_of_topic, now_ms=now_ms)
        receipt = await self.tagger.process(batch.events, acks=acks)
        if receipt.failed:
            raw_of = {(m.topic, m.partition, m.offset): m for m in messages}
            for decoded, reason in receipt.failed:
                topic = self.topic_of_stream[decoded.source]
                raw = raw_of[(topic, decoded.partition, decoded.offset)]
                log.error(
                    "engine failed on %s[%d]@%d: %s", topic, raw.partition, raw.offset, reason
                )
                batch.reject(raw, InvalidEvent(reason, "engine_error"), now_ms=now_ms)
        letters = [(raw.key, encode(letter)) for raw, letter in batch.rejected]
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
