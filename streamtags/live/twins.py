"""In-memory twins of the live tagger's seams, for tests: no broker, no Redis.

Each twin implements one Protocol of :mod:`streamtags.live.seams` the way
the production class behaves when all is well, and carries a :class:`Fault`
that a test flips at any moment to make it misbehave:

- ``fault.slow(delay_s)``: every call and every delivery waits ``delay_s``
  (wall-clock seconds) first;
- ``fault.hold()`` / ``fault.release()``: calls and deliveries wait until
  released, for races decided by the test rather than by timing;
- ``fault.down()``: calls raise ``ConnectionError``, deliveries fail with it;
- ``fault.time_out(after_s)``: calls hang ``after_s`` then raise
  ``TimeoutError``, deliveries fail the same way;
- ``fault.up()``: healthy again (and released).

Deliveries are asyncio tasks: they run whether or not anybody awaits them,
like a Kafka producer's, and a delivery's outcome is decided when it
resolves, not when it was queued.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

import orjson

from streamtags.live.seams import Delivery

__all__ = ["Fault", "MemoryStore", "MemoryTagSink", "MemoryTopic", "MemoryTriggerLedger"]


class Fault:
    """How a twin behaves right now (see the module docstring)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.mode: Literal["up", "down", "timeout"] = "up"
        self.delay_s = 0.0
        self.after_s = 0.0
        self._open = asyncio.Event()
        self._open.set()

    def up(self) -> None:
        """Healthy: no delay, no failure, nothing held."""
        self.mode, self.delay_s = "up", 0.0
        self._open.set()

    def down(self) -> None:
        """Fail at once: calls raise ``ConnectionError``, deliveries fail with it."""
        self.mode = "down"

    def time_out(self, after_s: float = 0.05) -> None:
        """Hang ``after_s`` seconds, then raise (or fail the delivery with) ``TimeoutError``."""
        self.mode, self.after_s = "timeout", after_s

    def slow(self, delay_s: float) -> None:
        """Work, but only after ``delay_s`` seconds per call and per delivery."""
        self.delay_s = delay_s

    def hold(self) -> None:
        """Make calls and deliveries wait until :meth:`release`."""
        self._open.clear()

    def release(self) -> None:
        """Let held calls and deliveries go on."""
        self._open.set()

    async def call(self, what: str) -> None:
        """Pass one call through the fault: wait, then maybe raise."""
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        await self._open.wait()
        if self.mode == "down":
            raise ConnectionError(f"{self.name} is down ({what})")
        if self.mode == "timeout":
            await asyncio.sleep(self.after_s)
            raise TimeoutError(f"{self.name} timed out after {self.after_s}s ({what})")

    def deliver(self, what: str, on_delivered: Callable[[], None]) -> asyncio.Task[None]:
        """A delivery that, unless the fault says otherwise, calls ``on_delivered``."""

        async def delivery() -> None:
            await self.call(what)
            on_delivered()

        return asyncio.get_running_loop().create_task(delivery())


class MemoryStore:
    """The state table: local per-partition bytes plus the confirmed changelog.

    ``local`` is what the worker's own store holds (written at once, as
    RocksDB is); ``changelog`` holds only the records the broker confirmed,
    in order: what another worker would recover (:meth:`restarted`). A
    deletion's record (a tombstone) has the value None.
    """

    def __init__(self) -> None:
        self.fault = Fault("changelog")
        self.local: dict[int, dict[bytes, bytes]] = {}
        self.changelog: list[tuple[int, bytes, bytes | None]] = []
        #: records queued so far, confirmed or not
        self.puts = 0

    def get(self, partition: int, key: bytes) -> bytes | None:
        """The locally stored bytes of ``key``."""
        return self.local.get(partition, {}).get(key)

    async def put(self, partition: int, key: bytes, value: bytes) -> asyncio.Task[None]:
        """Store locally; the changelog record lands when its delivery resolves."""
        self.puts += 1
        self.local.setdefault(partition, {})[key] = value
        record = (partition, key, value)
        return self.fault.deliver(f"put {key!r}", lambda: self.changelog.append(record))

    async def put_many(
        self, partition: int, records: Sequence[tuple[bytes, bytes]]
    ) -> list[tuple[int, Delivery]]:
        """Store locally; the records land together when their one delivery resolves."""
        self.puts += len(records)
        local = self.local.setdefault(partition, {})
        local.update(records)
        landed = [(partition, key, value) for key, value in records]
        return [
            (
                len(records),
                self.fault.deliver(f"{len(records)} puts", lambda: self.changelog.extend(landed)),
            )
        ]

    async def delete(self, partition: int, key: bytes) -> asyncio.Task[None]:
        """Delete locally; the tombstone lands when its delivery resolves."""
        self.puts += 1
        self.local.get(partition, {}).pop(key, None)
        record = (partition, key, None)
        return self.fault.deliver(f"delete {key!r}", lambda: self.changelog.append(record))

    def scan(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """Every stored user record of ``partition`` (reserved ``\\x00`` keys left out)."""
        for key, value in list(self.local.get(partition, {}).items()):
            if not key.startswith(b"\x00"):
                yield key, value

    def durable(self, partition: int) -> dict[bytes, bytes]:
        """What the confirmed changelog says ``partition`` holds (latest record per key;
        a tombstone deletes the key, as recovery does)."""
        held: dict[bytes, bytes] = {}
        for number, key, value in self.changelog:
            if number != partition:
                continue
            if value is None:
                held.pop(key, None)
            else:
                held[key] = value
        return held

    def restarted(self) -> MemoryStore:
        """A store rebuilt from the confirmed changelog only, as after a crash."""
        twin = MemoryStore()
        twin.changelog = list(self.changelog)
        for number in {number for number, _, _ in self.changelog}:
            twin.local[number] = self.durable(number)
        return twin


class MemoryTagSink:
    """The Redis tag store: ``tags`` maps user -> tag -> the change that set it."""

    def __init__(self, *, partition_of: Callable[[str], int] = lambda user_id: 0) -> None:
        self.fault = Fault("tag sink")
        self.tags: dict[str, dict[str, dict[str, Any]]] = {}
        self._queued: dict[str, dict[str, dict[str, Any] | None]] = {}
        self.partition_of = partition_of

    @property
    def queued_users(self) -> int:
        """Users whose changes wait for the next successful flush."""
        return len(self._queued)

    def add(self, changes: Iterable[Mapping[str, Any]]) -> None:
        """Queue changes; a cleared tag is deleted, newest per user and tag wins."""
        for change in changes:
            cleared = change["action"] == "cleared"
            self._queued.setdefault(change["user_id"], {})[change["tag"]] = (
                None if cleared else dict(change)
            )

    def drop_partitions(self, numbers: Collection[int]) -> int:
        """Forget queued changes of users in partitions ``numbers`` (``partition_of``)."""
        dropped = [user for user in self._queued if self.partition_of(user) in numbers]
        for user_id in dropped:
            del self._queued[user_id]
        return len(dropped)

    async def flush(self) -> bool:
        """Apply everything queued, or raise per the fault and keep it queued."""
        if not self._queued:
            return True
        await self.fault.call(f"flush {len(self._queued)} users")
        batch, self._queued = self._queued, {}
        for user_id, fields in batch.items():
            tags = self.tags.setdefault(user_id, {})
            for tag, change in fields.items():
                if change is None:
                    tags.pop(tag, None)
                else:
                    tags[tag] = change
        return True


class MemoryTriggerLedger:
    """The trigger guard: ``states`` maps trigger id -> ``pending`` or ``sent``."""

    def __init__(self) -> None:
        self.fault = Fault("trigger ledger")
        self.states: dict[str, Literal["pending", "sent"]] = {}

    async def claim(self, trigger_ids: list[str]) -> set[str]:
        """Claim new ids as ``pending``; return those not yet ``sent``."""
        await self.fault.call(f"claim {len(trigger_ids)}")
        wanted = set()
        for trigger_id in trigger_ids:
            state = self.states.setdefault(trigger_id, "pending")
            if state == "pending":
                wanted.add(trigger_id)
        return wanted

    async def mark_sent(self, trigger_ids: list[str]) -> None:
        """Record these ids as ``sent``."""
        await self.fault.call(f"mark {len(trigger_ids)} sent")
        for trigger_id in trigger_ids:
            self.states[trigger_id] = "sent"


class MemoryTopic:
    """An output topic: ``records`` holds what the broker confirmed, in order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.fault = Fault(name)
        self.records: list[tuple[bytes | None, bytes]] = []

    async def send(self, key: bytes | None, value: bytes) -> asyncio.Task[None]:
        """Queue the record; it lands when its delivery resolves."""
        record = (key, value)
        return self.fault.deliver(f"send to {self.name}", lambda: self.records.append(record))

    def values(self) -> list[Any]:
        """The confirmed records' values, decoded from JSON."""
        return [orjson.loads(value) for _, value in self.records]
