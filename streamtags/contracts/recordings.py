"""Recorded event files: JSON Lines, one input message per line.

A recorded file is JSON Lines: one object per line with a ``stream`` field
(``orders``, ``browse``, ``logins`` or ``accounts``) naming the input
stream; the whole line, as written, is the message value and ``user_id``
is the key. A line of the form ``{"stream": ..., "raw": "..."}`` sends the
raw text as the value instead (for exercising the dead-letter path).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import orjson

from streamtags.contracts.events import STREAMS
from streamtags.errors import RecordingError

__all__ = ["Outgoing", "outgoing_from_line", "read_recording"]


class Outgoing(NamedTuple):
    """One message to produce."""

    stream: str
    key: bytes | None
    value: bytes


def read_recording(path: Path) -> Iterator[Outgoing]:
    """Yield the messages of a recorded JSON Lines file, in file order."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line:
                continue
            yield outgoing_from_line(line, where=f"{path}:{number}")


def outgoing_from_line(line: bytes, *, where: str) -> Outgoing:
    """The message one recorded line stands for."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise RecordingError(f"{where}: not JSON ({exc})") from None
    if not isinstance(record, dict) or record.get("stream") not in STREAMS:
        raise RecordingError(f'{where}: needs a "stream" field, one of {", ".join(STREAMS)}')
    user_id = record.get("user_id")
    key = str(user_id).encode() if user_id is not None else None
    raw = record.get("raw")
    if isinstance(raw, str) and set(record) <= {"stream", "raw", "user_id"}:
        return Outgoing(record["stream"], key, raw.encode())
    return Outgoing(record["stream"], key, line)
