"""Creating and checking Kafka topics before anything reads or writes them.

Every input topic, every output topic and the engine's internal topics
must exist with the same partition count: streamtags relies on
co-partitioning by ``user_id``. A topic that exists with another count
stops the worker at start-up with a clear message. So does a broker that
cannot be reached or refuses the credentials (:class:`KafkaUnavailable`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streamtags.errors import TopicMismatch
from streamtags.live.kafka_client import check_reachable, client_options
from streamtags.settings import KafkaSecurity

__all__ = ["ensure_topics"]

#: No TLS, no login: the local stack, tests and benchmarks.
_PLAINTEXT = KafkaSecurity()


async def ensure_topics(
    names: Iterable[str],
    *,
    bootstrap: str,
    partitions: int,
    security: KafkaSecurity = _PLAINTEXT,
    replication_factor: int = 1,
    compacted: Iterable[str] = (),
    timeout_ms: int = 15_000,
) -> None:
    """Create missing topics; raise :class:`TopicMismatch` on a wrong partition count.

    Connects with ``security`` (plaintext by default); raises
    :class:`KafkaUnavailable` when no broker answers or the login is refused.
    """
    wanted = sorted(set(names))
    compact = set(compacted)
    await check_reachable(bootstrap=bootstrap, security=security, timeout_ms=timeout_ms)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms, **client_options(security)
    )
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
