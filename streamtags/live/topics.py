"""Creating and checking Kafka topics before anything reads or writes them.

Every input topic, every output topic and the engine's internal topics
must exist with the same partition count: streamtags relies on
co-partitioning by ``user_id``. A topic that exists with another count
stops the worker at start-up with a clear message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streamtags.errors import TopicMismatch

__all__ = ["ensure_topics"]


async def ensure_topics(
    names: Iterable[str],
    *,
    bootstrap: str,
    partitions: int,
    replication_factor: int = 1,
    compacted: Iterable[str] = (),
    timeout_ms: int = 15_000,
) -> None:
    """Create missing topics; raise :class:`TopicMismatch` on a wrong partition count."""
    wanted = sorted(set(names))
    compact = set(compacted)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if missing:
            # another worker may create one between our list and create
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [
                        NewTopic(
                            name,
                            num_partitions=partitions,
                            replication_factor=replication_factor,
                            topic_configs={"cleanup.policy": "compact"} if name in compact else {},
                        )
                        for name in missing
                    ]
                )
        described = await admin.describe_topics(wanted)
        for topic in described:
            count = len(topic.get("partitions", []))
            if topic.get("error_code", 0) == 0 and count != partitions:
                raise TopicMismatch(
                    f"topic {topic['topic']} has {count} partitions but streamtags is configured "
                    f"for {partitions} (STREAMTAGS_PARTITIONS); all topics must match to stay "
                    f"co-partitioned by user_id"
                )
    finally:
        await admin.close()
