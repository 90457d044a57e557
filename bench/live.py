"""Live worker benchmark on real Kafka and Redis.

1. Throughput: N simulated shopper events are produced first, then one worker
   (RocksDB store) is started and timed until it has consumed them all:
   sustained events/s.
2. Latency: with the worker caught up, shopper traffic is offered at a fixed
   rate while probe users log in from two countries (which tags them
   ``ip_hopping``); Redis keyspace notifications timestamp the moment each
   probe's tag lands: event-to-Redis latency p50/p99.

Prints a table and writes bench/results/live.json. Needs the stack
(``make stack-up``).

    .venv/bin/python bench/live.py [--events 200000] [--rate 2000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamtags.live.topics import ensure_topics  # noqa: E402
from streamtags.offline.simulate import background  # noqa: E402

KAFKA = os.environ.get("STREAMTAGS_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
REDIS_URL = os.environ.get("STREAMTAGS_REDIS_URL", "redis://127.0.0.1:6379/0")
STREAMS = ("orders", "browse", "logins", "accounts")


def metric_sum(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


def shopper_message(rng: random.Random, users: int, index: int) -> tuple[str, bytes, bytes]:
    user, stream, fields = background(rng, users)
    body = {"event_id": f"bench-{index}", "user_id": user, "ts": int(time.time() * 1000), **fields}
    if stream == "orders":
        body["order_id"] = f"o-{index}"
    return stream, user.encode(), orjson.dumps(body)


async def produce_backlog(topics: dict[str, str], count: int, users: int) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA, linger_ms=20, max_batch_size=262144)
    await producer.start()
    rng = random.Random(3)
    started = time.perf_counter()
    try:
        pending = []
        for index in range(count):
            stream, key, value = shopper_message(rng, users, index)
            pending.append(await producer.send(topics[stream], value, key=key))
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def offered_load(
    topics: dict[str, str],
    *,
    rate: float,
    seconds: float,
    users: int,
    prefix: str,
    probes_per_s: float,
) -> dict[str, float]:
    client = aioredis.Redis.from_url(REDIS_URL)
    await client.config_set("notify-keyspace-events", "Kh")
    pubsub = client.pubsub()
    await pubsub.psubscribe(f"__keyspace@0__:{prefix}probe-*")
    sent_at: dict[str, float] = {}
    landed_at: dict[str, float] = {}

    async def listen() -> None:
        async for message in pubsub.listen():
            if message["type"] != "pmessage":
                continue
            key = message["channel"].decode().split(":", 1)[1][len(prefix) :]
            landed_at.setdefault(key, time.perf_counter())

    listener = asyncio.create_task(listen())
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA, linger_ms=1)
    await producer.start()
    rng = random.Random(4)
    started = time.perf_counter()
    sent = probes = 0
    try:
        while (elapsed := time.perf_counter() - started) < seconds:
            while sent < elapsed * rate:
                stream, key, value = shopper_message(rng, users, 10_000_000 + sent)
                await producer.send(topics[stream], value, key=key)
                sent += 1
            while probes < elapsed * probes_per_s:
                user = f"probe-{probes}"
                now = int(time.time() * 1000)
                for i, country in enumerate(("SG", "DE")):
                    body = {
                        "event_id": f"{user}-{i}",
                        "user_id": user,
                        "ts": now + i,
                        "outcome": "success",
                        "ip": f"198.51.100.{i + 1}",
                        "country": country,
                    }
                    await producer.send(topics["logins"], orjson.dumps(body), key=user.encode())
                await producer.flush()
                sent_at[user] = time.perf_counter()
                probes += 1
            await asyncio.sleep(0.002)
        await asyncio.sleep(3)  # let the last probes land
    finally:
        await producer.stop()
        listener.cancel()
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.config_set("notify-keyspace-events", "")
        await client.aclose()
    latencies = sorted(
        (landed_at[user] - at) * 1000 for user, at in sent_at.items() if user in landed_at
    )
    if not latencies:
        return {"probes": probes, "landed": 0}
    return {
        "offered_events_per_s": round(sent / seconds),
        "probes": probes,
        "landed": len(latencies),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 2),
        "max_ms": round(latencies[-1], 2),
    }


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=2000.0, help="offered events/s, phase 2")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--probes-per-s", type=float, default=20.0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "live.json"))
    args = parser.parse_args()

    run = f"bench{uuid.uuid4().hex[:8]}"
    topics = {s: f"{run}.{s}" for s in STREAMS}
    outputs = {
        "TAGS": "tags",
        "RISK_TAGS": "risk-tags",
        "COUPON_TRIGGERS": "coupons",
        "DEAD_LETTER": "dead-letter",
    }
    port = 6077
    env = {
        **os.environ,
        "STREAMTAGS_APP_ID": run,
        "STREAMTAGS_STORE": "rocksdb://",
        "STREAMTAGS_DATA_DIR": str(ROOT / ".stack" / "bench" / run),
        "STREAMTAGS_PARTITIONS": "4",
        "STREAMTAGS_WEB_PORT": str(port),
        "STREAMTAGS_REDIS_KEY_PREFIX": f"{run}:user:",
        "STREAMTAGS_REDIS_TRIGGER_PREFIX": f"{run}:trigger:",
        "STREAMTAGS_LOG_LEVEL": "warning",
        **{f"STREAMTAGS_TOPIC_{s.upper()}": t for s, t in topics.items()},
        **{f"STREAMTAGS_TOPIC_{k}": f"{run}.{v}" for k, v in outputs.items()},
    }
    asyncio.run(ensure_topics(topics.values(), bootstrap=KAFKA, partitions=4))
    print(f"producing {args.events:,} events ...", flush=True)
    produce_s = asyncio.run(produce_backlog(topics, args.events, args.users))
    log = (ROOT / ".stack" / "logs" / f"{run}-worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "streamtags", "worker"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    result: dict[str, Any] = {"events": args.events, "produce_s": round(produce_s, 2)}
    try:
        first_at = None
        deadline = time.monotonic() + 600
        consumed = 0.0
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                raise SystemExit(f"the worker exited; see {log.name}")
            try:
                consumed = metric_sum(port, "streamtags_events_consumed_total")
            except OSError:
                consumed = 0.0
            if consumed and first_at is None:
                first_at = (time.perf_counter(), consumed)
            if consumed >= args.events:
                break
            time.sleep(0.25)
        done_at = time.perf_counter()
        assert first_at is not None, "the worker consumed nothing"
        elapsed = done_at - first_at[0]
        result["consume_s"] = round(elapsed, 2)
        result["events_per_s"] = round((consumed - first_at[1]) / elapsed)
        print(
            f"consumed {consumed:,.0f} events; {result['events_per_s']:,} events/s sustained",
            flush=True,
        )
        print(
            f"offering {args.rate:,.0f} events/s for {args.seconds:.0f} s with probes ...",
            flush=True,
        )
        result["latency"] = asyncio.run(
            offered_load(
                topics,
                rate=args.rate,
                seconds=args.seconds,
                users=args.users,
                prefix=f"{run}:user:",
                probes_per_s=args.probes_per_s,
            )
        )
        result["lookup"] = lookup_latency(
            f"{run}:user:", [f"probe-{i}" for i in range(int(result["latency"]["probes"]))], 5000
        )
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    latency = result["latency"]
    print()
    print(f"{'metric':<34}{'value':>14}")
    print(f"{'backlog events':<34}{result['events']:>14,}")
    print(f"{'sustained events/s (1 worker)':<34}{result['events_per_s']:>14,}")
    for key in ("offered_events_per_s", "probes", "landed", "p50_ms", "p99_ms", "max_ms"):
        if key in latency:
            print(f"{'event->Redis ' + key:<34}{latency[key]:>14}")
    lookup = result["lookup"]
    print(f"{'lookup tags(user) p50 ms':<34}{lookup['p50_ms']:>14}")
    print(f"{'lookup tags(user) p99 ms':<34}{lookup['p99_ms']:>14}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
