"""What the live tagger needs from each I/O edge, as Protocols (httpx's transport seam).

Four seams, each with a production implementation and an in-memory twin in
:mod:`streamtags.live.twins` that tests can tell to fail:

- :class:`StateStore`: :class:`~streamtags.live.table_store.TableStore`
  (the Faust table and its changelog); twin ``MemoryStore``.
- :class:`TagSink`: :class:`~streamtags.serving.redis_sink.RedisSink`;
  twin ``MemoryTagSink``.
- :class:`TriggerLedger`: :class:`~streamtags.serving.redis_sink.TriggerGuard`;
  twin ``MemoryTriggerLedger``.
- :class:`Sender`: :class:`~streamtags.live.app.ProducerSender` (one output
  topic); twin ``MemoryTopic``.

A :data:`Delivery` is what the broker answers for one record: awaiting it
returns once the broker has the record and raises if it never will.

Outages: the tag sink and the trigger ledger are best effort (tagging to
Kafka never waits for Redis). The production classes catch their backend's
errors themselves; any implementation may instead raise one of
:data:`OUTAGES`, and the tagger treats that exactly like a reported
failure. Every call must return within its own short timeout.
"""

from __future__ import annotations

from collections.abc import Awaitable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["OUTAGES", "Delivery", "Sender", "StateStore", "TagSink", "TriggerLedger"]

Delivery = Awaitable[object]
"""A record's delivery: resolves once the broker has it, raises if it never will."""

OUTAGES: tuple[type[BaseException], ...] = (OSError, TimeoutError)
"""Exceptions a tag sink or trigger ledger may raise when its backend is unreachable
(``ConnectionError`` is an ``OSError``)."""


@runtime_checkable
class StateStore(Protocol):
    """Raw user-state bytes by input partition, backed by a changelog topic.

    Keys starting with ``\\x00`` are reserved for the tagger's own records
    (partition clocks); :meth:`scan` never yields them.
    """

    def get(self, partition: int, key: bytes) -> bytes | None:
        """The locally stored bytes of ``key`` in ``partition``, if any."""
        ...

    async def put(self, partition: int, key: bytes, value: bytes) -> Delivery:
        """Store locally and queue the changelog record; return its delivery."""
        ...

    async def put_many(
        self, partition: int, records: Sequence[tuple[bytes, bytes]]
    ) -> list[tuple[int, Delivery]]:
        """Store ``records`` (key, value) locally and queue their changelog records in as
        few requests as the producer allows; return ``(n, delivery)`` pairs in order,
        each covering the next ``n`` records."""
        ...

    async def delete(self, partition: int, key: bytes) -> Delivery:
        """Delete locally and queue a tombstone (a changelog record whose value is null,
        which recovery and log compaction treat as a deletion); return its delivery."""
        ...

    def scan(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """Every stored (user key, state bytes) of ``partition``; reserved keys left out."""
        ...


@runtime_checkable
class TagSink(Protocol):
    """Where live tags are served from (Redis): queued per user, written in batches."""

    @property
    def queued_users(self) -> int:
        """Users whose changes have not reached the sink yet."""
        ...

    def add(self, changes: Iterable[Mapping[str, Any]]) -> None:
        """Queue tag changes (newest per user and tag wins)."""
        ...

    async def flush(self) -> bool:
        """Write what is queued (a sink may send a bounded share per call and the rest
        later); False, or one of :data:`OUTAGES`, keeps it queued."""
        ...

    def drop_partitions(self, numbers: Collection[int]) -> int:
        """Forget queued changes of users in partitions ``numbers`` (revoked); return
        how many users were dropped."""
        ...


@runtime_checkable
class TriggerLedger(Protocol):
    """Which coupon triggers were claimed (``pending``) and delivered (``sent``)."""

    async def claim(self, trigger_ids: list[str]) -> set[str]:
        """The ids to send now: new ones and ones left ``pending``, never ``sent`` ones."""
        ...

    async def mark_sent(self, trigger_ids: list[str]) -> None:
        """Record that these triggers are on the broker."""
        ...


@runtime_checkable
class Sender(Protocol):
    """One output topic."""

    @property
    def name(self) -> str:
        """The topic's name (dead letters about refused records name it)."""
        ...

    async def send(self, key: bytes | None, value: bytes) -> Delivery:
        """Queue (key, value) for the topic; awaiting returns the record's delivery."""
        ...
