"""What the tagger sends: tag changes, risk tags, coupon triggers, dead letters, and Redis.

:class:`Outbox` queues each output record on its topic and keeps it (a
shipment) until :meth:`Outbox.confirm`, called by the tagger's flush, sees
the broker confirm it; a lost record is sent again. Coupon triggers go
through the trigger ledger (never sent twice once recorded sent), tag
changes also to the tag sink (Redis), best effort (a Redis that lost its data
is refilled by :mod:`streamtags.serving.projection`).

Every record is checked against the producer's limit first
(``max_record_bytes``, key plus value): one over it is not sent but
dead-lettered (``too_large``, naming the user and the size) and counted in
``streamtags_oversized_records_total{kind}``, so a single huge record never
makes a flush fail for everyone. The same check guards the tagger's state
writes (:meth:`Outbox.refuse`).

Failures and successes of the broker and of Redis are reported to the
:class:`~streamtags.live.health.DependencyHealth`, which logs each outage
once; per-record failures are logged at DEBUG only.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import orjson

from streamtags.contracts.codec import KEPT_KEY_BYTES, dead_letter, encode
from streamtags.contracts.values import shown
from streamtags.engine.output import Change, Output, Rejection, Trigger
from streamtags.errors import InvalidEvent
from streamtags.live.health import DependencyHealth
from streamtags.live.metrics import Metrics
from streamtags.live.seams import OUTAGES, Delivery, Sender, TagSink, TriggerLedger

__all__ = [
    "Outbox",
    "Oversized",
    "Senders",
    "Shipment",
    "delivered",
    "queued",
]

log = logging.getLogger("streamtags.live.outputs")

Oversized = Literal["state", "tag_change", "coupon_trigger", "dead_letter"]
"""What a record refused for its size was (the ``kind`` of the oversized-records metric)."""
_SAID = {"state": "the state", "tag_change": "a tag change", "coupon_trigger": "a coupon trigger"}


@dataclass(frozen=True, slots=True)
class Senders:
    """The output topics the tagger writes."""

    tags: Sender
    risk_tags: Sender
    coupon_triggers: Sender
    dead_letter: Sender


async def queued(sending: Awaitable[Delivery], health: DependencyHealth) -> Delivery | None:
    """Queue a record; None when even queueing failed (the flush will retry)."""
    try:
        return await sending
    except Exception as exc:  # whatever the producer raises, the record is not queued
        health.failed("kafka", f"could not queue a record: {exc!r}")
        log.debug("could not queue a record: %r", exc)
        return None


async def delivered(delivery: Delivery | None, health: DependencyHealth) -> bool:
    """Whether the broker confirmed ``delivery`` (either way, ``health`` hears of it)."""
    if delivery is None:
        return False
    try:
        await delivery
    except Exception as exc:  # whatever the producer raises, the record did not land
        health.failed("kafka", f"a record was not delivered: {exc!r}")
        log.debug("a record was not delivered: %r", exc)
        return False
    health.ok("kafka")
    return True


@dataclass(slots=True)
class Shipment:
    """One output record and its delivery; a lost record is sent again."""

    sender: Sender
    key: bytes | None
    value: bytes
    delivery: Delivery | None
    trigger_id: str | None = None  # until the ledger knows it was sent

    async def confirmed(self, health: DependencyHealth) -> bool:
        """Whether the broker has it, after sending it once more if it was lost."""
        if await delivered(self.delivery, health):
            return True
        self.delivery = await queued(self.sender.send(self.key, self.value), health)
        return await delivered(self.delivery, health)


class Outbox:
    """The tagger's output records until the broker confirms them."""

    def __init__(
        self,
        senders: Senders,
        *,
        sink: TagSink,
        guard: TriggerLedger,
        metrics: Metrics,
        health: DependencyHealth,
        max_record_bytes: int,
        now_ms: Callable[[], int],
        topic_of_stream: Mapping[str, str],
    ) -> None:
        self.senders = senders
        self.sink = sink
        self.guard = guard
        self.metrics = metrics
        self.health = health
        #: the largest record (key + value, bytes) sent; larger ones are dead-lettered
        self.max_record_bytes = max_record_bytes
        #: wall clock, epoch ms (dead letters' ``rejected_at``)
        self.now_ms = now_ms
        self.topic_of_stream = topic_of_stream
        #: shipments queued and not yet confirmed by a flush
        self.pending: list[Shipment] = []

    def fits(self, key: bytes | None, value: bytes) -> bool:
        """Whether the producer can send (key, value): within ``max_record_bytes``."""
        return len(key or b"") + len(value) <= self.max_record_bytes

    # -- queueing -----------------------------------------------------------------

    async def send(
        self, sender: Sender, key: bytes | None, value: bytes, trigger_id: str | None = None
    ) -> Shipment | None:
        """Queue a record for ``sender`` (None: it was too large, and dead-lettered)."""
        if not self.fits(key, value):
            kind: Oversized = "tag_change"
            if sender is self.senders.coupon_triggers:
                kind = "coupon_trigger"
            elif sender is self.senders.dead_letter:
                kind = "dead_letter"
            await self.refuse(kind, sender.name, -1, key or b"", value)
            return None
        delivery = await queued(sender.send(key, value), self.health)
        shipment = Shipment(sender, key, value, delivery, trigger_id)
        self.pending.append(shipment)
        return shipment

    async def refuse(
        self, kind: Oversized, topic: str, partition: int, key: bytes, value: bytes
    ) -> None:
        """Dead-letter a record over the size limit (``too_large``) instead of sending it;
        the letter's topic is where the record would have gone, its offset -1."""
        self.metrics.oversized_records.labels(kind).inc()
        size = len(key) + len(value)
        reason = (
            f"{_SAID.get(kind, 'a dead letter')} of user {shown(key.decode(errors='replace'))} is "
            f"{size} bytes, over the {self.max_record_bytes}-byte record limit: not written "
            f"to {topic}"
        )
        log.warning("%s", reason)
        if kind == "dead_letter":
            return  # the codec cuts dead letters to fit: never here, and it must not recurse
        letter = dead_letter(
            topic=topic,
            partition=partition,
            offset=-1,
            key=key,
            value=value,
            error=InvalidEvent(reason, "too_large"),
            now_ms=self.now_ms(),
            max_record_bytes=self.max_record_bytes - len(key),  # the record's key counts too
        )
        await self.send(self.senders.dead_letter, key, encode(letter))

    async def dead_letters(self, letters: Iterable[tuple[bytes | None, bytes]]) -> None:
        """Queue ready-made dead letters (key, encoded record, cut to fit the limit less
        :data:`KEPT_KEY_BYTES`): a longer key is cut to that many bytes as well (the
        letter itself holds the key as read)."""
        for key, value in letters:
            await self.send(self.senders.dead_letter, key and key[:KEPT_KEY_BYTES], value)

    async def ship(self, out: Output) -> None:
        """Queue an engine output: rejections, tag changes, triggers; update the sink."""
        for rejection in out.rejected:
            await self._dead_letter(rejection)
        if out.duplicates:
            self.metrics.duplicates.inc(out.duplicates)
        sent: list[Change] = []
        for change in out.changes:
            key = change["user_id"].encode()
            value = orjson.dumps(change)
            if not self.fits(key, value):  # one dead letter, also for a risk tag's two topics
                await self.refuse("tag_change", self.senders.tags.name, -1, key, value)
                continue
            await self.send(self.senders.tags, key, value)
            if change["category"] == "risk":
                await self.send(self.senders.risk_tags, key, value)
            self.metrics.tag_changes.labels(change["tag"], change["action"]).inc()
            sent.append(change)
        if out.triggers:
            await self._send_triggers(out.triggers)
        await self._update_sink(sent)

    async def _dead_letter(self, rejection: Rejection) -> None:
        """Send an event the engine did not apply to the dead-letter topic, with why."""
        decoded = rejection.decoded
        topic = self.topic_of_stream.get(decoded.source, decoded.source)
        raw = decoded.raw or decoded.event.model_dump_json(exclude_none=True).encode()
        key = decoded.event.user_id.encode()
        letter = dead_letter(
            topic=topic,
            partition=decoded.partition,
            offset=decoded.offset,
            key=key,
            value=raw,
            error=InvalidEvent(rejection.reason, rejection.kind),
            now_ms=self.now_ms(),
            max_record_bytes=self.max_record_bytes - len(key),
        )
        await self.send(self.senders.dead_letter, key, encode(letter))
        self.metrics.events_rejected.labels(topic, rejection.kind).inc()
        log.warning(
            "dead-lettered %s[%d]@%d (%s): %s",
            topic,
            decoded.partition,
            decoded.offset,
            rejection.kind,
            rejection.reason,
        )

    async def _send_triggers(self, triggers: list[Trigger]) -> None:
        """Send the triggers the ledger has not seen sent; record each as sent on delivery."""
        ids = [trigger["trigger_id"] for trigger in triggers]
        try:
            wanted = await self.guard.claim(ids)
        except OUTAGES as exc:
            self.health.failed("redis", f"trigger ledger: {exc!r}")
            log.debug("trigger ledger unavailable (%r); sending %d unguarded", exc, len(ids))
            wanted = set(ids)
        shipments = []
        for trigger in triggers:
            if trigger["trigger_id"] not in wanted:
                continue  # sent before a crash or a redelivery: never twice
            key, value = trigger["user_id"].encode(), orjson.dumps(trigger)
            shipment = await self.send(
                self.senders.coupon_triggers, key, value, trigger["trigger_id"]
            )
            if shipment is not None:
                shipments.append(shipment)
                self.metrics.coupon_triggers.inc()
        # Marked sent right away: the shorter a trigger stays ``pending``, the smaller
        # the window in which a crash makes a replay send it a second time.
        await self._mark_sent([s for s in shipments if await delivered(s.delivery, self.health)])

    async def _mark_sent(self, shipments: list[Shipment]) -> None:
        ids = [s.trigger_id for s in shipments if s.trigger_id is not None]
        if not ids:
            return
        try:
            await self.guard.mark_sent(ids)
        except OUTAGES as exc:
            self.health.failed("redis", f"trigger ledger: {exc!r}")
            log.debug("could not mark %d triggers sent (%r); replays resend them", len(ids), exc)
            return
        for shipment in shipments:
            shipment.trigger_id = None

    async def _update_sink(self, changes: list[Change]) -> None:
        if changes:
            self.sink.add(changes)
        if not self.sink.queued_users:
            return
        try:
            written = await self.sink.flush()
        except OUTAGES as exc:
            log.debug("tag sink unavailable (%r); %d users queued", exc, self.sink.queued_users)
            written = False
        if written:
            self.health.ok("redis")
        else:
            self.metrics.redis_errors.inc()
            self.health.failed("redis", f"tag sink: {self.sink.queued_users} users queued")
        self.metrics.redis_pending_users.set(self.sink.queued_users)

    # -- confirming -----------------------------------------------------------------

    def take(self) -> list[Shipment]:
        """The pending shipments, for a flush to confirm; new ones pend anew."""
        taken, self.pending = self.pending, []
        return taken

    async def confirm(self, shipments: list[Shipment]) -> list[Shipment]:
        """Wait until the broker has each (resending lost ones once); record delivered
        triggers as sent. Returns those still not confirmed, put back in front."""
        confirmed: list[Shipment] = []
        lost: list[Shipment] = []
        for shipment in shipments:
            (confirmed if await shipment.confirmed(self.health) else lost).append(shipment)
        await self._mark_sent(confirmed)
        self.pending[:0] = lost
        return lost
