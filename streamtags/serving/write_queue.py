"""The Redis sink's queue: field writes waiting for Redis, per user, oldest user first.

A write waits here until a pipeline carrying it succeeds: normally for one
batch, during an outage until Redis is back. Per user and tag only the write
that wins is kept, by the same rule the Lua script applies in Redis (see
:mod:`~streamtags.serving.redis_layout`), so the queue never sends what Redis
would reject anyway and never drops what Redis would take.

Pressure. Past ``max_users`` users the queue sheds users whose writes are
all sets or restores, oldest first: their tags are in the users' state and a
resync projects them again, so the queue says so (:attr:`WriteQueue.shed`).
A user with a queued clear is never shed: a lost clear would leave a tag
live in Redis that the worker no longer holds, and no resync removes it. So
the queue can pass ``max_users`` by the users with clears, which are small.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

from streamtags.serving.redis_layout import WriteOp

__all__ = ["FieldWrite", "UserWrites", "WriteQueue"]

#: When the queue sheds users, it goes down to this share of ``max_users``, so it
#: sheds in bulk rather than one user per change.
SHED_TO = 0.9


@dataclass(frozen=True, slots=True)
class FieldWrite:
    """One field's write, as :data:`~streamtags.serving.redis_layout.APPLY_SCRIPT` takes it."""

    op: WriteOp
    #: epoch ms: the change's event time, or the state's settled time for a restore
    version: int
    #: ``set``/``restore``: the value's ``expires_at_ms``; ``clear``: the tombstone's
    #: lifetime when Redis holds nothing for the field (epoch ms, event time)
    expires_ms: int
    value: bytes

    @property
    def expires_at_ms(self) -> int:
        """What the written field's ``expires_at_ms`` will say (0 for a tombstone)."""
        return 0 if self.op == "clear" else self.expires_ms

    def wins_over(self, held: FieldWrite) -> bool:
        """Whether this write replaces ``held`` (the rule the Lua script applies)."""
        if self.op == "restore":
            return held.version < self.version and held.expires_at_ms != self.expires_at_ms
        return held.version <= self.version


UserWrites = dict[str, FieldWrite]
"""One user's queued writes: tag -> write."""


class WriteQueue:
    """Users' queued field writes, in the order users were first queued."""

    def __init__(self, *, max_users: int, partition_of: Callable[[str], int]) -> None:
        self.max_users = max_users
        self.partition_of = partition_of
        self._users: dict[str, UserWrites] = {}
        #: users shed under pressure since the last :meth:`take_shed`
        self.shed = 0

    def __len__(self) -> int:
        return len(self._users)

    def __bool__(self) -> bool:
        return bool(self._users)

    def put(self, user_id: str, tag: str, write: FieldWrite) -> None:
        """Queue ``write`` unless what is queued for the field wins over it."""
        writes = self._users.setdefault(user_id, {})
        held = writes.get(tag)
        if held is None or write.wins_over(held):
            writes[tag] = write
        if len(self._users) > self.max_users:
            self._shed()

    def take(self, count: int) -> dict[str, UserWrites]:
        """Remove and return the ``count`` oldest users' writes."""
        taken: dict[str, UserWrites] = {}
        for user_id in self._users:
            if len(taken) >= count:
                break
            taken[user_id] = self._users[user_id]
        for user_id in taken:
            del self._users[user_id]
        return taken

    def put_back(self, taken: dict[str, UserWrites]) -> None:
        """Return writes that did not reach Redis, in front (they are older); a write
        queued since for the same field stays if it wins."""
        merged: dict[str, UserWrites] = {}
        for user_id, writes in taken.items():
            newer = self._users.pop(user_id, {})
            kept = dict(writes)
            for tag, write in newer.items():
                held = kept.get(tag)
                if held is None or write.wins_over(held):
                    kept[tag] = write
            merged[user_id] = kept
        merged.update(self._users)
        self._users = merged

    def drop_partitions(self, numbers: Collection[int]) -> int:
        """Forget the users of partitions ``numbers``; return how many were queued."""
        wanted = set(numbers)
        if not wanted:
            return 0
        dropped = [user for user in self._users if self.partition_of(user) in wanted]
        for user_id in dropped:
            del self._users[user_id]
        return len(dropped)

    def users_with_clears(self) -> int:
        """Queued users with at least one clear (never shed)."""
        return sum(1 for writes in self._users.values() if _has_clear(writes))

    def take_shed(self) -> int:
        """Users shed since the last call (their tags need a resync), and reset."""
        shed, self.shed = self.shed, 0
        return shed

    def _shed(self) -> None:
        goal = int(self.max_users * SHED_TO)
        excess = len(self._users) - goal
        victims = list(_oldest_without_clears(self._users, excess))
        for user_id in victims:
            del self._users[user_id]
        self.shed += len(victims)


def _has_clear(writes: UserWrites) -> bool:
    return any(write.op == "clear" for write in writes.values())


def _oldest_without_clears(users: dict[str, UserWrites], count: int) -> Iterator[str]:
    if count <= 0:
        return
    for user_id, writes in users.items():
        if not _has_clear(writes):
            yield user_id
            count -= 1
            if count == 0:
                return
