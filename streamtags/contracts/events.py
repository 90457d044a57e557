"""Input event contracts: one pydantic model per input stream.

Every input message is keyed by ``user_id`` and carries one JSON object.
``ts`` is the event time: an RFC 3339 string with an offset, or integer
epoch milliseconds; either way the model holds it as epoch milliseconds,
UTC. Unknown extra fields are ignored (kept out of state) and never make a
valid event invalid.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)

__all__ = [
    "EARLIEST_TS_MS",
    "LATEST_TS_MS",
    "STREAMS",
    "Account",
    "Browse",
    "Event",
    "EventTime",
    "Login",
    "Order",
    "OrderItem",
    "parse_event_time",
]

#: Event times before 2000-01-01 or from 2100-01-01 on are impossible values.
EARLIEST_TS_MS = 946_684_800_000
LATEST_TS_MS = 4_102_444_800_000


def parse_event_time(value: Any) -> int:
    """Return an event time as epoch milliseconds, UTC.

    Accepts an RFC 3339 string with an offset (``2026-11-22T10:00:00Z``,
    ``...+08:00``) or an integer number of epoch milliseconds. A string
    without an offset is ambiguous and rejected; so is a bool, a float, or a
    time outside 2000-2099.
    """
    if isinstance(value, bool):
        raise ValueError("ts must be an RFC 3339 string or integer epoch milliseconds, not a bool")
    if isinstance(value, int):
        ts_ms = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("z", "Z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"ts {value!r} is not an RFC 3339 time") from None
        if parsed.tzinfo is None:
            raise ValueError(f"ts {value!r} has no UTC offset")
        ts_ms = int(parsed.timestamp() * 1000)
    else:
        raise ValueError("ts must be an RFC 3339 string or integer epoch milliseconds")
    if not EARLIEST_TS_MS <= ts_ms < LATEST_TS_MS:
        raise ValueError(f"ts {value!r} is outside the years 2000-2099")
    return ts_ms


def _check_ip(value: str) -> str:
    ipaddress.ip_address(value)  # raises ValueError with a readable message
    return value


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not an IANA time zone") from None
    return value


EventTime = Annotated[
    int,
    BeforeValidator(parse_event_time),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "integer", "minimum": EARLIEST_TS_MS, "maximum": LATEST_TS_MS - 1},
            ],
            "description": "Event time: RFC 3339 with offset, or integer epoch milliseconds.",
        }
    ),
]
"""Event time in epoch milliseconds, UTC, parsed from RFC 3339 or epoch ms."""

Identifier = Annotated[str, Field(min_length=1, max_length=256)]
OptionalText = Annotated[str | None, Field(default=None, max_length=1024)]
Money = Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False)]


class _EventBase(BaseModel):
    """Fields every input event has."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)

    stream: ClassVar[str]

    event_id: Identifier = Field(description="Unique id of this event, chosen by the producer.")
    user_id: Identifier = Field(description="The user the event is about; also the message key.")
    ts: EventTime = Field(description="Event time, epoch milliseconds UTC once parsed.")


class OrderItem(BaseModel):
    """One line of an order."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    sku: Identifier = Field(description="Stock-keeping unit of the product.")
    category: OptionalText = Field(description="Product category, e.g. gift_card.")
    brand: OptionalText = Field(description="Product brand.")
    quantity: int = Field(default=1, ge=1, le=1_000_000, description="Units ordered.")
    unit_price: Money = Field(default=0.0, description="Price of one unit, in the order currency.")


class Order(_EventBase):
    """An order changed status (``orders`` topic)."""

    stream: ClassVar[str] = "orders"

    order_id: Identifier = Field(description="The order this event is about.")
    cart_id: OptionalText = Field(description="The cart the order was placed from, if any.")
    status: Literal["created", "paid", "failed", "cancelled", "refunded"] = Field(
        description="The order's new status."
    )
    amount: Money = Field(description="Order total, in `currency` units (not cents).")
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = Field(
        default=None, description="ISO 4217 currency code."
    )
    items: list[OrderItem] = Field(default_factory=list, max_length=1000, description="Lines.")
    order_kind: Literal["purchase", "top_up"] = Field(
        default="purchase", description="A purchase of goods, or a stored-value top-up."
    )
    payment_method: OptionalText = Field(description="e.g. card, wallet, points.")
    card_fingerprint: OptionalText = Field(description="Stable hash of the card used, if any.")
    coupon_code: OptionalText = Field(description="Coupon applied to the order, if any.")
    promo_kind: OptionalText = Field(description="Kind of promotion used, e.g. new_user.")
    failure_reason: OptionalText = Field(description="Why a payment failed (status failed).")


class Browse(_EventBase):
    """A browsing or support interaction (``browse`` topic)."""

    stream: ClassVar[str] = "browse"

    session_id: OptionalText = Field(description="Browsing session id.")
    action: Literal[
        "page_view",
        "product_view",
        "search",
        "add_to_cart",
        "remove_from_cart",
        "checkout_started",
        "click",
        "error",
        "complaint",
    ] = Field(description="What the user did.")
    sku: OptionalText = Field(description="Product concerned, for product and cart actions.")
    category: OptionalText = Field(description="Product category.")
    brand: OptionalText = Field(description="Product brand.")
    price: Money | None = Field(default=None, description="Unit price shown, currency units.")
    cart_id: OptionalText = Field(description="Cart concerned, for cart actions.")
    query: OptionalText = Field(description="Search text, for search.")
    results_count: int | None = Field(
        default=None, ge=0, description="Number of search results, for search."
    )
    element: OptionalText = Field(description="UI element clicked, for click.")
    page: OptionalText = Field(description="Page the action happened on.")


class Login(_EventBase):
    """A login attempt (``logins`` topic)."""

    stream: ClassVar[str] = "logins"

    outcome: Literal["success", "failure"] = Field(description="Whether the login succeeded.")
    ip: Annotated[str, AfterValidator(_check_ip)] = Field(
        description="Client IP address, v4 or v6."
    )
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] | None = Field(
        default=None, description="ISO 3166-1 alpha-2 country of the IP."
    )
    device_id: OptionalText = Field(description="Stable device identifier.")
    user_agent: OptionalText = Field(description="Client user agent string.")


class Account(_EventBase):
    """An account change (``accounts`` topic)."""

    stream: ClassVar[str] = "accounts"

    action: Literal["registered", "consent_changed", "card_added", "card_removed"] = Field(
        description="What changed."
    )
    personalization: bool | None = Field(
        default=None,
        description="Whether the user allows personalisation (marketing tags, coupons).",
    )
    card_fingerprint: OptionalText = Field(description="Card added or removed, if any.")
    timezone: Annotated[str, AfterValidator(_check_timezone)] | None = Field(
        default=None, description="The user's IANA time zone, e.g. Asia/Shanghai."
    )


Event = Order | Browse | Login | Account
"""Any validated input event."""

#: Stream name -> model, in the order the design lists them.
STREAMS: dict[str, type[Order] | type[Browse] | type[Login] | type[Account]] = {
    model.stream: model for model in (Order, Browse, Login, Account)
}
