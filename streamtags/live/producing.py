"""Producing recorded messages to the input topics (``streamtags produce``, the simulator)."""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import AIOKafkaProducer

from streamtags.contracts.recordings import Outgoing
from streamtags.live.kafka_client import client_options
from streamtags.live.topics import ensure_topics
from streamtags.settings import InputTopics, KafkaSecurity

__all__ = ["produce"]


async def produce(
    messages: Iterable[Outgoing],
    *,
    bootstrap: str,
    topics: InputTopics,
    partitions: int,
    security: KafkaSecurity,
) -> int:
    """Send every message to its stream's topic, keyed by user id; return the count.

    Missing input topics are created first with ``partitions`` partitions.
    """
    await ensure_topics(
        topics.by_stream().values(), bootstrap=bootstrap, partitions=partitions, security=security
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, **client_options(security)
    )
    await producer.start()
    by_stream = topics.by_stream()
    sent = 0
    try:
        futures = []
        for message in messages:
            futures.append(
                await producer.send(by_stream[message.stream], message.value, key=message.key)
            )
            sent += 1
            if len(futures) >= 5000:
                for future in futures:
                    await future
                futures.clear()
        for future in futures:
            await future
    finally:
        await producer.stop()
    return sent
