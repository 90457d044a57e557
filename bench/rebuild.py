"""A partition's rebuild on assignment, with a million users in a RocksDB store.

Fills one partition of a RocksDB-backed Faust table (the worker's own
``TableStore`` and RocksDB options) with N user states made by the engine
from realistic traffic (``bench/engine.py``'s mix), some of them still busy
(a live tag, an armed deadline or a waiting event) and the rest quiet; then
times ``LiveTagger.assign`` while a watchdog task sleeps 10 ms at a time and
records how late it wakes. The longest late wake-up is the longest stretch
the rebuild held the event loop: it must stay far below the consumer's
heartbeat interval (3 s). The idle sweep, which reads the same store, is timed
the same way.

Prints the numbers and writes bench/results/rebuild.json.

    .venv/bin/python bench/rebuild.py [--users 1000000] [--busy-share 0.25]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import faust  # noqa: E402
import orjson  # noqa: E402

from bench.engine import GC_THRESHOLDS, generate  # noqa: E402
from streamtags.engine.partition import Engine  # noqa: E402
from streamtags.engine.state import StateOutline  # noqa: E402
from streamtags.live.app import ROCKSDB_OPTIONS  # noqa: E402
from streamtags.live.faust_internals import rocks_partition_db  # noqa: E402
from streamtags.live.metrics import Metrics  # noqa: E402
from streamtags.live.table_store import TableStore  # noqa: E402
from streamtags.live.tagger import (  # noqa: E402
    CHUNK_USERS,
    CLOCK_KEY_PREFIX,
    REBUILD_SLICE_S,
    LiveTagger,
    Senders,
)
from streamtags.live.twins import MemoryTagSink, MemoryTopic, MemoryTriggerLedger  # noqa: E402
from streamtags.rulebook.loader import load_rules  # noqa: E402

STREAMS = ("orders", "browse", "logins", "accounts")
#: How long the watchdog sleeps between wake-ups, seconds.
WATCH_INTERVAL_S = 0.01
#: The consumer's heartbeat interval the longest stretch is compared with, seconds.
HEARTBEAT_S = 3.0


def templates(engine: Engine, *, users: int, events: int) -> tuple[list[bytes], list[bytes], bytes]:
    """State bytes of ``users`` users after ``events`` events, split into busy and quiet
    (the quiet ones taken after time has moved on 200 days), and the partition's clock."""
    part = engine.partition()
    batch = generate(events, users)
    for begin in range(0, len(batch), 1000):
        chunk = batch[begin : begin + 1000]
        part.process(chunk, chunk[-1].event.ts)
    fresh = [part.dump(user) for user in list(part.states)]
    busy = [data for data in fresh if StateOutline.read(data).busy]
    later_ms = batch[-1].event.ts + 200 * 86_400_000
    part.clock.observe("browse", later_ms, later_ms)
    part.advance(later_ms + engine.lateness_ms + 1)
    aged = [part.dump(user) for user in list(part.states)]
    quiet = [data for data in aged if not StateOutline.read(data).busy]
    return busy, quiet, orjson.dumps(part.clock.to_list())


def fill(store: TableStore, *, users: int, busy_share: float, seed: int = 7) -> dict[str, Any]:
    """Write ``users`` states into partition 0 of ``store``; returns what was written."""
    engine = Engine(load_rules(ROOT / "rules"), lateness_ms=10_000)
    busy, quiet, clock = templates(engine, users=20_000, events=200_000)
    rng = random.Random(seed)
    db = rocks_partition_db(store.table.data, 0)
    assert db is not None, "the bench needs the RocksDB store"
    written = stored_bytes = busy_users = 0
    for i in range(users):
        is_busy = rng.random() < busy_share
        data = rng.choice(busy if is_busy else quiet)
        db.put(f"user-{i:07d}".encode(), data)
        written += 1
        busy_users += is_busy
        stored_bytes += len(data)
    db.put(CLOCK_KEY_PREFIX + b"0", clock)
    return {
        "users": written,
        "busy_users": busy_users,
        "state_bytes_mean": round(stored_bytes / written, 1),
        "templates": {"busy": len(busy), "quiet": len(quiet)},
    }


class GcPauses:
    """The longest garbage collection and its generation, while installed."""

    def __init__(self) -> None:
        self.longest_s = 0.0
        self.generation = -1
        self._started = 0.0
        #: CPU seconds of the whole process (all threads) during the longest stretch
        self.cpu_in_longest_s = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        if took > self.longest_s:
            self.longest_s, self.generation = took, info["generation"]


async def watched(work: Awaitable[Any]) -> tuple[float, float, int, GcPauses]:
    """(total seconds, the longest stretch the loop was held in seconds, wake-ups, the
    longest garbage collection meanwhile)."""
    longest = longest_cpu = 0.0
    wakeups = 0
    done = False
    pauses = GcPauses()
    gc.callbacks.append(pauses)

    async def watchdog() -> None:
        nonlocal longest, longest_cpu, wakeups
        while not done:
            before, before_cpu = time.perf_counter(), time.process_time()
            await asyncio.sleep(WATCH_INTERVAL_S)
            stretch = time.perf_counter() - before - WATCH_INTERVAL_S
            if stretch > longest:
                longest, longest_cpu = stretch, time.process_time() - before_cpu
            wakeups += 1

    watching = asyncio.create_task(watchdog())
    await asyncio.sleep(0)
    started = time.perf_counter()
    await work
    total = time.perf_counter() - started
    done = True
    await watching
    gc.callbacks.remove(pauses)
    pauses.cpu_in_longest_s = longest_cpu
    return total, longest, wakeups, pauses


def tagger_on(store: TableStore) -> LiveTagger:
    """A tagger over ``store`` with in-memory outputs (the rebuild sends nothing)."""
    topics = [MemoryTopic(name) for name in ("tags", "risk", "triggers", "dead")]
    return LiveTagger(
        Engine(load_rules(ROOT / "rules"), lateness_ms=10_000),
        store,
        senders=Senders(*topics),
        sink=MemoryTagSink(),
        guard=MemoryTriggerLedger(),
        metrics=Metrics(),
        commit_interval_s=1.0,
        topic_of_stream={stream: stream for stream in STREAMS},
    )


async def measure(users: int, busy_share: float, datadir: Path) -> dict[str, Any]:
    app = faust.App(
        "bench-rebuild", broker="kafka://127.0.0.1:9", store="rocksdb://", datadir=str(datadir)
    )
    table = app.Table(
        "state", key_type=bytes, value_type=bytes, partitions=1, options=dict(ROCKSDB_OPTIONS)
    )
    store = TableStore(table, partitions=1)
    print(f"filling RocksDB with {users:,} users ({busy_share:.0%} busy) ...", flush=True)
    filled_at = time.perf_counter()
    result = fill(store, users=users, busy_share=busy_share)
    result["fill_seconds"] = round(time.perf_counter() - filled_at, 1)
    gc.collect()
    tagger = tagger_on(store)
    total, longest, wakeups, pauses = await watched(tagger.assign([0]))
    result["rebuild"] = {
        "seconds": round(total, 2),
        "us_per_user": round(total / users * 1e6, 2),
        "longest_blocking_ms": round(longest * 1000, 1),
        "process_cpu_in_longest_ms": round(pauses.cpu_in_longest_s * 1000, 1),
        "longest_gc_ms": round(pauses.longest_s * 1000, 1),
        "longest_gc_generation": pauses.generation,
        "watchdog_wakeups": wakeups,
    }
    tagger.expect_backlog({(0, stream): (0, 0) for stream in STREAMS})
    total, longest, wakeups, pauses = await watched(tagger.sweep())
    result["idle_sweep"] = {
        "seconds": round(total, 2),
        "longest_blocking_ms": round(longest * 1000, 1),
        "longest_gc_ms": round(pauses.longest_s * 1000, 1),
        "watchdog_wakeups": wakeups,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--busy-share", type=float, nargs="+", default=[0.25, 1.0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "rebuild.json"))
    args = parser.parse_args()
    gc.set_threshold(*GC_THRESHOLDS)  # as the worker does
    runs = []
    for share in args.busy_share:
        with tempfile.TemporaryDirectory(prefix="streamtags-rebuild-") as datadir:
            run = asyncio.run(measure(args.users, share, Path(datadir)))
        run["busy_share"] = share
        runs.append(run)
        rebuild, sweep = run["rebuild"], run["idle_sweep"]
        print(
            f"{run['users']:,} users ({run['busy_users']:,} busy, {run['state_bytes_mean']} B "
            f"mean): rebuild {rebuild['seconds']} s ({rebuild['us_per_user']} us/user), "
            f"longest loop stretch {rebuild['longest_blocking_ms']} ms ("
            f"{rebuild['process_cpu_in_longest_ms']} ms process CPU; longest GC "
            f"{rebuild['longest_gc_ms']} ms, generation {rebuild['longest_gc_generation']}); "
            f"idle sweep "
            f"{sweep['seconds']} s, longest stretch {sweep['longest_blocking_ms']} ms "
            f"(heartbeat interval {HEARTBEAT_S * 1000:.0f} ms)",
            flush=True,
        )
    result = {
        "rebuild_slice_ms": REBUILD_SLICE_S * 1000,
        "sweep_chunk_users": CHUNK_USERS,
        "watch_interval_ms": WATCH_INTERVAL_S * 1000,
        "heartbeat_interval_ms": HEARTBEAT_S * 1000,
        "runs": runs,
        "python": sys.version.split()[0],
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
