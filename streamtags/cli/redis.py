"""``streamtags redis resync``: project every live tag from the state changelog into Redis.

A worker projects its own partitions again when it notices that Redis lost
data (:mod:`streamtags.serving.projection`); this command does the same on
demand, for every partition, from Kafka. It reads the state changelog topic
(``{app_id}-user-state-changelog``: compacted, key = user id, value = state
bytes; keys starting with ``\\x00`` are partition clocks) from its start to
the end it had when the command started, keeps each user's latest state, and
writes a ``restore`` for every live tag.

Safe while workers run: a restore is versioned at the state's settled time,
so it fills gaps and never overwrites newer data (a change or clear written
since), and leaves alone a field that already agrees with the state.
Running it twice writes nothing the second time. The changelog trails a
worker's memory by up to a commit interval; whatever a worker changed since
has a newer version and wins.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from streamtags.settings import Settings

if TYPE_CHECKING:
    from streamtags.engine.partition import Engine
    from streamtags.serving.write_queue import FieldWrite

__all__ = ["ChangelogTags", "read_changelog_tags", "register"]

PROG = "streamtags redis resync"


@dataclass(slots=True)
class ChangelogTags:
    """What the changelog says: each user's live tags as restore writes, and counts."""

    topic: str
    #: user id -> tag -> restore write (users without live tags left out)
    writes: dict[str, dict[str, FieldWrite]] = field(default_factory=dict)
    records: int = 0
    unreadable: int = 0


def _resync(args: argparse.Namespace, settings: Settings) -> int:
    from aiokafka.errors import KafkaError

    try:
        return asyncio.run(_resync_async(settings, timeout_s=args.timeout_s))
    except KafkaError as exc:
        print(f"{PROG}: cannot read Kafka at {settings.kafka_bootstrap}: {exc}", file=sys.stderr)
        return 2


async def _resync_async(settings: Settings, *, timeout_s: float) -> int:
    from streamtags.engine.partition import Engine
    from streamtags.rulebook.loader import load_rules
    from streamtags.serving.redis_sink import RedisSink

    started = time.monotonic()
    engine = Engine(
        load_rules(settings.rules_dir, time_scale=settings.time_scale),
        lateness_ms=settings.lateness_ms,
    )
    found = await read_changelog_tags(settings, engine, timeout_s=timeout_s)
    if found is None:
        return 2
    sink = RedisSink(
        redis_url=settings.redis_url,
        prefix=settings.redis_key_prefix,
        timeout_ms=max(settings.redis_timeout_ms, 1000),
    )
    try:
        for user_id, writes in found.writes.items():
            sink.restore(user_id, writes)
            if sink.queued_users >= sink.chunk_users and not await sink.drain():
                break
        written = await sink.drain()
    finally:
        await sink.close()
    if not written:
        print(f"{PROG}: Redis at {settings.redis_url} failed", file=sys.stderr)
        return 1
    tags = sum(len(writes) for writes in found.writes.values())
    print(
        f"read {found.records} records of {found.topic} ({found.unreadable} unreadable); "
        f"{tags} live tags of {len(found.writes)} users: {sink.written_fields} restored, "
        f"{sink.rejected_fields} already current or newer in Redis "
        f"({time.monotonic() - started:.1f} s)"
    )
    return 0


async def read_changelog_tags(
    settings: Settings, engine: Engine, *, timeout_s: float
) -> ChangelogTags | None:
    """Every user's live tags per the state changelog, read to the end it had on start;
    None (after saying why on stderr) when the topic does not exist or the read times out."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streamtags.live.app import state_table_name

    found = ChangelogTags(f"{settings.app_id}-{state_table_name()}-changelog")
    numbers = await _partitions(settings, found.topic)
    if not numbers:
        print(f"{PROG}: no topic {found.topic}", file=sys.stderr)
        return None
    partitions = [TopicPartition(found.topic, number) for number in numbers]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout_s
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            if time.monotonic() > deadline:
                print(
                    f"{PROG}: {found.topic} not read in {timeout_s} s",
                    file=sys.stderr,
                )
                return None
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    _take(found, record.key, record.value, engine)
    finally:
        await consumer.stop()
    return found


async def _partitions(settings: Settings, topic: str) -> list[int]:
    """The partition numbers of ``topic``; none when it does not exist."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if described.get("error_code", 0) != 0:
        return []
    return sorted(partition["partition"] for partition in described.get("partitions", []))


def _take(found: ChangelogTags, key: bytes | None, value: bytes | None, engine: Engine) -> None:
    """One changelog record: the user's latest state replaces what came before."""
    from streamtags.engine.state import UserState
    from streamtags.errors import StateFormatError
    from streamtags.serving.projection import restored_writes

    if key is None or key.startswith((b"\x00", b"__faust")):
        return  # a partition clock or a Faust marker, not a user
    found.records += 1
    user_id = key.decode()
    found.writes.pop(user_id, None)
    if value is None:
        return  # deleted
    try:
        state = UserState.from_bytes(value, engine.features)
    except StateFormatError:
        found.unreadable += 1
        return
    writes = restored_writes(user_id, state, engine.tags)
    if writes:
        found.writes[user_id] = writes


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``redis resync`` to the CLI."""
    redis_cmd = commands.add_parser("redis", help="maintain the Redis projection of live tags")
    sub = redis_cmd.add_subparsers(dest="redis_command", required=True)
    resync = sub.add_parser(
        "resync",
        help="write every live tag from the state changelog into Redis again",
        description="Read the state changelog topic to its end and restore every user's live "
        "tags in Redis. Safe while workers run: restores never overwrite newer data, and a "
        "second run writes nothing. Exit 1 if Redis failed, 2 if Kafka or the topic did.",
    )
    resync.add_argument(
        "--timeout-s",
        type=float,
        default=300.0,
        help="give up when the changelog is not read within this many seconds (default 300)",
    )
    resync.set_defaults(run=_resync)
