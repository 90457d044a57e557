"""What the engine emits: tag changes, coupon triggers, and one call's :class:`Output`.

Changes and triggers are plain dicts (the hot path builds thousands of
them) typed as TypedDicts, so mypy checks every key the engine writes; their
keys are the fields of the published pydantic models in
:mod:`streamtags.contracts.records` (a unit test holds them together).

:class:`UserTurn` is what every step is handed while it works on one user:
whose state, the wall-clock time, and the output to append to.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import NamedTuple, TypedDict, final

import orjson

from streamtags.contracts.ingest import Decoded
from streamtags.contracts.records import Category, Severity, TagAction
from streamtags.engine.state import UserState
from streamtags.errors import ErrorKind

__all__ = [
    "Change",
    "CouponOfferDict",
    "EvidenceDict",
    "Output",
    "Rejection",
    "RuleRefDict",
    "Trigger",
    "TriggerItemDict",
    "UserTurn",
    "digest",
]


class RuleRefDict(TypedDict):
    """:class:`streamtags.contracts.records.RuleRef` as plain data."""

    name: str
    version: int


class EvidenceDict(TypedDict):
    """:class:`streamtags.contracts.records.Evidence` as plain data."""

    reason: str
    #: feature values; durations in seconds
    figures: dict[str, float]
    event_ids: list[str]


@final
class Change(TypedDict):
    """A tag change, shaped exactly as :class:`streamtags.contracts.records.TagChange`.

    Times are RFC 3339 UTC strings with milliseconds.
    """

    change_id: str
    user_id: str
    tag: str
    action: TagAction
    category: Category
    severity: Severity
    ts: str
    emitted_at: str
    expires_at: str | None
    rule: RuleRefDict
    evidence: EvidenceDict


class TriggerItemDict(TypedDict):
    """:class:`streamtags.contracts.records.TriggerItem` as plain data."""

    sku: str
    quantity: int
    #: currency units
    unit_price: float | None


class CouponOfferDict(TypedDict):
    """:class:`streamtags.contracts.records.CouponOffer` as plain data."""

    discount_pct: float
    #: RFC 3339 UTC
    valid_until: str


@final
class Trigger(TypedDict):
    """A coupon trigger, shaped exactly as :class:`streamtags.contracts.records.CouponTrigger`."""

    trigger_id: str
    user_id: str
    cart_id: str | None
    items: list[TriggerItemDict]
    #: currency units
    cart_value: float
    #: RFC 3339 UTC
    abandoned_at: str
    coupon: CouponOfferDict
    rule: RuleRefDict


class Rejection(NamedTuple):
    """An event the engine did not apply, and why: it goes to the dead-letter topic."""

    decoded: Decoded
    #: ``future_timestamp``, ``too_late`` or ``engine_error``
    kind: ErrorKind
    #: for people
    reason: str


@dataclass(slots=True)
class Output:
    """What one call produced."""

    changes: list[Change] = field(default_factory=list)
    triggers: list[Trigger] = field(default_factory=list)
    #: users whose state changed and must be written back
    dirty: set[str] = field(default_factory=set)
    #: for each fired deadline: wall-clock ms after its deadline plus lateness
    fire_delays_ms: list[int] = field(default_factory=list)
    #: events the engine did not apply (too far ahead, too late, a rule bug): dead-letter them
    rejected: list[Rejection] = field(default_factory=list)
    #: events dropped because an event with the same id was already waiting (producer retries)
    duplicates: int = 0

    def extend(self, other: Output) -> None:
        """Append another output's contents."""
        self.changes.extend(other.changes)
        self.triggers.extend(other.triggers)
        self.dirty |= other.dirty
        self.fire_delays_ms.extend(other.fire_delays_ms)
        self.rejected.extend(other.rejected)
        self.duplicates += other.duplicates

    @property
    def failed(self) -> list[tuple[Decoded, str]]:
        """The events a rule failed on (``engine_error``), with the error."""
        return [(r.decoded, r.reason) for r in self.rejected if r.kind == "engine_error"]


@dataclass(slots=True)
class UserTurn:
    """One user's turn through the engine's steps (for one event, or one tick)."""

    user_id: str
    state: UserState
    #: wall-clock time of the call (epoch ms); stamped on changes as ``emitted_at``
    now_ms: int
    #: where changes and triggers go
    out: Output


def digest(*parts: str | int) -> str:
    """A short deterministic id (20 hex digits) over ``parts``: same input, same id.

    The parts are encoded as a JSON array, so no two different lists of parts
    share an encoding (``("a|b", "c")`` and ``("a", "b|c")`` differ).
    """
    return hashlib.blake2b(orjson.dumps(parts), digest_size=10).hexdigest()
