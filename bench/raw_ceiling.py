"""The raw aiokafka ceiling: ``getmany`` plus ``orjson.loads`` of every value, nothing else.

A contestant of ``bench/compare.py``: no consumer group, no commits, no
state; how fast one Python process can read and decode the backlog at all.
The clock starts after the first batch is decoded (its events are not
counted) and stops after the last event, as for every contestant.

    python bench/raw_ceiling.py --topics a,b,c,d --events 200000 --result r.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer

__all__ = ["BATCH_MAX_EVENTS", "drain", "main"]

#: Most events per ``getmany``: the first batch is left out of the timing, and an
#: unbounded one could hold most of a small backlog (aiokafka prefetches per partition).
BATCH_MAX_EVENTS = 2000


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def drain(topics: list[str], *, bootstrap: str, expected: int) -> dict[str, float]:
    """Read and decode ``expected`` messages; timings in wall and CPU seconds."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    processed = 0
    start: tuple[float, float, int] | None = None
    try:
        while processed < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=BATCH_MAX_EVENTS)
            for records in batches.values():
                for record in records:
                    orjson.loads(record.value)
                processed += len(records)
            if start is None and processed:
                start = (time.perf_counter(), _cpu_s(), processed)
        assert start is not None
        return {
            "events_timed": processed - start[2],
            "drain_s": time.perf_counter() - start[0],
            "cpu_s": _cpu_s() - start[1],
        }
    finally:
        await consumer.stop()


def main() -> None:
    """Drain the backlog and write the timings to ``--result`` as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topics", required=True, help="comma-separated input topics")
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()
    result = asyncio.run(
        drain(args.topics.split(","), bootstrap=args.bootstrap, expected=args.events)
    )
    args.result.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
