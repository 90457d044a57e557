"""One user's state, and its compact versioned bytes.

Everything the engine knows about a user lives here, so a worker that
takes over a partition rebuilds it from the changelog alone: feature data,
live tags, pending deadlines (with cart contents), what already fired,
the user's time zone and consent, the highest input offset read per source
topic (which makes redeliveries after a crash idempotent), how far the
user's time is settled, and the events still waiting in the reorder buffer
(stored as the bytes they arrived as).

All times are epoch milliseconds, UTC, on event time. In memory the parts
are named types (:class:`LiveTag`, :class:`PendingDeadline`,
:class:`CartItem`); on disk they are positional JSON lists, so the bytes
stay small. Version 2 added the settled time and the buffer; version 1
bytes still load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from streamtags.contracts.codec import decode_event
from streamtags.contracts.ingest import Decoded
from streamtags.errors import DataError, StateFormatError

__all__ = [
    "FORMAT_VERSION",
    "READABLE_VERSIONS",
    "CartItem",
    "LiveTag",
    "Packer",
    "PendingDeadline",
    "StateOutline",
    "UserState",
]

#: First byte of every serialised state; bump when the layout changes.
FORMAT_VERSION = 2
#: Versions :meth:`UserState.from_bytes` reads (1 had no reorder buffer).
READABLE_VERSIONS = (1, 2)

_SHORT = {"orders": "o", "browse": "b", "logins": "l", "accounts": "a"}
_LONG = {v: k for k, v in _SHORT.items()}


class Packer(Protocol):
    """Turns one feature's data into its compact stored form and back."""

    def pack(self, data: Any, base_ms: int) -> Any:
        """Stored form, with times relative to ``base_ms``."""

    def unpack(self, packed: Any, base_ms: int) -> Any:
        """Data from the stored form."""


def _rel(times: Mapping[str, int], base: int) -> dict[str, int]:
    return {k: base - v for k, v in times.items()}


def _abs(times: Mapping[str, int], base: int) -> dict[str, int]:
    return {k: base - v for k, v in times.items()}


@dataclass(slots=True)
class LiveTag:
    """A tag the user holds. Mutable: a renewal moves its expiry."""

    #: event time (epoch ms, UTC) the tag was applied
    applied_at_ms: int
    #: event time (epoch ms, UTC) the tag lapses unless renewed
    expires_at_ms: int


@dataclass(slots=True)
class CartItem:
    """One product in a pending cart. Mutable: adds and removals change the quantity."""

    quantity: int
    #: the last unit price the events showed, currency units, if any
    unit_price: float | None


@dataclass(slots=True)
class PendingDeadline:
    """An armed absence deadline ("A not followed by B") for one rule and match key."""

    #: event time (epoch ms, UTC) of the first start that armed it
    first_start_ms: int
    #: event time (epoch ms, UTC) it fires at unless a stop comes first; later starts move it
    deadline_ms: int
    #: the starts behind it: the first and the latest two event ids
    event_ids: list[str]
    #: sku -> item, for rules that collect a cart
    cart: dict[str, CartItem]

    def pack(self, base_ms: int) -> list[Any]:
        """Stored form ``[first, deadline, ids, {sku: [qty, price]}]``, times before ``base_ms``."""
        cart = {sku: [item.quantity, item.unit_price] for sku, item in self.cart.items()}
        return [base_ms - self.first_start_ms, base_ms - self.deadline_ms, self.event_ids, cart]

    @classmethod
    def unpack(cls, packed: list[Any], base_ms: int) -> PendingDeadline:
        """Read the stored form written by :meth:`pack`."""
        first, deadline, ids, cart = packed
        items = {sku: CartItem(quantity, price) for sku, (quantity, price) in cart.items()}
        return cls(base_ms - first, base_ms - deadline, ids, items)


class UserState:
    """Per-user engine state. Mutable; owned by one partition's engine."""

    __slots__ = (
        "buffer",
        "features",
        "fired",
        "last_applied",
        "latest_ts",
        "offsets",
        "pending",
        "personalization",
        "processed_to_ms",
        "stops",
        "tags",
        "tz",
    )

    def __init__(self) -> None:
        #: feature key -> that feature's data (see streamtags.rulebook.features)
        self.features: dict[str, Any] = {}
        #: tag -> the live tag
        self.tags: dict[str, LiveTag] = {}
        #: tag -> when it was last applied (for cooldowns)
        self.last_applied: dict[str, int] = {}
        #: rule -> match key ("" without a ``match`` field) -> the armed deadline
        self.pending: dict[str, dict[str, PendingDeadline]] = {}
        #: rule -> match key -> when it fired (one trigger per cart)
        self.fired: dict[str, dict[str, int]] = {}
        #: rule -> match key -> latest stop event time (stops that overtook their start)
        self.stops: dict[str, dict[str, int]] = {}
        self.tz: str | None = None
        self.personalization: bool = True
        #: source stream -> highest offset applied
        self.offsets: dict[str, int] = {}
        #: the user's highest event time applied
        self.latest_ts: int = 0
        #: event time up to which this user's events and deadlines are settled: an event
        #: at or before it arrives too late to be applied in order
        self.processed_to_ms: int = 0
        #: events read but not yet applied: they wait until the partition's watermark
        #: passes them, then are applied in event-time order
        self.buffer: list[Decoded] = []

    def to_bytes(self, packers: Mapping[str, Packer]) -> bytes:
        """Compact versioned bytes: one version byte, then JSON with every time stored
        as milliseconds before the user's latest event (short numbers). Features
        without a packer (their rule is gone) are dropped."""
        base = self.latest_ts
        body = [
            base,
            {_SHORT.get(k, k): v for k, v in self.offsets.items()},
            self.tz,
            1 if self.personalization else 0,
            {
                key: packers[key].pack(data, base)
                for key, data in self.features.items()
                if key in packers
            },
            {
                tag: [base - live.applied_at_ms, base - live.expires_at_ms]
                for tag, live in self.tags.items()
            },
            _rel(self.last_applied, base),
            {
                rule: {key: entry.pack(base) for key, entry in entries.items()}
                for rule, entries in self.pending.items()
            },
            {rule: _rel(markers, base) for rule, markers in self.fired.items()},
            {rule: _rel(markers, base) for rule, markers in self.stops.items()},
            base - self.processed_to_ms,
            [_pack_buffered(decoded) for decoded in self.buffer],
        ]
        return bytes((FORMAT_VERSION,)) + orjson.dumps(body)

    @classmethod
    def from_bytes(cls, data: bytes, packers: Mapping[str, Packer]) -> UserState:
        """Read bytes written by :meth:`to_bytes`; raises :class:`StateFormatError`."""
        if not data or data[0] not in READABLE_VERSIONS:
            raise StateFormatError(
                f"state format {data[0] if data else None} is not one of {READABLE_VERSIONS}"
            )
        try:
            body = orjson.loads(data[1:])
            (
                latest_ts,
                offsets,
                tz,
                personalization,
                features,
                tags,
                last_applied,
                pending,
                fired,
                stops,
            ) = body[:10]
            base = int(latest_ts)
            state = cls()
            state.latest_ts = base
            state.offsets = {_LONG.get(k, k): v for k, v in offsets.items()}
            state.tz = tz
            state.personalization = bool(personalization)
            state.features = {
                key: packers[key].unpack(packed, base)
                for key, packed in features.items()
                if key in packers
            }
            state.tags = {tag: LiveTag(base - a, base - e) for tag, (a, e) in tags.items()}
            state.last_applied = _abs(last_applied, base)
            state.pending = {
                rule: {key: PendingDeadline.unpack(packed, base) for key, packed in entries.items()}
                for rule, entries in pending.items()
            }
            state.fired = {rule: _abs(markers, base) for rule, markers in fired.items()}
            state.stops = {rule: _abs(markers, base) for rule, markers in stops.items()}
            if data[0] >= 2:
                processed_ago, buffered = body[10:12]
                state.processed_to_ms = base - int(processed_ago)
                state.buffer = [_unpack_buffered(packed) for packed in buffered]
        except (ValueError, TypeError, AttributeError, DataError) as exc:
            raise StateFormatError(f"unreadable state: {exc}") from None
        return state


@dataclass(frozen=True, slots=True)
class StateOutline:
    """What decides whether a user's state can be forgotten, without reading it in full.

    Reading stored bytes in full costs about four times as much as this outline
    (12 vs 3 us for a typical state), and a partition's rebuild and idle sweep
    look at every stored user.
    """

    #: the user's last activity: latest event or settled time, event time, epoch ms UTC
    active_to_ms: int
    #: a live tag, an armed deadline or a waiting event: time will still do something
    busy: bool
    #: consent to personalisation (an opt-out must never be forgotten)
    consents: bool
    #: source stream -> highest offset read
    offsets: Mapping[str, int]

    @classmethod
    def of(cls, state: UserState) -> StateOutline:
        """The outline of a state in memory."""
        return cls(
            max(state.latest_ts, state.processed_to_ms),
            bool(state.tags or state.pending or state.buffer),
            state.personalization,
            state.offsets,
        )

    @classmethod
    def read(cls, data: bytes) -> StateOutline:
        """The outline of bytes written by :meth:`UserState.to_bytes`; raises
        :class:`StateFormatError`."""
        if not data or data[0] not in READABLE_VERSIONS:
            raise StateFormatError(
                f"state format {data[0] if data else None} is not one of {READABLE_VERSIONS}"
            )
        try:
            body = orjson.loads(data[1:])
            base = int(body[0])
            processed_to = base - int(body[10]) if data[0] >= 2 else 0
            buffered = data[0] >= 2 and bool(body[11])
            offsets = {_LONG.get(k, k): int(v) for k, v in body[1].items()}
            return cls(
                max(base, processed_to),
                bool(body[5] or body[7] or buffered),
                bool(body[3]),
                offsets,
            )
        except (ValueError, TypeError, AttributeError, IndexError) as exc:
            raise StateFormatError(f"unreadable state: {exc}") from None


def _pack_buffered(decoded: Decoded) -> list[Any]:
    """A waiting event as stored: stream, offset and the message value as sent."""
    raw = decoded.raw or decoded.event.model_dump_json(exclude_none=True).encode()
    return [_SHORT.get(decoded.source, decoded.source), decoded.offset, raw.decode()]


def _unpack_buffered(packed: list[Any]) -> Decoded:
    """Inverse of :func:`_pack_buffered`; the partition is filled in by its owner."""
    short, offset, raw = packed
    source = _LONG.get(short, short)
    value = str(raw).encode()
    return Decoded(-1, source, int(offset), decode_event(source, value), value)
