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
from typing import TypedDict, final

from streamtags.contracts.ingest import Decoded
from streamtags.contracts.records import Category, Severity, TagAction
from streamtags.engine.state import UserState

__all__ = [
    "Change",
    "CouponOfferDict",
    "EvidenceDict",
    "Output",
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


@dataclass(slots=True)
class Output:
    """What one call produced."""

    changes: list[Change] = field(default_factory=list)
    triggers: list[Trigger] = field(default_factory=list)
    #: users whose state changed and must be written back
    dirty: set[str] = field(default_factory=set)
    #: for each fired deadline: wall-clock ms after its deadline plus lateness
    fire_delays_ms: list[int] = field(default_factory=list)
    #: events the engine could not apply (a rule bug), with the error: dead-letter them
    failed: list[tuple[Decoded, str]] = field(default_factory=list)

    def extend(self, other: Output) -> None:
        """Append another output's contents."""
        self.changes.extend(other.changes)
        self.triggers.extend(other.triggers)
        self.dirty |= other.dirty
        self.fire_delays_ms.extend(other.fire_delays_ms)
        self.failed.extend(other.failed)


@dataclass(slots=True)
class UserTurn:
    """One user's turn through the engine's steps (for one event, or one tick)."""

    user_id: str
    state: UserState
    #: wall-clock time of the call (epoch ms); stamped on changes as ``emitted_at``
    now_ms: int
    #: where changes and triggers go
    out: Output


def digest(*parts: object) -> str:
    """A short deterministic id (20 hex digits) over ``parts``: same input, same id."""
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=10).hexdigest()
