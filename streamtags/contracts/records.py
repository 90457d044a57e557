"""Output record contracts: what other systems read from streamtags.

- :class:`TagChange` on ``streamtags.tags`` (and, risk only, ``streamtags.risk-tags``);
- :class:`CouponTrigger` on ``streamtags.coupon-triggers``;
- :class:`DeadLetter` on ``streamtags.dead-letter``.

Times are RFC 3339 strings in UTC with millisecond precision.
"""

from __future__ import annotations

import functools
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from streamtags.errors import ErrorKind

__all__ = [
    "Category",
    "CouponOffer",
    "CouponTrigger",
    "DeadLetter",
    "Evidence",
    "RuleRef",
    "Severity",
    "TagAction",
    "TagChange",
    "TriggerItem",
    "iso_ms",
]

Category = Literal["risk", "marketing", "service", "value"]
Severity = Literal["info", "low", "medium", "high"]
TagAction = Literal["applied", "renewed", "cleared"]


def iso_ms(epoch_ms: int) -> str:
    """Format epoch milliseconds as RFC 3339 UTC, e.g. ``2026-11-22T10:00:00.000Z``."""
    seconds, millis = divmod(int(epoch_ms), 1000)
    return f"{_iso_seconds(seconds)}.{millis:03d}Z"


@functools.lru_cache(maxsize=8192)
def _iso_seconds(seconds: int) -> str:
    t = time.gmtime(seconds)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    )


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleRef(_Record):
    """The rule that produced a change."""

    name: str = Field(description="Rule name, as in rules/*.yaml.")
    version: int = Field(description="Rule version, bumped by the analyst on every change.")


class Evidence(_Record):
    """Why a tag changed: the figures and the events behind it."""

    reason: str = Field(description="Human-readable explanation.")
    figures: dict[str, float] = Field(
        default_factory=dict,
        description="Feature values at the time of the change (counts, sums, ratios; "
        "durations in seconds).",
    )
    event_ids: list[str] = Field(
        default_factory=list, description="Ids of the input events that made it true."
    )


class TagChange(_Record):
    """One change of one user's tag (``streamtags.tags``)."""

    change_id: str = Field(
        description="Deterministic id: the same input produces the same id, so a redelivered "
        "change can be deduplicated."
    )
    user_id: str = Field(description="The user; also the message key.")
    tag: str = Field(description="Tag name, e.g. cart_abandoned.")
    action: TagAction = Field(
        description="applied (new), renewed (still true, expiry extended) or cleared."
    )
    category: Category = Field(description="risk, marketing, service or value.")
    severity: Severity = Field(description="How urgent the tag is for people acting on it.")
    ts: str = Field(description="Event time of the change, RFC 3339 UTC.")
    emitted_at: str = Field(description="Wall-clock time the worker emitted it, RFC 3339 UTC.")
    expires_at: str | None = Field(
        description="When the tag lapses unless renewed, RFC 3339 UTC; null when cleared."
    )
    rule: RuleRef = Field(description="The rule that produced the change.")
    evidence: Evidence = Field(description="The figures and event ids behind the change.")


class TriggerItem(_Record):
    """One product in an abandoned cart."""

    sku: str = Field(description="Stock-keeping unit.")
    quantity: int = Field(description="Units in the cart.")
    unit_price: float | None = Field(description="Unit price shown, currency units, if known.")


class CouponOffer(_Record):
    """The coupon marketing should offer."""

    discount_pct: float = Field(description="Discount in percent of the cart value.")
    valid_until: str = Field(description="When the coupon lapses, RFC 3339 UTC.")


class CouponTrigger(_Record):
    """A cart-recovery coupon trigger (``streamtags.coupon-triggers``); one per cart."""

    trigger_id: str = Field(description="Idempotency key: one per user and cart.")
    user_id: str = Field(description="The user; also the message key.")
    cart_id: str | None = Field(description="The abandoned cart, if the events named one.")
    items: list[TriggerItem] = Field(description="Products in the cart when it was abandoned.")
    cart_value: float = Field(description="Sum of quantity x unit price, currency units.")
    abandoned_at: str = Field(description="Event time the cart counted as abandoned, RFC 3339.")
    coupon: CouponOffer = Field(description="The offer to make.")
    rule: RuleRef = Field(description="The rule that produced the trigger.")


class DeadLetter(_Record):
    """An input message that could not be accepted (``streamtags.dead-letter``).

    A message too large to copy whole into a record the producer can send has
    its value (and, rarely, its key) cut short; ``value_truncated`` says so,
    and ``value_bytes`` and ``value_sha256`` still identify the original.
    """

    topic: str = Field(description="Source topic.")
    partition: int = Field(description="Source partition.")
    offset: int = Field(description="Source offset.")
    key_b64: str | None = Field(
        description="The message key, base64; null if it had none. Cut to its first "
        "1024 bytes when key_truncated."
    )
    value_b64: str = Field(
        description="The raw message value, base64; only its first bytes when value_truncated."
    )
    reason: str = Field(description="Why it was rejected, readable by a person.")
    error_kind: ErrorKind = Field(
        description="not_json: unparseable; not_object: JSON but not an object; invalid: "
        "failed the contract; wrong_key: a valid event whose message key is not its user_id "
        "(or is null); future_timestamp: stamped further ahead of the worker's wall clock "
        "than the allowed skew; too_late: older than the rules can still use; engine_error: "
        "valid, but a rule failed on it (a bug to report); too_large: a record the worker "
        "would write (a user's state, a tag change, a coupon trigger) is over the producer's "
        "size limit and was not written: the value is that record (cut to fit), the key the "
        "user, the topic where it would have gone, the offset -1."
    )
    rejected_at: str = Field(description="Wall-clock time of rejection, RFC 3339 UTC.")
    value_truncated: bool = Field(
        default=False,
        description="True when value_b64 holds only the first bytes of the value, so the "
        "record stays within the producer's size limit.",
    )
    key_truncated: bool = Field(
        default=False, description="True when key_b64 holds only the first 1024 bytes of the key."
    )
    value_bytes: int | None = Field(
        default=None, description="Length of the whole original value in bytes."
    )
    value_sha256: str | None = Field(
        default=None, description="SHA-256 of the whole original value, lower-case hex."
    )
