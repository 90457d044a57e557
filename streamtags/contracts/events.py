"""Input event contracts: one pydantic model per input stream.

Every input message is keyed by ``user_id`` and carries one JSON object.
``ts`` is the event time: an RFC 3339 string with an offset, or integer
epoch milliseconds; either way the model holds it as epoch milliseconds,
UTC. Unknown extra fields are ignored (kept out of state) and never make a
valid event invalid.

The contract is strict and bounded: numbers are JSON numbers (never strings
or bools), every string and list has a maximum length, every count a
maximum, and text is kept verbatim (never trimmed). The value types live in
:mod:`streamtags.contracts.values`; the JSON Schemas in ``schemas/`` say
exactly what the models accept.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from streamtags.contracts.values import (
    EARLIEST_TS_MS,
    LATEST_TS_MS,
    EventId,
    EventTime,
    Integer,
    IpAddress,
    Money,
    Name,
    ShortText,
    Text,
    TimeZoneName,
    UserId,
    parse_event_time,
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

OptionalName = Annotated[ShortText | None, Field(default=None)]
OptionalText = Annotated[Text | None, Field(default=None)]

#: Strict: a JSON string is never a number or a bool; extra fields are ignored.
_STRICT = ConfigDict(extra="ignore", frozen=True, strict=True)


class _EventBase(BaseModel):
    """Fields every input event has."""

    model_config = _STRICT

    stream: ClassVar[str]

    event_id: EventId = Field(
        description="Unique id of this event, chosen by the producer: 1-256 characters, "
        "no whitespace, control or invisible characters."
    )
    user_id: UserId = Field(
        description="The user the event is about; also the message key (its UTF-8 bytes). "
        "1-256 characters, taken verbatim: no whitespace, control or invisible characters, "
        "no '{' or '}' (in the Redis key they would form a Redis Cluster hash tag and pin "
        "many users to one slot), and never starting with '__faust' (reserved)."
    )
    ts: EventTime = Field(
        description="Event time: RFC 3339 with offset (years 2000-2099 as written, at most "
        "9 fraction digits, no leap second) or integer epoch milliseconds (2000-2099 UTC); "
        "held as epoch milliseconds UTC once parsed."
    )


class OrderItem(BaseModel):
    """One line of an order."""

    model_config = _STRICT

    sku: Name = Field(description="Stock-keeping unit of the product.")
    category: OptionalName = Field(description="Product category, e.g. gift_card.")
    brand: OptionalName = Field(description="Product brand.")
    quantity: Annotated[int, Integer(1, 1_000_000)] = Field(
        default=1, description="Units ordered, at most 10^6."
    )
    unit_price: Money = Field(default=0.0, description="Price of one unit, in the order currency.")


class Order(_EventBase):
    """An order changed status (``orders`` topic)."""

    stream: ClassVar[str] = "orders"

    order_id: Name = Field(description="The order this event is about.")
    cart_id: OptionalName = Field(description="The cart the order was placed from, if any.")
    status: Literal["created", "paid", "failed", "cancelled", "refunded"] = Field(
        description="The order's new status."
    )
    amount: Money = Field(description="Order total, in `currency` units (not cents).")
    # min/max length make the $ of these patterns safe in every regex dialect
    currency: Annotated[str, Field(min_length=3, max_length=3, pattern=r"^[A-Z]{3}$")] | None = (
        Field(default=None, description="ISO 4217 currency code.")
    )
    items: list[OrderItem] = Field(
        default_factory=list, max_length=1000, description="Lines, at most 1000."
    )
    order_kind: Literal["purchase", "top_up"] = Field(
        default="purchase", description="A purchase of goods, or a stored-value top-up."
    )
    payment_method: OptionalName = Field(description="e.g. card, wallet, points.")
    card_fingerprint: OptionalName = Field(description="Stable hash of the card used, if any.")
    coupon_code: OptionalName = Field(description="Coupon applied to the order, if any.")
    promo_kind: OptionalName = Field(description="Kind of promotion used, e.g. new_user.")
    failure_reason: OptionalText = Field(description="Why a payment failed (status failed).")


class Browse(_EventBase):
    """A browsing or support interaction (``browse`` topic)."""

    stream: ClassVar[str] = "browse"

    session_id: OptionalName = Field(description="Browsing session id.")
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
    sku: OptionalName = Field(description="Product concerned, for product and cart actions.")
    category: OptionalName = Field(description="Product category.")
    brand: OptionalName = Field(description="Product brand.")
    price: Money | None = Field(default=None, description="Unit price shown, currency units.")
    cart_id: OptionalName = Field(description="Cart concerned, for cart actions.")
    query: OptionalText = Field(description="Search text, for search.")
    results_count: Annotated[int, Integer(0, 1_000_000_000)] | None = Field(
        default=None, description="Number of search results, for search; at most 10^9."
    )
    element: OptionalName = Field(description="UI element clicked, for click.")
    page: OptionalText = Field(description="Page the action happened on.")


class Login(_EventBase):
    """A login attempt (``logins`` topic)."""

    stream: ClassVar[str] = "logins"

    outcome: Literal["success", "failure"] = Field(description="Whether the login succeeded.")
    ip: IpAddress = Field(
        description="Client IP address, v4 or v6, without zone id (JSON Schema format ipv4 "
        "or ipv6). Held canonical: IPv6 compressed and lower case, an IPv4-mapped IPv6 "
        "address as the IPv4 address, so one address is one IP to every rule."
    )
    country: Annotated[str, Field(min_length=2, max_length=2, pattern=r"^[A-Z]{2}$")] | None = (
        Field(default=None, description="ISO 3166-1 alpha-2 country of the IP.")
    )
    device_id: OptionalName = Field(description="Stable device identifier.")
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
    card_fingerprint: OptionalName = Field(description="Card added or removed, if any.")
    timezone: TimeZoneName | None = Field(
        default=None,
        description="The user's IANA time zone, e.g. Asia/Shanghai; it must exist in the "
        "worker's tz database (a check no schema can carry).",
    )


Event = Order | Browse | Login | Account
"""Any validated input event."""

#: Stream name -> model, in the order the design lists them.
STREAMS: dict[str, type[Order] | type[Browse] | type[Login] | type[Account]] = {
    model.stream: model for model in (Order, Browse, Login, Account)
}
