"""``streamtags tags``, ``watch`` and ``simulate``: the live product from a terminal."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from pathlib import Path
from typing import Any

import orjson

from streamtags.settings import Settings

__all__ = ["format_record", "register"]


def format_record(record: dict[str, Any]) -> str:
    """One line for a tag change or a coupon trigger."""
    if "trigger_id" in record:
        return (
            f"{record['abandoned_at'][11:19]}  COUPON   {record['user_id']:<20} cart "
            f"{record['cart_id']} worth {record['cart_value']:.2f}: "
            f"{record['coupon']['discount_pct']:g}% until {record['coupon']['valid_until'][11:19]}"
        )
    figures = ", ".join(f"{k}={v:g}" for k, v in record["evidence"]["figures"].items())
    return (
        f"{record['ts'][11:19]}  {record['action'].upper():<8} {record['user_id']:<20} "
        f"{record['tag']:<22} [{record['category']}] {figures}"
    )


def _tags(args: argparse.Namespace, settings: Settings) -> int:
    from streamtags.serving.lookup import TagClient

    client = TagClient(
        redis_url=settings.redis_url, prefix=settings.redis_key_prefix, timeout_ms=1000
    )
    failed: list[Any] = []
    tags = client.tags(args.user_id, default=failed)
    if tags is failed:
        print("streamtags tags: Redis is unreachable", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps({"user_id": args.user_id, "tags": tags}).decode())
        return 0
    if not tags:
        print(f"{args.user_id}: no live tags")
    for tag in tags:
        print(
            f"{args.user_id}: {tag['tag']:<22} [{tag['category']}/{tag['severity']}] until "
            f"{tag['expires_at']}  - {tag['evidence']['reason']}"
        )
    return 0


async def _started_consumer(settings: Settings, *topics: str, auto_offset_reset: str) -> Any:
    """A started group-less consumer of ``topics``, logged in as the settings say.

    Raises :class:`~streamtags.errors.KafkaUnavailable` (one line, exit 2)
    when Kafka is out of reach or refuses the login.
    """
    from aiokafka import AIOKafkaConsumer

    from streamtags.live.kafka_client import check_reachable, client_options

    await check_reachable(bootstrap=settings.kafka_bootstrap, security=settings.kafka_security)
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset=auto_offset_reset,
        enable_auto_commit=False,
        **client_options(settings.kafka_security),
    )
    await consumer.start()
    return consumer


async def _follow(
    settings: Settings,
    topics: list[str],
    from_beginning: bool,
    json: bool,
    limit: int | None,
    timeout_s: float | None,
) -> int:
    consumer = await _started_consumer(
        settings, *topics, auto_offset_reset="earliest" if from_beginning else "latest"
    )
    seen = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s if timeout_s else None
    try:
        while deadline is None or loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for messages in batches.values():
                for message in messages:
                    if message.value is None:
                        continue
                    if json:
                        sys.stdout.write(message.value.decode() + "\n")
                    else:
                        sys.stdout.write(format_record(orjson.loads(message.value)) + "\n")
                    seen += 1
                    if limit is not None and seen >= limit:
                        return 0
            sys.stdout.flush()
    finally:
        await consumer.stop()
    return 0


def _watch(args: argparse.Namespace, settings: Settings) -> int:
    topics = [settings.outputs.risk_tags if args.risk else settings.outputs.tags]
    if args.coupons:
        topics.append(settings.outputs.coupon_triggers)
    try:
        return asyncio.run(
            _follow(settings, topics, args.from_beginning, args.json, args.limit, args.timeout)
        )
    except KeyboardInterrupt:
        return 0


def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    from streamtags.offline.simulate import plan_personas

    plan = plan_personas(args.personas, time_scale=settings.time_scale, seed=args.seed)
    if args.truth:
        with open(args.truth, "wb") as handle:
            for row in plan.truth:
                fields = dataclasses.asdict(row) | {"due_after_s": round(row.due_after_s, 3)}
                handle.write(orjson.dumps(fields) + b"\n")
    try:
        if args.out:
            return asyncio.run(_simulate_to_file(args, plan))
        return asyncio.run(_simulate_to_kafka(args, settings, plan))
    except KeyboardInterrupt:
        print("simulate: interrupted", file=sys.stderr)
        return 130


async def _run_plan(args: argparse.Namespace, plan: Any, send: Any) -> int:
    from streamtags.offline.simulate import run

    return await run(
        send, rate=args.rate, users=args.users, duration_s=args.duration, plan=plan, seed=args.seed
    )


async def _simulate_to_file(args: argparse.Namespace, plan: Any) -> int:
    with Path(args.out).open("wb") as handle:

        async def write(message: Any) -> None:
            record = orjson.loads(message.value)
            handle.write(orjson.dumps({"stream": message.stream, **record}) + b"\n")

        count = await _run_plan(args, plan, write)
    print(f"wrote {count} events to {args.out}", file=sys.stderr)
    return 0


async def _simulate_to_kafka(args: argparse.Namespace, settings: Settings, plan: Any) -> int:
    from aiokafka import AIOKafkaProducer

    from streamtags.live.kafka_client import client_options
    from streamtags.live.topics import ensure_topics

    topics = settings.inputs.by_stream()
    await ensure_topics(
        topics.values(),
        bootstrap=settings.kafka_bootstrap,
        partitions=settings.partitions,
        security=settings.kafka_security,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        linger_ms=5,
        **client_options(settings.kafka_security),
    )
    await producer.start()
    try:

        async def send(message: Any) -> None:
            await producer.send(topics[message.stream], message.value, key=message.key)

        count = await _run_plan(args, plan, send)
        await producer.flush()
    finally:
        await producer.stop()
    print(
        f"simulated {count} events ({len(plan.truth)} personas) to {settings.kafka_bootstrap}",
        file=sys.stderr,
    )
    return 0


async def _applied_tags(settings: Settings, timeout_s: float) -> set[tuple[str, str]]:
    consumer = await _started_consumer(
        settings, settings.outputs.tags, auto_offset_reset="earliest"
    )
    applied: set[tuple[str, str]] = set()
    try:
        idle = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline and idle < 5:
            batches = await consumer.getmany(timeout_ms=300)
            idle = 0 if batches else idle + 1
            for messages in batches.values():
                for message in messages:
                    record = orjson.loads(message.value)
                    if record["action"] in ("applied", "renewed"):
                        applied.add((record["user_id"], record["tag"]))
    finally:
        await consumer.stop()
    return applied


def _score(args: argparse.Namespace, settings: Settings) -> int:
    rows = [orjson.loads(line) for line in Path(args.truth).read_bytes().splitlines() if line]
    applied = asyncio.run(_applied_tags(settings, args.timeout))
    by_persona: dict[str, list[bool]] = {}
    for row in rows:
        hit = (row["user_id"], row["expected_tag"]) in applied
        by_persona.setdefault(f"{row['persona']} -> {row['expected_tag']}", []).append(hit)
    total = sum(hit for hits in by_persona.values() for hit in hits)
    for name, hits in sorted(by_persona.items()):
        mark = "ok " if all(hits) else "MISS"
        print(f"  {mark} {name:<40} {sum(hits)}/{len(hits)}")
    print(f"{total} of {len(rows)} personas got their expected tag")
    return 0 if total == len(rows) else 1


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``tags``, ``watch``, ``simulate`` and ``score`` to the CLI."""
    score = commands.add_parser(
        "score",
        help="how many simulated personas got their expected tag",
        description="Read every tag change on the tags topic and compare with a --truth file "
        "written by `streamtags simulate --truth`.",
    )
    score.add_argument("--truth", required=True)
    score.add_argument("--timeout", type=float, default=30.0)
    score.set_defaults(run=_score)

    tags = commands.add_parser(
        "tags",
        help="show a user's live tags (from Redis, as checkout sees them)",
        description="Read USER_ID's live tags from Redis through the lookup client.",
    )
    tags.add_argument("user_id", metavar="USER_ID")
    tags.add_argument("--json", action="store_true", help="print JSON")
    tags.set_defaults(run=_tags)

    watch = commands.add_parser(
        "watch",
        help="follow tag changes live, one line per record",
        description="Follow streamtags.tags (or --risk: streamtags.risk-tags), and with "
        "--coupons the coupon triggers too.",
    )
    watch.add_argument("--risk", action="store_true", help="risk tags only")
    watch.add_argument("--coupons", action="store_true", help="also coupon triggers")
    watch.add_argument("--from-beginning", action="store_true")
    watch.add_argument("--json", action="store_true", help="print the raw JSON records")
    watch.add_argument("--limit", type=int, help="stop after this many records")
    watch.add_argument("--timeout", type=float, help="stop after this many seconds")
    watch.set_defaults(run=_watch)

    simulate = commands.add_parser(
        "simulate",
        help="send realistic traffic with personas that should earn each tag",
        description="Send ordinary shoppers at --rate events/s for --duration seconds plus "
        "--personas users per persona (abandoners, IP hoppers, ...); --truth writes which "
        "user should get which tag. Persona timing follows STREAMTAGS_TIME_SCALE.",
    )
    simulate.add_argument("--rate", type=float, default=200.0, help="shopper events per second")
    simulate.add_argument("--users", type=int, default=1000, help="ordinary shoppers")
    simulate.add_argument("--duration", type=float, default=30.0, help="seconds of traffic")
    simulate.add_argument("--personas", type=int, default=3, help="users per persona")
    simulate.add_argument("--truth", help="write the ground truth (JSON Lines) here")
    simulate.add_argument("--out", help="write events to this JSON Lines file instead of Kafka")
    simulate.add_argument("--seed", type=int, default=1)
    simulate.set_defaults(run=_simulate)
