"""The memory budget of the worker's cached user states.

Each engine partition keeps the states it has read or changed in memory
(``Partition.states``); the store holds them all. Sizes are estimated from a
state's stored bytes, noted whenever it is read from or written to the
store: in memory a state takes about ten times its stored size (measured: a
407-byte state is ~4.2 KiB of Python objects), so :data:`MEMORY_PER_STORED_BYTE`
is 12. Over the budget, clean users (written back, not dirty) are evicted,
least recently read or written first, down to :data:`LOW_WATER` of the
budget; every partition gives up the same share of its cache.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

__all__ = ["LOW_WATER", "MEMORY_PER_STORED_BYTE", "NEW_USER_STORED_BYTES", "CacheBudget"]

#: Estimated bytes in memory per byte of a stored state (measured ~10.3, plus the
#: cache's own dict entries).
MEMORY_PER_STORED_BYTE = 12
#: Stored size assumed for a user not stored yet, bytes (until the first write).
NEW_USER_STORED_BYTES = 256
#: Eviction stops at this share of the budget, so it does not run on every flush.
LOW_WATER = 0.9


class CacheBudget:
    """Estimated memory of each partition's cached users, in recency order."""

    def __init__(self, *, max_bytes: int) -> None:
        #: the budget, bytes (estimated memory)
        self.max_bytes = max_bytes
        #: estimated memory of every cached user, bytes
        self.total = 0
        self._sizes: dict[int, dict[str, int]] = {}

    def note(self, number: int, user_id: str, stored_bytes: int | None) -> None:
        """``user_id`` of partition ``number`` was just read or written (``stored_bytes``
        long; None for a user not stored yet): its estimate, and its recency."""
        sizes = self._sizes.setdefault(number, {})
        estimate = MEMORY_PER_STORED_BYTE * (stored_bytes or NEW_USER_STORED_BYTES)
        self.total += estimate - sizes.pop(user_id, 0)
        sizes[user_id] = estimate  # re-inserted: most recent last

    def forget(self, number: int, user_ids: Iterable[str]) -> None:
        """These users left partition ``number``'s cache."""
        sizes = self._sizes.get(number)
        if sizes is None:
            return
        for user_id in user_ids:
            self.total -= sizes.pop(user_id, 0)

    def drop(self, number: int) -> None:
        """Partition ``number`` is gone, with its whole cache."""
        self.total -= sum(self._sizes.pop(number, {}).values())

    def users(self, number: int) -> int:
        """Users counted in partition ``number``'s cache."""
        return len(self._sizes.get(number, ()))

    def evictions(self, dirty: Mapping[int, Collection[str]]) -> dict[int, list[str]]:
        """Per partition, the clean users to evict to get back under the budget
        (empty when under it); never a user in ``dirty``."""
        if self.total <= self.max_bytes:
            return {}
        share = (self.total - LOW_WATER * self.max_bytes) / self.total
        chosen: dict[int, list[str]] = {}
        for number, sizes in self._sizes.items():
            still_dirty = dirty.get(number, ())
            wanted = share * sum(sizes.values())
            users = chosen[number] = []
            for user_id, estimate in sizes.items():  # least recent first
                if wanted <= 0:
                    break
                if user_id not in still_dirty:
                    users.append(user_id)
                    wanted -= estimate
        return chosen
