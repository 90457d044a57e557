"""Decoding throughput: raw Kafka messages of the four streams through ``decode_batch``.

The events are ``bench/engine.py``'s mix (72 % browse, 12 % orders, 13 %
logins, 3 % accounts), serialised as a producer would: compact JSON of the
fields set, ``ts`` as epoch milliseconds (half), RFC 3339 UTC with
milliseconds (four in ten) or RFC 3339 with a ``+08:00`` offset. The second
run mixes in a share of invalid messages (bad JSON, missing or mistyped
fields, wrong keys, future times). The collector is tuned as in the worker.
Prints events/s and microseconds per
message for each run (best of three) and per stream, and writes
bench/results/decode.json. The live worker's budget is ~30,000 events/s per
process all-in, so decoding should cost a few microseconds per event.

    .venv/bin/python bench/decode.py [--messages 200000] [--invalid-share 0.05]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.engine import GC_THRESHOLDS, generate  # noqa: E402
from streamtags.contracts.codec import decode_event  # noqa: E402
from streamtags.contracts.ingest import RawMessage, decode_batch  # noqa: E402
from streamtags.contracts.records import iso_ms  # noqa: E402

__all__ = ["invalid_messages", "main", "valid_messages"]

TOPIC_OF_STREAM = {stream: f"in.{stream}" for stream in ("orders", "browse", "logins", "accounts")}
STREAM_OF_TOPIC = {topic: stream for stream, topic in TOPIC_OF_STREAM.items()}
#: ``+08:00`` in milliseconds, for the offset spelling of ``ts``
EIGHT_HOURS_MS = 8 * 3600 * 1000
#: messages handed to ``decode_batch`` at once, as the live intake does
BATCH = 1000


def _rfc3339_plus_eight(ts_ms: int) -> str:
    return iso_ms(ts_ms + EIGHT_HOURS_MS)[:-1] + "+08:00"


def valid_messages(count: int, seed: int = 7) -> list[RawMessage]:
    """``count`` valid messages, keyed by user id, with three spellings of ``ts``."""
    rng = random.Random(seed)
    messages = []
    for offset, decoded in enumerate(generate(count, users=100_000, seed=seed)):
        body: dict[str, Any] = decoded.event.model_dump(exclude_none=True)
        roll = rng.random()
        if roll < 0.4:
            body["ts"] = iso_ms(body["ts"])
        elif roll < 0.5:
            body["ts"] = _rfc3339_plus_eight(body["ts"])
        topic = TOPIC_OF_STREAM[decoded.source]
        key = decoded.event.user_id.encode()
        messages.append(RawMessage(topic, 0, offset, key, orjson.dumps(body)))
    return messages


def _spoil(rng: random.Random, message: RawMessage) -> RawMessage:
    """The same message broken one way: each way hits another rejection."""
    body = orjson.loads(message.value)
    value = message.value
    key = message.key
    way = rng.randrange(6)
    if way == 0:
        value = value[: len(value) // 2]  # not_json
    elif way == 1:
        del body["event_id"]  # invalid: a required field
    elif way == 2:
        body["ts"] = str(body["ts"]) + "x"  # invalid: a bad time
    elif way == 3:
        body["user_id"] = "user one"  # invalid: a space in an id
    elif way == 4:
        key = b"someone-else"  # wrong_key
    else:
        body["ts"] = 4_000_000_000_000  # future_timestamp
    if way in (1, 2, 3, 5):
        value = orjson.dumps(body)
    return message._replace(key=key, value=value)


def invalid_messages(valid: list[RawMessage], share: float, seed: int = 11) -> list[RawMessage]:
    """``valid`` with ``share`` of the messages spoiled (see :func:`_spoil`)."""
    rng = random.Random(seed)
    return [_spoil(rng, m) if rng.random() < share else m for m in valid]


def _time_batches(messages: list[RawMessage], now_ms: int) -> tuple[float, int]:
    started = time.perf_counter()
    accepted = 0
    for begin in range(0, len(messages), BATCH):
        batch = decode_batch(
            messages[begin : begin + BATCH], stream_of_topic=STREAM_OF_TOPIC, now_ms=now_ms
        )
        accepted += len(batch.events)
    return time.perf_counter() - started, accepted


def _best_of(runs: int, measure: Callable[[], tuple[float, int]]) -> tuple[float, int]:
    results = [measure() for _ in range(runs)]
    return min(results)


def _per_stream(messages: list[RawMessage], runs: int) -> dict[str, float]:
    """Microseconds per valid event of ``decode_event`` alone, per stream."""
    out = {}
    for stream, topic in TOPIC_OF_STREAM.items():
        values = [m.value for m in messages if m.topic == topic]

        def measure(values: list[bytes] = values, stream: str = stream) -> tuple[float, int]:
            started = time.perf_counter()
            for value in values:
                decode_event(stream, value)
            return time.perf_counter() - started, len(values)

        elapsed, count = _best_of(runs, measure)
        out[stream] = round(elapsed / count * 1e6, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--invalid-share", type=float, default=0.05)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "decode.json"))
    args = parser.parse_args()

    print(f"building {args.messages:,} messages ...", flush=True)
    valid = valid_messages(args.messages)
    mixed = invalid_messages(valid, args.invalid_share)
    now_ms = int(time.time() * 1000)
    gc.collect()
    gc.freeze()  # the prepared messages are not garbage; keep the collector off them
    gc.set_threshold(*GC_THRESHOLDS)  # as the worker does (streamtags.live.app)
    result: dict[str, Any] = {"messages": len(valid), "invalid_share": args.invalid_share}
    for name, messages in (("valid", valid), ("mixed", mixed)):
        elapsed, accepted = _best_of(args.runs, partial(_time_batches, messages, now_ms))
        result[name] = {
            "accepted": accepted,
            "seconds": round(elapsed, 3),
            "events_per_s": round(len(messages) / elapsed),
            "us_per_message": round(elapsed / len(messages) * 1e6, 2),
        }
        print(
            f"{name:>8}: {result[name]['events_per_s']:>9,} messages/s  "
            f"{result[name]['us_per_message']:>6} us/message  ({accepted:,} accepted)"
        )
    result["decode_event_us_per_stream"] = _per_stream(valid, args.runs)
    print("decode_event, us/event:", result["decode_event_us_per_stream"])
    result["python"] = sys.version.split()[0]
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
