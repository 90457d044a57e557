"""Live worker benchmark on real Kafka and Redis: its maximum, then latency under load.

1. **Maximum.** A backlog of shopper events (``bench/backlog.py``'s mix) is
   produced, then one worker (full catalogue, RocksDB) drains it: its
   sustained events/s, timed from its first processed batch.
2. **Latency under load.** With the worker caught up, a *separate process*
   (``bench/live.py offer``) offers live traffic at 25, 50, 70 and 90 % of
   that maximum for 20 s each, event times stamped at sending. Among it,
   probe users log in from two countries, which tags them ``ip_hopping``;
   Redis keyspace notifications timestamp the moment each probe's tag lands.
   Event to Redis is that moment minus the second login's event time (one
   machine, one clock): p50, p99 and max per load.

A tag waits for the partition's watermark, one lateness
(``STREAMTAGS_LATENESS_MS``) behind the slowest input stream, before it
can be applied (README "Time"): the lateness is part of every figure here.
The sweep runs once per lateness given (``--lateness-ms``, default 20 ms, the
setting for fast tags; 100 ms; and the worker's default 1000), restarting the
worker on its state in between. Each load also reports the worker's and the
offering process's CPU (cores) and the worker's mean flush pause.

Prints a table and writes bench/results/live.json. Needs the stack
(``make stack-up``).

    .venv/bin/python bench/live.py [--events 200000] [--lateness-ms 20,100,1000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.backlog import backlog, produce  # noqa: E402
from bench.compare import (  # noqa: E402
    delete_redis_keys,
    delete_topics,
    events_seen,
    free_port,
    labelled,
    machine,
    metric_sum,
    process_cpu_s,
    versions,
    worker_overrides,
)
from streamtags.live.table_store import partition_of  # noqa: E402
from streamtags.live.topics import ensure_topics  # noqa: E402
from streamtags.offline.simulate import background  # noqa: E402

KAFKA = os.environ.get("STREAMTAGS_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
REDIS_URL = os.environ.get("STREAMTAGS_REDIS_URL", "redis://127.0.0.1:6379/0")
STREAMS = ("orders", "browse", "logins", "accounts")
PARTITIONS = 8
#: the offering process sends what is due every this many seconds, in producer batches
OFFER_TICK_S = 0.005
#: seconds after a load's last probe for its tags to land (beyond the lateness)
SETTLE_S = 3.0


# -- the offering process ---------------------------------------------------------------


def probe_logins(user: str, now_ms: int) -> list[tuple[bytes, bytes]]:
    """Two logins of the probe ``user`` from two countries: ``ip_hopping`` at once."""
    bodies = [
        {
            "event_id": f"{user}-{i}",
            "user_id": user,
            "ts": now_ms,
            "outcome": "success",
            "ip": f"198.51.100.{i + 1}",
            "country": country,
        }
        for i, country in enumerate(("SG", "DE"))
    ]
    return [(user.encode(), orjson.dumps(body)) for body in bodies]


async def offer(args: argparse.Namespace) -> None:
    """Send shopper events at ``args.rate`` per second for ``args.seconds``, event times
    stamped at sending, with ``args.probes_per_s`` probe pairs; write the probes' times."""
    topics: dict[str, str] = json.loads(args.topics)
    rng = random.Random(args.seed)
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA, linger_ms=0, max_batch_size=262144)
    await producer.start()
    probes: dict[str, int] = {}
    sent = 0
    started = time.perf_counter()
    try:
        while (elapsed := time.perf_counter() - started) < args.seconds:
            now_ms = int(time.time() * 1000)
            due: list[tuple[str, bytes, bytes]] = []
            while sent < elapsed * args.rate:
                user, stream, fields = background(rng, args.users)
                body = {"event_id": f"{args.seed}-{sent}", "user_id": user, "ts": now_ms}
                if stream == "orders":
                    body["order_id"] = f"o-{args.seed}-{sent}"
                due.append((topics[stream], user.encode(), orjson.dumps(body | fields)))
                sent += 1
            while len(probes) < elapsed * args.probes_per_s:
                user = f"probe-{args.seed}-{len(probes)}"
                due += [(topics["logins"], *login) for login in probe_logins(user, now_ms)]
                probes[user] = now_ms
            await send_batches(producer, due)
            await asyncio.sleep(OFFER_TICK_S)
        await producer.flush()
    finally:
        await producer.stop()
    Path(args.probes_out).write_text(json.dumps({"sent": sent, "probes": probes}))


async def send_batches(producer: AIOKafkaProducer, due: list[tuple[str, bytes, bytes]]) -> None:
    """Send ``due`` (topic, key, value) as producer batches per topic partition, all
    partitions at once (one after another, a topic sent late would arrive more than
    the lateness after another topic's events of the same moment), partitioned as
    Kafka's default partitioner would (the key's murmur2)."""
    by_partition: dict[tuple[str, int], list[tuple[bytes, bytes]]] = defaultdict(list)
    for topic, key, value in due:
        by_partition[(topic, partition_of(key, PARTITIONS))].append((key, value))
    await asyncio.gather(
        *(
            send_partition(producer, topic, number, records)
            for (topic, number), records in by_partition.items()
        )
    )


async def send_partition(
    producer: AIOKafkaProducer, topic: str, number: int, records: list[tuple[bytes, bytes]]
) -> None:
    """One topic partition's records, in order, in as few batches as fit."""
    batch = producer.create_batch()
    for key, value in records:
        if batch.append(key=key, value=value, timestamp=None) is None:
            await producer.send_batch(batch, topic, partition=number)
            batch = producer.create_batch()
            batch.append(key=key, value=value, timestamp=None)
    await producer.send_batch(batch, topic, partition=number)


# -- the benchmark ----------------------------------------------------------------------


class Worker:
    """One ``python -m streamtags worker`` on the run's topics."""

    def __init__(self, run: str, topics: dict[str, str], workdir: Path, lateness_ms: int) -> None:
        self.port = free_port()
        self.prefix = f"{run}:user:"
        self.lateness_ms = lateness_ms
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMTAGS_")}
        env |= {
            "STREAMTAGS_KAFKA_BOOTSTRAP": KAFKA,
            "STREAMTAGS_REDIS_URL": REDIS_URL,
            "STREAMTAGS_APP_ID": run,
            "STREAMTAGS_STORE": "rocksdb://",
            "STREAMTAGS_DATA_DIR": str(workdir / "data"),
            "STREAMTAGS_PARTITIONS": str(PARTITIONS),
            "STREAMTAGS_WEB_PORT": str(self.port),
            "STREAMTAGS_REDIS_KEY_PREFIX": self.prefix,
            "STREAMTAGS_REDIS_TRIGGER_PREFIX": f"{run}:trigger:",
            "STREAMTAGS_LATENESS_MS": str(lateness_ms),
            "STREAMTAGS_LOG_LEVEL": "warning",
            **{f"STREAMTAGS_TOPIC_{s.upper()}": t for s, t in topics.items()},
            # a worker setting under test, e.g. BENCH_WORKER_SETTINGS=COMMIT_INTERVAL_S=0.25
            **worker_overrides(os.environ.get("BENCH_WORKER_SETTINGS", "")),
        }
        for output in ("tags", "risk_tags", "coupon_triggers", "dead_letter"):
            env[f"STREAMTAGS_TOPIC_{output.upper()}"] = f"{run}.{output}"
        self.log_path = workdir / "worker.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamtags", "worker"],
            env=env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def consumed(self) -> float:
        """Valid events the worker has consumed so far (its /metrics)."""
        if self.process.poll() is not None:
            raise SystemExit(f"the worker exited; see {self.log_path}")
        return events_seen(self.port)

    def flush_pauses(self) -> tuple[float, float]:
        """(seconds, count) of the flushes' snapshot pauses so far (its /metrics)."""
        return (
            metric_sum(self.port, "streamtags_flush_pause_seconds_sum"),
            metric_sum(self.port, "streamtags_flush_pause_seconds_count"),
        )

    def rejected(self) -> dict[str, float]:
        """Events dead-lettered so far, by kind (``too_late`` among them)."""
        by_kind: dict[str, float] = defaultdict(float)
        found = labelled(self.port, "streamtags_events_rejected_total", "topic", "kind")
        for key, count in found.items():
            by_kind[key.rpartition("/")[2]] += count
        return dict(by_kind)

    def wait_for(self, count: float, timeout_s: float) -> None:
        """Until the worker has read ``count`` events (consumed or dead-lettered)."""
        deadline = time.monotonic() + timeout_s
        while (seen := self.consumed()) < count:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"the worker read {seen:,.0f} events, not {count:,.0f}; see {self.log_path}"
                )
            time.sleep(0.2)

    def wait_ready(self, timeout_s: float) -> None:
        """Until the worker owns every partition (``/health``) and is not rebalancing."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                url = f"http://127.0.0.1:{self.port}/health"
                with urllib.request.urlopen(url, timeout=2) as response:
                    health = json.loads(response.read())
                if len(health["partitions"]) == PARTITIONS and not health["rebalancing"]:
                    return
            except (OSError, KeyError, ValueError):
                pass
            time.sleep(0.5)
        raise SystemExit(f"the worker did not get its partitions; see {self.log_path}")

    def stop(self) -> None:
        """Terminate the worker (killed if it does not stop within a minute)."""
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def drain_rate(worker: Worker, events: int) -> dict[str, float]:
    """The worker's sustained events/s and CPU µs/event over the backlog, timed from
    its first processed batch to its last event."""
    deadline = time.monotonic() + 900
    start: tuple[float, float, float] | None = None
    while (consumed := worker.consumed()) < events:
        if consumed and start is None:
            start = (time.perf_counter(), process_cpu_s(worker.process.pid), consumed)
        if time.monotonic() > deadline:
            raise SystemExit(f"the backlog was not drained; see {worker.log_path}")
        time.sleep(0.1)
    assert start is not None, "the worker drained the backlog in one batch: use more events"
    seconds = time.perf_counter() - start[0]
    timed = consumed - start[2]
    cpu_s = process_cpu_s(worker.process.pid) - start[1]
    return {
        "events_per_s": round(timed / seconds),
        "cpu_us_per_event": round(cpu_s / timed * 1e6, 1),
        "seconds": round(seconds, 2),
    }


async def probe_landings(prefix: str, until: asyncio.Event, landed: dict[str, int]) -> None:
    """Record (wall clock, epoch ms) when each probe user's Redis key is first written."""
    client = aioredis.Redis.from_url(REDIS_URL)
    await client.config_set("notify-keyspace-events", "Kh")
    pubsub = client.pubsub()
    await pubsub.psubscribe(f"__keyspace@0__:{prefix}probe-*")
    try:
        while not until.is_set():
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
            if message is not None and message["type"] == "pmessage":
                key = message["channel"].decode().split(":", 1)[1][len(prefix) :]
                landed.setdefault(key, int(time.time() * 1000))
    finally:
        await pubsub.aclose()
        await client.config_set("notify-keyspace-events", "")
        await client.aclose()


async def load_step(
    worker: Worker, topics: dict[str, str], *, rate: float, args: argparse.Namespace, seed: int
) -> dict[str, Any]:
    """Offer ``rate`` events/s for ``args.seconds`` from a separate process; the probes'
    event-to-Redis latency (ms) and what the worker consumed meanwhile."""
    landed: dict[str, int] = {}
    stop = asyncio.Event()
    listener = asyncio.create_task(probe_landings(worker.prefix, stop, landed))
    await asyncio.sleep(0.5)  # subscribed before the first probe
    probes_out = Path(args.workdir) / f"probes-{seed}.json"
    before = (time.perf_counter(), worker.consumed(), worker.rejected())
    usage = (process_cpu_s(worker.process.pid), _children_cpu_s(), worker.flush_pauses())
    offering = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "offer", "--topics", json.dumps(topics),
        "--rate", str(rate), "--seconds", str(args.seconds), "--users", str(args.users),
        "--probes-per-s", str(args.probes_per_s), "--seed", str(seed),
        "--probes-out", str(probes_out),
    )  # fmt: skip
    await offering.wait()
    after = (time.perf_counter(), worker.consumed())
    elapsed = after[0] - before[0]
    pauses = [a - b for a, b in zip(worker.flush_pauses(), usage[2], strict=True)]
    busy = {
        "worker_cores": round((process_cpu_s(worker.process.pid) - usage[0]) / elapsed, 2),
        "offering_cores": round((_children_cpu_s() - usage[1]) / elapsed, 2),
        "flush_pause_mean_ms": round(1000 * pauses[0] / pauses[1], 1) if pauses[1] else None,
    }
    await asyncio.sleep(args.settle_s)
    stop.set()
    await listener
    offered = json.loads(probes_out.read_text())
    rejected = {
        kind: count - before[2].get(kind, 0)
        for kind, count in worker.rejected().items()
        if count > before[2].get(kind, 0)
    }
    latencies = sorted(
        landed[user] - sent_ms for user, sent_ms in offered["probes"].items() if user in landed
    )
    step: dict[str, Any] = {
        "sent": offered["sent"] + 2 * len(offered["probes"]),
        "offered_events_per_s": round(offered["sent"] / args.seconds),
        "dead_letters": rejected,
        "consumed_events_per_s": round((after[1] - before[1]) / elapsed),
        **busy,
        "probes": len(offered["probes"]),
        "landed": len(latencies),
    }
    if latencies:
        step |= {
            "p50_ms": round(statistics.median(latencies), 1),
            "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "max_ms": latencies[-1],
        }
    return step


def _children_cpu_s() -> float:
    """User+system CPU seconds of this process's finished children (the offering ones)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def lookup_latency(prefix: str, users: list[str], calls: int) -> dict[str, float]:
    """What the checkout service pays: one ``TagClient.tags`` call, in ms."""
    from streamtags.serving.lookup import TagClient

    client = TagClient(redis_url=REDIS_URL, prefix=prefix, timeout_ms=100)
    timings = []
    found = 0
    for index in range(calls):
        started = time.perf_counter()
        tags = client.tags(users[index % len(users)])
        timings.append((time.perf_counter() - started) * 1000)
        found += bool(tags)
    client.close()
    timings.sort()
    return {
        "calls": calls,
        "with_tags": found,
        "p50_ms": round(statistics.median(timings), 3),
        "p99_ms": round(timings[int(len(timings) * 0.99)], 3),
    }


def report(result: dict[str, Any], out: Path) -> None:
    """Print the tables and write the JSON."""
    drain = result["maximum"]
    print()
    print(f"maximum: {drain['events_per_s']:,} events/s ({drain['cpu_us_per_event']} CPU µs/event)")
    for sweep_ in result["sweeps"]:
        print(f"\nlateness {sweep_['lateness_ms']} ms (every latency includes it)")
        print(
            f"{'load':>6}{'offered/s':>11}{'consumed/s':>12}{'probes':>8}{'landed':>8}"
            f"{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'worker':>8}{'offer':>7}{'pause':>7}"
            "  dead letters"
        )
        for load, step in sweep_["loads"].items():
            print(
                f"{load:>6}{step['offered_events_per_s']:>11,}"
                f"{step['consumed_events_per_s']:>12,}{step['probes']:>8}{step['landed']:>8}"
                f"{step.get('p50_ms', '-'):>9}{step.get('p99_ms', '-'):>9}"
                f"{step.get('max_ms', '-'):>9}{step['worker_cores']:>8}"
                f"{step['offering_cores']:>7}{step['flush_pause_mean_ms'] or '-':>7}"
                f"  {step['dead_letters'] or '-'}"
            )
    lookup = result.get("lookup")
    if lookup:
        print(f"\nlookup tags(user): p50 {lookup['p50_ms']} ms, p99 {lookup['p99_ms']} ms")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


def sweep(
    worker: Worker, topics: dict[str, str], maximum: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Each load in turn, the worker caught up before the next one."""
    loads: dict[str, Any] = {}
    for load in (float(x) for x in args.loads.split(",")):
        print(
            f"offering {load:.0%} of {maximum:,} events/s for {args.seconds:.0f} s ...", flush=True
        )
        step = asyncio.run(
            load_step(worker, topics, rate=load * maximum, args=args, seed=len(args.done) + 1)
        )
        args.done.append(step)
        loads[f"{load:.0%}"] = step
        args.total += step["sent"]
        worker.wait_for(args.total, timeout_s=300)
    return loads


def run(args: argparse.Namespace) -> None:
    run_id = f"live{uuid.uuid4().hex[:8]}"
    topics = {s: f"{run_id}.{s}" for s in STREAMS}
    workdir = ROOT / ".stack" / "bench" / run_id
    workdir.mkdir(parents=True, exist_ok=True)
    args.workdir, args.done, args.total = str(workdir), [], float(args.events)
    asyncio.run(ensure_topics(topics.values(), bootstrap=KAFKA, partitions=PARTITIONS))
    print(f"{run_id}: producing {args.events:,} events ...", flush=True)
    end_ms = int(time.time() * 1000)
    messages = backlog(args.events, args.users, span_ms=600_000, end_ms=end_ms)
    asyncio.run(produce(topics, messages, bootstrap=KAFKA))
    latenesses = [int(x) for x in args.lateness_ms.split(",")]
    result: dict[str, Any] = {"machine": machine(), "versions": versions(), "events": args.events}
    result["sweeps"] = []
    worker = Worker(run_id, topics, workdir, latenesses[0])
    try:
        print("draining the backlog (the worker's maximum) ...", flush=True)
        result["maximum"] = drain_rate(worker, args.events)
        maximum = args.max_rate or result["maximum"]["events_per_s"]
        for lateness_ms in latenesses:
            if worker.lateness_ms != lateness_ms:  # the same group and state, restarted
                worker.stop()
                worker = Worker(run_id, topics, workdir, lateness_ms)
                worker.wait_ready(timeout_s=120)
                args.total = 0.0  # its counters start afresh; everything before is committed
            args.settle_s = lateness_ms / 1000 + SETTLE_S
            loads = sweep(worker, topics, maximum, args)
            result["sweeps"].append({"lateness_ms": lateness_ms, "loads": loads})
        probed = [f"probe-1-{i}" for i in range(int(args.seconds * args.probes_per_s))]
        result["lookup"] = lookup_latency(worker.prefix, probed, 5000)
    finally:
        worker.stop()
        asyncio.run(delete_topics(run_id))
        delete_redis_keys(run_id)
        shutil.rmtree(workdir / "data", ignore_errors=True)
    report(result, Path(args.out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    offering = sub.add_parser("offer", help="(internal) the separate load process")
    offering.add_argument("--topics", required=True, help="JSON: stream -> topic")
    offering.add_argument("--rate", type=float, required=True)
    offering.add_argument("--seconds", type=float, required=True)
    offering.add_argument("--users", type=int, required=True)
    offering.add_argument("--probes-per-s", type=float, required=True)
    offering.add_argument("--seed", type=int, required=True)
    offering.add_argument("--probes-out", required=True)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--loads", default="0.25,0.5,0.7,0.9", help="shares of the maximum")
    parser.add_argument("--seconds", type=float, default=20.0, help="per load")
    parser.add_argument("--probes-per-s", type=float, default=20.0)
    parser.add_argument(
        "--lateness-ms", default="20,100,1000", help="comma-separated: one sweep per lateness"
    )
    parser.add_argument("--max-rate", type=int, default=0, help="use this maximum instead")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "live.json"))
    args = parser.parse_args()
    if args.command == "offer":
        asyncio.run(offer(args))
    else:
        run(args)


if __name__ == "__main__":
    main()
