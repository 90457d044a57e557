"""Redis as a projection of the engine's state: live tags projected again from state.

Kafka (the state changelog) is the source of truth; the Redis hashes are a
projection of each user's :attr:`~streamtags.engine.state.UserState.tags`.
Normally tag changes keep the projection current. When that chain breaks,
:class:`Projector` rebuilds it from state:

- Redis lost data (restarted empty or from an older snapshot, flushed): the
  sink's marker is gone or behind (:meth:`~streamtags.serving.redis_sink.RedisSink.check`);
- the sink shed queued set writes under pressure during a long outage;
- a partition became this worker's (at start and after each rebalance): the
  previous owner dropped its queued writes at revoke, and Redis may have lost
  data while nobody watched.

A restored tag is written with a ``restore`` write (see
:mod:`~streamtags.serving.redis_layout`): versioned at the state's settled
time, it fills gaps and never overwrites newer data or a field that already
agrees with the state, so projecting is idempotent and safe next to live
writes. The state keeps no evidence, so a restored tag's evidence says
:data:`RESTORED_REASON`, with no figures and no event ids; its ``change_id``
is the id of the change that applied the tag (on the tags topic, with the
original evidence), and ``applied_at`` when the tag was applied.

``streamtags redis resync`` (:mod:`streamtags.cli.redis`) does the same
from the state changelog topic, for any workers' partitions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from streamtags.contracts.records import iso_ms
from streamtags.engine.output import digest
from streamtags.engine.partition import Engine, Partition
from streamtags.engine.state import UserState
from streamtags.engine.tags import TagBook
from streamtags.errors import StateFormatError
from streamtags.serving.redis_layout import encode_tag
from streamtags.serving.redis_sink import CHUNK_USERS, RedisSink
from streamtags.serving.write_queue import FieldWrite

__all__ = ["RESTORED_REASON", "Projection", "Projector", "restored_writes"]

log = logging.getLogger("streamtags.redis")

#: The evidence reason of a tag projected from state (the state keeps no evidence).
RESTORED_REASON = (
    "restored from the user's state after Redis lost it; the evidence is on the tags "
    "topic, in the change with this change_id"
)


def restored_writes(user_id: str, state: UserState, book: TagBook) -> dict[str, FieldWrite]:
    """``restore`` writes for every live tag in ``state`` whose rule still exists.

    Their version is the state's settled time (epoch ms, event time): every
    change the state reflects is at or before it, every later one after it."""
    version = max(state.processed_to_ms, state.latest_ts)
    writes: dict[str, FieldWrite] = {}
    for tag, live in state.tags.items():
        rule = book.by_tag.get(tag)
        if rule is None:  # the rule was removed: the engine drops the tag at its next tick
            continue
        applied = {
            "tag": tag,
            "category": rule.category,
            "severity": rule.severity,
            "expires_at": iso_ms(live.expires_at_ms),
            "rule": {"name": rule.name, "version": rule.version},
            "evidence": {"reason": RESTORED_REASON, "figures": {}, "event_ids": []},
            "change_id": digest(user_id, tag, "applied", rule.version, live.applied_at_ms),
        }
        value = encode_tag(
            applied,
            expires_at_ms=live.expires_at_ms,
            applied_at=iso_ms(live.applied_at_ms),
            version=version,
        )
        writes[tag] = FieldWrite("restore", version, live.expires_at_ms, value)
    return writes


@dataclass(slots=True)
class Projection:
    """What one projection did."""

    #: users with live tags, and their tags, queued as restores
    users: int = 0
    tags: int = 0
    #: whether every partition asked for was projected (False: Redis failed, retry)
    complete: bool = True


class Projector:
    """Keeps one worker's Redis projection whole (see the module docstring).

    ``owned()`` gives the worker's engine partitions by number (the live
    mapping: a partition replaced or gone was revoked) and ``scan(number)``
    the stored (user key, state bytes) of a partition. :meth:`tick` is
    meant to run about once a second."""

    def __init__(
        self,
        sink: RedisSink,
        *,
        engine: Engine,
        owned: Callable[[], Mapping[int, Partition]],
        scan: Callable[[int], Iterable[tuple[bytes, bytes]]],
        chunk_users: int = CHUNK_USERS,
    ) -> None:
        self.sink = sink
        self.engine = engine
        self.owned = owned
        self.scan = scan
        self.chunk_users = chunk_users
        #: partition number -> the engine partition projected (a new object: reassigned)
        self._projected: dict[int, Partition] = {}

    async def tick(self) -> Projection | None:
        """Probe Redis, send queued writes, and project the partitions that need it;
        the projection done, if any."""
        if await self.sink.check():
            log.warning("Redis lost data (this run's marker is gone or behind): projecting again")
        if self.sink.resync_needed:
            self.sink.resync_needed = False
            self._projected.clear()
        if not self.sink.reachable or not await self.sink.drain():
            return None
        owned = self.owned()
        for number in [n for n in self._projected if n not in owned]:
            del self._projected[number]
        due = sorted(n for n, part in owned.items() if self._projected.get(n) is not part)
        return await self.project(due) if due else None

    async def project(self, numbers: Iterable[int]) -> Projection:
        """Queue and send every live tag of partitions ``numbers`` (those still owned)."""
        started = time.monotonic()
        done = Projection()
        projected = []
        for number in numbers:
            part = self.owned().get(number)
            if part is None:
                continue
            if not await self._project_partition(number, part, done):
                done.complete = False
                break
            if self.owned().get(number) is part:
                self._projected[number] = part
                projected.append(number)
        log.info(
            "projected %d live tags of %d users of partitions %s into Redis in %.2f s%s",
            done.tags,
            done.users,
            projected,
            time.monotonic() - started,
            "" if done.complete else " (interrupted: Redis failed; retried on the next tick)",
        )
        return done

    async def _project_partition(self, number: int, part: Partition, done: Projection) -> bool:
        """Project one partition in chunks; False if Redis failed. Stops early (True)
        when the partition is revoked meanwhile: its new owner projects it."""
        book = self.engine.tags
        pending = 0
        for index, (user_id, state) in enumerate(self._states(part, self.scan(number)), 1):
            writes = restored_writes(user_id, state, book)
            if writes:
                self.sink.restore(user_id, writes)
                done.users += 1
                done.tags += len(writes)
                pending += 1
            if pending >= self.chunk_users or index % self.chunk_users == 0:
                if pending and not await self.sink.drain():
                    return False
                pending = 0
                await asyncio.sleep(0)  # let the agent and timers run between chunks
                if self.owned().get(number) is not part:
                    return True  # revoked while we yielded: do not touch its store again
        return await self.sink.drain()

    def _states(
        self, part: Partition, stored: Iterable[tuple[bytes, bytes]]
    ) -> Iterator[tuple[str, UserState]]:
        """The partition's user states: cached ones (they may be newer than the store's),
        then stored ones not cached. Unreadable stored states are skipped."""
        cached = dict(part.states)  # a snapshot: the cache changes while we yield
        yield from cached.items()
        for key, raw in stored:
            user_id = key.decode()
            if user_id in cached:
                continue
            try:
                yield user_id, UserState.from_bytes(raw, self.engine.features)
            except StateFormatError:
                continue
