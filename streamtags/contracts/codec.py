"""The one place bytes become events and records become bytes.

Input: :func:`decode_event` turns a raw message value into a validated
event or raises :class:`InvalidEvent` with a readable reason. It never
raises anything else, whatever the bytes: malformed UTF-8, lone surrogates,
NaN and infinities, integers past 64 bits and nesting past orjson's depth
limit are all ``not_json``; everything the contract rejects is ``invalid``.

Output: :func:`encode` turns any output record into compact JSON bytes, and
:func:`dead_letter` builds the record for a rejected message, small enough
for the producer to send whatever the message's size.
"""

from __future__ import annotations

import base64
import hashlib
import time

import orjson
from pydantic import BaseModel, ValidationError

from streamtags.contracts.events import STREAMS, Event
from streamtags.contracts.fast_path import prevalidated
from streamtags.contracts.records import DeadLetter, iso_ms
from streamtags.errors import InvalidEvent

__all__ = [
    "KEPT_KEY_BYTES",
    "MAX_REASON_CHARS",
    "MAX_RECORD_BYTES",
    "UNEXPECTED",
    "dead_letter",
    "decode_event",
    "encode",
]

#: The largest record the producer sends, bytes (Kafka's default ``max.request.size``
#: is 1 MiB; this leaves room for the record's key, headers and framing).
MAX_RECORD_BYTES = 1_000_000
#: How much of an oversized message key a dead letter keeps, bytes.
KEPT_KEY_BYTES = 1024
#: The longest reason a dead letter carries, characters.
MAX_REASON_CHARS = 2000

#: Said by a rejection that no contract rule explains: a bug in a validator.
UNEXPECTED = "the contract check itself failed"


def _describe(error: ValidationError) -> str:
    parts = []
    for detail in error.errors(include_url=False, include_input=False)[:5]:
        where = ".".join(str(p) for p in detail["loc"]) or "event"
        parts.append(f"{where}: {detail['msg']}")
    extra = error.error_count() - len(parts)
    if extra > 0:
        parts.append(f"and {extra} more")
    return "; ".join(parts)


def decode_event(stream: str, raw: bytes) -> Event:
    """Parse and validate one message value of input ``stream``.

    Raises :class:`InvalidEvent` for anything that is not a valid event, and
    nothing else.
    """
    model = STREAMS[stream]
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"not valid JSON: {exc}", "not_json") from None
    if not isinstance(payload, dict):
        raise InvalidEvent(f"expected a JSON object, got {type(payload).__name__}", "not_object")
    event = prevalidated(model, payload)
    if event is not None:
        return event
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise InvalidEvent(f"invalid {stream} event: {_describe(exc)}", "invalid") from None
    except Exception as exc:  # a validator bug must cost one message, never the batch
        reason = f"invalid {stream} event: {UNEXPECTED} ({type(exc).__name__}); report this"
        raise InvalidEvent(reason, "invalid") from None


def encode(record: BaseModel) -> bytes:
    """Serialise an output record as compact JSON."""
    return orjson.dumps(record.model_dump(mode="json"))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def dead_letter(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes,
    error: InvalidEvent,
    now_ms: int | None = None,
    max_record_bytes: int = MAX_RECORD_BYTES,
) -> DeadLetter:
    """Build the dead-letter record for a rejected message.

    ``now_ms`` is the wall clock, epoch milliseconds (default: now). The
    encoded record stays within ``max_record_bytes``: when the whole value
    would not fit, the key is cut to :data:`KEPT_KEY_BYTES` and the value to
    what fits, marked ``value_truncated``; ``value_bytes`` and
    ``value_sha256`` always describe the whole original value.
    """
    reason = error.reason
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[:MAX_REASON_CHARS] + "... (cut)"
    letter = DeadLetter(
        topic=topic,
        partition=partition,
        offset=offset,
        key_b64=_b64(key) if key is not None else None,
        value_b64=_b64(value),
        reason=reason,
        error_kind=error.kind,
        rejected_at=iso_ms(now_ms if now_ms is not None else int(time.time() * 1000)),
        value_bytes=len(value),
        value_sha256=hashlib.sha256(value).hexdigest(),
    )
    if len(encode(letter)) <= max_record_bytes:
        return letter
    return _cut_to_fit(letter, key, value, max_record_bytes)


def _cut_to_fit(letter: DeadLetter, key: bytes | None, value: bytes, limit: int) -> DeadLetter:
    cut_key = key is not None and len(key) > KEPT_KEY_BYTES
    skeleton = letter.model_copy(
        update={
            "key_b64": _b64(key[:KEPT_KEY_BYTES]) if cut_key and key else letter.key_b64,
            "key_truncated": cut_key,
            "value_b64": "",
            "value_truncated": True,
        }
    )
    room = limit - len(encode(skeleton))
    kept = max(room, 0) // 4 * 3  # base64 spends 4 characters (all ASCII) on 3 bytes
    return skeleton.model_copy(update={"value_b64": _b64(value[:kept])})
