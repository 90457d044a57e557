"""Ingest: raw Kafka messages in, validated events and dead letters out.

Pure and synchronous: the Faust agent hands over a batch of raw messages
(topic, partition, offset, key, value) and gets back the valid events, in
order, and a dead-letter record for every message that broke the
contract. Nothing here can raise on bad input.

Besides the event contract, ingest enforces two rules about delivery:

- **key discipline**: a message's key must be the UTF-8 bytes of its event's
  ``user_id`` (Kafka partitions by key, so any other key puts the user's
  events on a partition that does not hold the user's state); a message
  with another key or none is dead-lettered as ``wrong_key``;
- **clock skew**: an event stamped more than ``max_future_skew_ms`` ahead of
  the worker's wall clock would drag the partition's event-time clock into
  the future and fire every deadline early; it is dead-lettered as
  ``future_timestamp``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from streamtags.contracts.codec import MAX_RECORD_BYTES, dead_letter, decode_event
from streamtags.contracts.events import Event
from streamtags.contracts.records import DeadLetter, iso_ms
from streamtags.contracts.values import shown
from streamtags.errors import InvalidEvent

__all__ = ["DEFAULT_MAX_FUTURE_SKEW_MS", "Decoded", "IngestBatch", "RawMessage", "decode_batch"]


class RawMessage(NamedTuple):
    """One message as Kafka delivered it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


class Decoded(NamedTuple):
    """A valid event with the position it was read from, and its bytes as sent."""

    partition: int
    source: str
    offset: int
    event: Event
    #: the message value as read (empty when the event was built in memory); an event
    #: waiting in a user's reorder buffer is stored as these bytes
    raw: bytes = b""


@dataclass(slots=True)
class IngestBatch:
    """The outcome of decoding one batch."""

    events: list[Decoded] = field(default_factory=list)
    rejected: list[tuple[RawMessage, DeadLetter]] = field(default_factory=list)
    #: the producer's record size limit, bytes; larger dead letters are cut to fit
    max_record_bytes: int = MAX_RECORD_BYTES

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
            max_record_bytes=self.max_record_bytes,
        )
        self.rejected.append((message, letter))


#: How far ahead of the worker's wall clock an event may be stamped by default, ms.
DEFAULT_MAX_FUTURE_SKEW_MS = 300_000


def decode_batch(
    messages: Iterable[RawMessage],
    *,
    stream_of_topic: Mapping[str, str],
    now_ms: int,
    max_future_skew_ms: int | None = DEFAULT_MAX_FUTURE_SKEW_MS,
    check_keys: bool = True,
    max_record_bytes: int = MAX_RECORD_BYTES,
) -> IngestBatch:
    """Decode every message; rejected ones become dead letters with a reason.

    ``now_ms`` is the worker's wall clock, epoch milliseconds UTC. A message
    is rejected, in this order, when its value breaks the contract
    (``not_json``, ``not_object``, ``invalid``), when ``check_keys`` and its
    key is not its ``user_id`` in UTF-8 (``wrong_key``), or when its event
    time is more than ``max_future_skew_ms`` after ``now_ms``
    (``future_timestamp``; ``None`` turns the check off). Dead letters stay
    within ``max_record_bytes`` (see :func:`~streamtags.contracts.codec.dead_letter`).
    """
    batch = IngestBatch(max_record_bytes=max_record_bytes)
    accept = batch.events.append
    for message in messages:
        topic, partition, offset, key, value = message
        stream = stream_of_topic[topic]
        try:
            event = decode_event(stream, value)
            # the checks' functions explain a failure; a passing message costs a compare each
            if check_keys and key != event.user_id.encode():
                _check_key(key, event)
            if max_future_skew_ms is not None and event.ts - now_ms > max_future_skew_ms:
                _check_not_future(event, now_ms=now_ms, max_future_skew_ms=max_future_skew_ms)
        except InvalidEvent as error:
            batch.reject(message, error, now_ms=now_ms)
            continue
        accept(Decoded(partition, stream, offset, event, value))
    return batch


def _check_key(key: bytes | None, event: Event) -> None:
    expected = event.user_id.encode()
    if key is None:
        raise InvalidEvent(
            f"the message has no key; it must be the user_id {shown(event.user_id)}", "wrong_key"
        )
    if bytes(key) != expected:
        raise InvalidEvent(
            f"the message key {shown(bytes(key))} is not the user_id {shown(event.user_id)}",
            "wrong_key",
        )


def _check_not_future(event: Event, *, now_ms: int, max_future_skew_ms: int) -> None:
    ahead_ms = event.ts - now_ms
    if ahead_ms > max_future_skew_ms:
        raise InvalidEvent(
            f"ts {iso_ms(event.ts)} is {ahead_ms} ms ahead of the worker's clock "
            f"({iso_ms(now_ms)}); at most {max_future_skew_ms} ms is allowed",
            "future_timestamp",
        )
