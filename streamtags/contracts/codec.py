"""The one place bytes become events and records become bytes.

Input: :func:`decode_event` turns a raw message value into a validated
event or raises :class:`InvalidEvent` with a readable reason. It never
raises anything else, whatever the bytes.

Output: :func:`encode` turns any output record into compact JSON bytes.
"""

from __future__ import annotations

import base64
import time

import orjson
from pydantic import BaseModel, ValidationError

from streamtags.contracts.events import STREAMS, Event
from streamtags.contracts.records import DeadLetter, iso_ms
from streamtags.errors import InvalidEvent

__all__ = ["dead_letter", "decode_event", "encode"]


def _describe(error: ValidationError) -> str:
    parts = []
    for detail in error.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in detail["loc"]) or "event"
        parts.append(f"{where}: {detail['msg']}")
    extra = error.error_count() - len(parts)
    if extra > 0:
        parts.append(f"and {extra} more")
    return "; ".join(parts)


def decode_event(stream: str, raw: bytes) -> Event:
    """Parse and validate one message value of input ``stream``.

    Raises :class:`InvalidEvent` for anything that is not a valid event.
    """
    model = STREAMS[stream]
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"not valid JSON: {exc}", "not_json") from None
    if not isinstance(payload, dict):
        raise InvalidEvent(f"expected a JSON object, got {type(payload).__name__}", "not_object")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise InvalidEvent(f"invalid {stream} event: {_describe(exc)}", "invalid") from None
    except (ValueError, TypeError, RecursionError) as exc:  # defensive: validators
        raise InvalidEvent(f"invalid {stream} event: {exc}", "invalid") from None


def encode(record: BaseModel) -> bytes:
    """Serialise an output record as compact JSON."""
    return orjson.dumps(record.model_dump(mode="json"))


def dead_letter(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes,
    error: InvalidEvent,
    now_ms: int | None = None,
) -> DeadLetter:
    """Build the dead-letter record for a rejected message."""
    return DeadLetter(
        topic=topic,
        partition=partition,
        offset=offset,
        key_b64=base64.b64encode(key).decode() if key is not None else None,
        value_b64=base64.b64encode(value).decode(),
        reason=error.reason,
        error_kind=error.kind,
        rejected_at=iso_ms(now_ms if now_ms is not None else int(time.time() * 1000)),
    )
