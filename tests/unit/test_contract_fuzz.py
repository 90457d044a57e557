"""Decoding is total: ten thousand hostile messages, each a valid event or an InvalidEvent.

The messages come from a seeded generator (the same ones on every run): good
events of every stream with fields replaced by hostile values (tz data
directories, 900 KB zone ids, control characters, reserved user-id prefixes,
numbers past 64 bits, deep nesting), raw tokens JSON forbids (NaN,
infinities, lone surrogates, invalid UTF-8), truncated and bit-flipped bytes,
and random bytes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import orjson

from streamtags.contracts.codec import UNEXPECTED, decode_event
from streamtags.contracts.events import STREAMS
from streamtags.errors import InvalidEvent
from tests.unit.test_codec import GOOD

FIELDS = sorted({name for doc in GOOD.values() for name in doc} | {"sku", "quantity", "brand"})

RAW = "@@raw@@"
RAW_TOKENS = [
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e400",
    b"-1e400",
    b"1e-400",
    b"123456789012345678901234567890",
    b"-123456789012345678901234567890",
    b'"\\ud800"',
    b'"\\udc00\\ud800"',
    b'"\xff\xfe"',
    b'"\xc0\xaf"',
    b'"\xed\xa0\x80"',
    b"1.0e12",
    b"0.0",
    b"-0",
    b"1795341600000.0",
    b"1795341600000.5",
    b"00",
    b"01",
    b"[" * 2000 + b"]" * 2000,
    b"[" * 1023 + b"]" * 1023,
    b'{"a":' * 600 + b"1" + b"}" * 600,
]

HOSTILE: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    3.0,
    2**31,
    2**63 - 1,
    2**64 - 1,
    -(2**63),
    1e12,
    1e12 + 1,
    1e308,
    -1e308,
    1.5,
    0.1,
    "",
    " ",
    "\x00",
    "\n",
    "u1\n",
    " u1",
    "a" * 257,
    "a" * 1025,
    "x" * 100_000,
    "2500",
    "25.5",
    "true",
    "Europe",
    "Europe/",
    "America",
    "Asia",
    "Etc",
    "../../etc/passwd",
    "/etc/passwd",
    "posix",
    "right",
    "posixrules",
    "Asia/Shanghai",
    "UTC",
    "utc",
    "Z" * 300,
    "A/" * 200,
    "Europe/../Europe/Paris",
    "Europe\x00Paris",
    "fe80::1%eth0",
    "fe80::1%" + "x" * 900_000,
    "::ffff:1.2.3.4",
    "::FFFF:1.2.3.4",
    "2001:DB8::1",
    "2001:0db8:0000:0000:0000:0000:0000:0001",
    "999.1.1.1",
    "1.2.3.4",
    "1.2.3.04",
    "::",
    "1.2.3.4/32",
    "2026-11-22T10:00:00Z",
    "2026-11-22t10:00:00z",
    "2026-02-29T00:00:00Z",
    "2028-02-29T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "2026-11-22T24:00:00Z",
    "2026-11-22T23:59:60Z",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00+23:59",
    "2000-01-01T00:00:00+14:00",
    "2099-12-31T23:59:59-12:00",
    "2026-11-22T10:00:00.1234567890123Z",
    "2026-11-22T10:00:00.123Z",
    "2026-11-22",
    "2026-11-22 10:00:00Z",
    "20261122T100000Z",
    "2026-W47-7T10:00:00Z",
    "2026-11-22T10:00:00+08",
    "2026-11-22T10:00:00Z\n",
    "٢٠٢٦-11-22T10:00:00Z",
    "__faust",
    "__faust_offset",
    "\x00clock:1",
    "u{1}",
    "{",
    "}",
    "ü",
    "\u202e",
    "\ufeff",
    "😀" * 100,
    "CNY\n",
    "cny",
    "SGP",
    "paid",
    "failed",
    "card_added",
    "card_removed",
    "search",
    "success",
    "top_up",
    [],
    [1, 2],
    {},
    {"a": 1},
    [{"sku": "x"}] * 1001,
    [{"sku": "x", "quantity": 2**40}],
    [{"sku": "x", "unit_price": "2"}],
    [None],
    [{"sku": ""}],
    [{"sku": "x", "quantity": True}],
    [[[[[[[]]]]]]],
]


def _mutate(rng: random.Random, doc: dict[str, Any]) -> bytes:
    for _ in range(rng.randint(1, 4)):
        roll = rng.random()
        name = rng.choice(FIELDS) if rng.random() < 0.9 else f"extra{rng.randint(0, 9)}"
        if roll < 0.6:
            doc[name] = rng.choice(HOSTILE)
        elif roll < 0.75:
            doc.pop(rng.choice(list(doc)) if doc else name, None)
        else:
            doc[name] = RAW
    text = orjson.dumps(doc)
    while b'"' + RAW.encode() + b'"' in text:
        text = text.replace(b'"' + RAW.encode() + b'"', rng.choice(RAW_TOKENS), 1)
    roll = rng.random()
    if roll < 0.05:
        text = text[: rng.randint(0, len(text))]
    elif roll < 0.1 and text:
        spot = rng.randrange(len(text))
        text = text[:spot] + bytes([rng.randrange(256)]) + text[spot + 1 :]
    elif roll < 0.12:
        text = rng.choice([b"[", b'{"a":']) * rng.choice([10, 1100]) + text
    return text


def hostile_inputs(seed: int, count: int) -> Iterator[tuple[str, bytes]]:
    """``count`` (stream, message value) pairs, the same ones for the same seed."""
    rng = random.Random(seed)
    streams = list(GOOD)
    for _ in range(count):
        stream = rng.choice(streams)
        if rng.random() < 0.03:
            yield stream, bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
        else:
            base = GOOD[stream] if rng.random() < 0.8 else GOOD[rng.choice(streams)]
            yield stream, _mutate(rng, dict(base))


def test_ten_thousand_hostile_messages_decode_or_are_rejected_with_a_reason() -> None:
    outcomes = {"valid": 0, "invalid": 0}
    for stream, raw in hostile_inputs(seed=20261123, count=10_000):
        try:
            event = decode_event(stream, raw)
        except InvalidEvent as error:
            assert error.reason, raw[:200]
            assert UNEXPECTED not in error.reason, (error.reason, raw[:200])
            assert len(error.reason) < 2000, raw[:200]
            outcomes["invalid"] += 1
        else:
            assert isinstance(event, STREAMS[stream])
            outcomes["valid"] += 1
    # the generator must keep reaching both outcomes, or it tests nothing
    assert min(outcomes.values()) > 1000, outcomes
