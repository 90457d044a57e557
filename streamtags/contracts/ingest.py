"""Ingest: raw Kafka messages in, validated events and dead letters out.

Pure and synchronous: the Faust agent hands over a batch of raw messages
(topic, partition, offset, key, value) and gets back the valid events, in
order, and a dead-letter record for every message that broke the
contract. Nothing here can raise on bad input.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from streamtags.contracts.codec import dead_letter, decode_event
from streamtags.contracts.events import Event
from streamtags.contracts.records import DeadLetter
from streamtags.errors import InvalidEvent

__all__ = ["Decoded", "IngestBatch", "RawMessage", "decode_batch"]


class RawMessage(NamedTuple):
    """One message as Kafka delivered it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


class Decoded(NamedTuple):
    """A valid event with the position it was read from."""

    partition: int
    source: str
    offset: int
    event: Event


@dataclass(slots=True)
class IngestBatch:
    """The outcome of decoding one batch."""

    events: list[Decoded] = field(default_factory=list)
    rejected: list[tuple[RawMessage, DeadLetter]] = field(default_factory=list)

    def reject(self, message: RawMessage, error: InvalidEvent, *, now_ms: int) -> None:
        """Record ``message`` for the dead-letter topic, with why."""
        letter = dead_letter(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            error=error,
            now_ms=now_ms,
        )
        self.rejected.append((message, letter))


def decode_batch(
    messages: Iterable[RawMessage], *, stream_of_topic: Mapping[str, str], now_ms: int
) -> IngestBatch:
    """Decode every message; invalid ones become dead letters with a reason."""
    batch = IngestBatch()
    for message in messages:
        stream = stream_of_topic[message.topic]
        try:
            event = decode_event(stream, message.value)
        except InvalidEvent as error:
            batch.reject(message, error, now_ms=now_ms)
            continue
        batch.events.append(Decoded(message.partition, stream, message.offset, event))
    return batch
