"""Plausible event histories for property tests over the whole rule catalogue.

A history is a few users (1-4), each living through a handful of *scenes*
(a cart session, a regular buyer's month, a burst of rage clicks, logins from
several countries, an account change, ...) that together exercise every rule
in ``rules/``. Scenes start at gaps of seconds, minutes, hours or days; in
about one history in three they are scattered over 90 days, so the history
spans up to ~100 days and 90-day windows, 7-day absences and TTLs all matter.

Events are built through the real decoder (:func:`decode_event`), so they are
exactly what the live worker would accept, and every event id is unique
within a history. A history is a list of :class:`Sent` (an event as its
producer sent it, before it has an offset); :func:`read_in_order` gives the
events offsets in the order a partition reads them.

:func:`time_limit` guards one engine call against an infinite loop, and
:func:`restarted` rebuilds a partition from what it stored, as a worker
taking it over would.

Times are event time, epoch milliseconds UTC, throughout.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from hypothesis import strategies as st

from streamtags.contracts.codec import decode_event
from streamtags.contracts.events import Event
from streamtags.contracts.ingest import Decoded
from streamtags.engine.partition import Partition
from streamtags.rulebook.loader import load_rules

__all__ = [
    "DAY",
    "HOUR",
    "LATENESS_MS",
    "MINUTE",
    "RULES",
    "SECOND",
    "STATE_LIMIT_BYTES",
    "T0",
    "Line",
    "Producer",
    "Sent",
    "histories",
    "read_in_order",
    "restarted",
    "scenes",
    "time_limit",
]

ROOT = Path(__file__).resolve().parents[2]
#: The whole catalogue, loaded once.
RULES = load_rules(ROOT / "rules")

SECOND = 1_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
#: 2026-11-22T10:00:00Z: where every history starts (epoch ms, UTC)
T0 = 1_795_341_600_000
#: The allowed lateness the properties run the engine with (ms)
LATENESS_MS = 10_000
#: Over how long the scenes of a long history are scattered (ms); scenes add up to
#: a few more days (a regular buyer's orders), so such a history spans up to ~100 days
_LONG_SPAN_MS = 90 * DAY
#: Stored state per user must stay below this (bytes), whatever the history.
STATE_LIMIT_BYTES = 8 * 1024

CARTS = ("c1", "c2", "c3")
SKUS = ("gc-10", "gc-50", "steam-20", "psn-50", "apple-100")
BRANDS = ("steam", "psn", "apple", "xbox")
CARDS = ("fp1", "fp2", "fp3", "fp4", "fp5")
IPS = ("203.0.113.1", "203.0.113.2", "198.51.100.3", "192.0.2.4", "2001:db8::7")
COUNTRIES = ("SG", "MY", "DE", None)
ELEMENTS = ("buy-button", "search-box", "back")
TIMEZONES = ("Asia/Shanghai", "UTC", "America/New_York", "Asia/Kolkata")
AMOUNTS = (50.0, 5.0, 20.0, 120.0, 300.0, 800.0, 2500.0)


class Line(NamedTuple):
    """A scene's event before it has a user or an id: when, on which stream, what."""

    #: event time, epoch ms UTC
    ts: int
    stream: str
    #: the event's fields other than event_id, user_id and ts
    fields: dict[str, Any]

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """How hypothesis prints a drawn scene: one short line per event."""
        shown = {k: v for k, v in self.fields.items() if v is not None}
        printer.text(f"{self.stream}(@{_at(self.ts)} {shown})")


@dataclass(frozen=True, slots=True)
class Sent:
    """An event as its producer sent it: the stream and the decoded event, no offset yet."""

    stream: str
    event: Event

    def __repr__(self) -> str:
        # Falsifying examples print whole histories: keep each event on one short line,
        # with its time as days+hh:mm:ss.mmm after T0.
        body = self.event.model_dump(exclude_none=True, exclude_defaults=True)
        for name in ("event_id", "user_id", "ts"):
            body.pop(name, None)
        event = self.event
        return f"{self.stream}({event.event_id} {event.user_id} @{_at(event.ts)} {body})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """Hypothesis prints examples with an IPython-style pretty printer: use the repr."""
        printer.text(repr(self))


def _at(ts_ms: int) -> str:
    sign, delta = ("-", T0 - ts_ms) if ts_ms < T0 else ("+", ts_ms - T0)
    days, rest = divmod(delta, DAY)
    hours, rest = divmod(rest, HOUR)
    minutes, rest = divmod(rest, MINUTE)
    return f"{sign}{days}d{hours:02d}:{minutes:02d}:{rest / 1000:06.3f}"


class Producer:
    """Stamps lines with a user and a unique event id, and decodes them for real."""

    def __init__(self, prefix: str = "e") -> None:
        self.prefix = prefix
        self.count = 0

    def send(self, user_id: str, line: Line) -> Sent:
        """The event ``line`` describes, for ``user_id``, validated by the real decoder."""
        self.count += 1
        body = {"event_id": f"{self.prefix}{self.count}", "user_id": user_id, "ts": line.ts}
        body.update(line.fields)
        if line.stream == "orders":
            # An order's created and paid events share the order id; scenes name it.
            body["order_id"] = f"{user_id}-{body['order_id']}"
        return Sent(line.stream, decode_event(line.stream, orjson.dumps(body)))


def read_in_order(sent: Iterable[Sent], *, partition: int = 0) -> list[Decoded]:
    """The events as one partition reads them: offsets count up per stream in this order."""
    next_offset: Counter[str] = Counter()
    reads = []
    for item in sent:
        reads.append(Decoded(partition, item.stream, next_offset[item.stream], item.event))
        next_offset[item.stream] += 1
    return reads


# -- scenes -------------------------------------------------------------------------
# Each scene is a strategy of lines starting at ``start`` (epoch ms). Alternatives are
# listed simplest first: hypothesis shrinks towards the first.


def _after(draw: st.DrawFn, low_ms: int, high_ms: int) -> int:
    return draw(st.integers(low_ms, high_ms))


def _times(draw: st.DrawFn, start: int, count: tuple[int, int], low: int, high: int) -> list[int]:
    """A count in ``count`` of event times from ``start``, each ``low``-``high`` ms apart."""
    times = [start]
    for _ in range(draw(st.integers(*count)) - 1):
        times.append(times[-1] + _after(draw, low, high))
    return times


def _order(
    draw: st.DrawFn, order_id: str, *, kind: str = "purchase", cart_id: str | None = None
) -> dict[str, Any]:
    """The fields of an order (its status is set by the caller)."""
    amount = draw(st.sampled_from(AMOUNTS))
    fields: dict[str, Any] = {"order_id": order_id, "amount": amount, "order_kind": kind}
    if kind == "purchase":
        brand = draw(st.sampled_from(BRANDS))
        lines = [{"sku": draw(st.sampled_from(SKUS)), "brand": brand, "unit_price": amount}]
        if draw(st.booleans()):
            lines.append({"sku": "gc-10", "brand": draw(st.sampled_from(BRANDS)), "unit_price": 1})
        fields["items"] = lines
    fields["card_fingerprint"] = draw(st.sampled_from((*CARDS, None)))
    fields["coupon_code"] = draw(st.sampled_from((None, "SAVE10", "WELCOME5")))
    fields["promo_kind"] = draw(st.sampled_from((None, "new_user", "seasonal")))
    if cart_id is not None:
        fields["cart_id"] = cart_id
    return fields


def _checkout(
    draw: st.DrawFn, ts: int, *, kind: str = "purchase", cart_id: str | None = None
) -> list[Line]:
    """One order: created, then (usually) paid or failed a few seconds later."""
    fields = _order(draw, f"o{ts}", kind=kind, cart_id=cart_id)
    lines = [Line(ts, "orders", {**fields, "status": "created"})]
    outcome = draw(st.sampled_from(("paid", "paid", "failed", None)))
    if outcome is not None:
        later = ts + _after(draw, 0, 90 * SECOND)
        reason = {"failure_reason": "card_declined"} if outcome == "failed" else {}
        lines.append(Line(later, "orders", {**fields, "status": outcome, **reason}))
    return lines


@st.composite
def shopping_cart(draw: st.DrawFn, start: int) -> list[Line]:
    """Adds to a cart (its id sometimes missing), maybe a removal, a checkout start,
    and an order for the cart (or another) before, after, or without the 15-minute
    deadline."""
    cart_id = draw(st.sampled_from((*CARTS, None)))
    cart = {"cart_id": cart_id} if cart_id else {}
    lines, skus = [], []
    for ts in _times(draw, start, (1, 3), 0, 3 * MINUTE):
        skus.append(draw(st.sampled_from(SKUS)))
        price = draw(st.sampled_from((10.0, 50.0, 20.0)))
        lines.append(Line(ts, "browse", {"action": "add_to_cart", "sku": skus[-1], "price": price}))
    ts = lines[-1].ts + _after(draw, 0, MINUTE)
    if draw(st.booleans()):
        lines.append(
            Line(ts, "browse", {"action": "remove_from_cart", "sku": draw(st.sampled_from(skus))})
        )
    if draw(st.booleans()):
        lines.append(Line(ts + _after(draw, 0, MINUTE), "browse", {"action": "checkout_started"}))
    lines = [Line(line.ts, line.stream, {**line.fields, **cart}) for line in lines]
    ending = draw(st.sampled_from(("abandon", "order soon", "order late", "other cart")))
    if ending != "abandon":
        late = ending == "order late"
        delay = _after(draw, 14 * MINUTE, 40 * MINUTE) if late else _after(draw, 0, 14 * MINUTE)
        order_cart = cart_id if ending != "other cart" else draw(st.sampled_from((*CARTS, None)))
        lines += _checkout(draw, lines[-1].ts + delay, cart_id=order_cart)
    return lines


@st.composite
def one_order(draw: st.DrawFn, start: int) -> list[Line]:
    """A single purchase or top-up: created, then paid, failed or left."""
    return _checkout(draw, start, kind=draw(st.sampled_from(("purchase", "top_up"))))


@st.composite
def top_up_then_buy(draw: st.DrawFn, start: int) -> list[Line]:
    """One to three times, minutes to days apart: a paid top-up, then a paid purchase
    1-20 minutes later."""
    lines = []
    for ts in _times(draw, start, (1, 3), 21 * MINUTE, 2 * DAY):
        lines.append(
            Line(ts, "orders", {**_order(draw, f"t{ts}", kind="top_up"), "status": "paid"})
        )
        spend_at = ts + _after(draw, MINUTE, 20 * MINUTE)
        lines.append(Line(spend_at, "orders", {**_order(draw, f"p{spend_at}"), "status": "paid"}))
    return lines


@st.composite
def failed_payments(draw: st.DrawFn, start: int) -> list[Line]:
    """Declined payments, seconds to minutes apart."""
    times = _times(draw, start, (1, 4), 5 * SECOND, 4 * MINUTE)
    return [Line(ts, "orders", {**_order(draw, f"f{ts}"), "status": "failed"}) for ts in times]


@st.composite
def searches(draw: st.DrawFn, start: int) -> list[Line]:
    """Searches, most of them finding nothing."""
    lines = []
    for ts in _times(draw, start, (1, 4), 2 * SECOND, 5 * MINUTE):
        found = draw(st.sampled_from((0, 0, 12)))
        lines.append(
            Line(ts, "browse", {"action": "search", "query": "gift", "results_count": found})
        )
    return lines


@st.composite
def rage_clicks(draw: st.DrawFn, start: int) -> list[Line]:
    """Clicks on one or two elements, mostly under a second apart."""
    times = _times(draw, start, (2, 5), 0, 1_200)
    click = st.sampled_from(ELEMENTS[:2]).map(
        lambda element: {"action": "click", "element": element}
    )
    return [Line(ts, "browse", draw(click)) for ts in times]


@st.composite
def complaint(draw: st.DrawFn, start: int) -> list[Line]:
    """A page view, sometimes an error, then a complaint."""
    lines = [Line(start, "browse", {"action": "page_view", "page": "/orders"})]
    if draw(st.booleans()):
        lines.append(Line(start + SECOND, "browse", {"action": "error", "page": "/orders"}))
    lines.append(Line(start + _after(draw, SECOND, 10 * MINUTE), "browse", {"action": "complaint"}))
    return lines


@st.composite
def window_shopping(draw: st.DrawFn, start: int) -> list[Line]:
    """Product views, half a minute to a few hours apart."""
    lines = []
    for ts in _times(draw, start, (3, 12), 30 * SECOND, 3 * HOUR):
        sku, brand = draw(st.sampled_from(SKUS)), draw(st.sampled_from(BRANDS))
        view = {"action": "product_view", "sku": sku, "brand": brand, "price": 20.0}
        lines.append(Line(ts, "browse", view))
    return lines


@st.composite
def logins(draw: st.DrawFn, start: int) -> list[Line]:
    """Login attempts, seconds to minutes apart, from one or several addresses and
    countries (the country sometimes unknown)."""
    lines = []
    for ts in _times(draw, start, (1, 4), 10 * SECOND, 30 * MINUTE):
        fields: dict[str, Any] = {"ip": draw(st.sampled_from(IPS)), "device_id": "d1"}
        fields["outcome"] = draw(st.sampled_from(("success", "failure")))
        fields["country"] = draw(st.sampled_from(COUNTRIES))
        lines.append(Line(ts, "logins", fields))
    return lines


@st.composite
def account_change(draw: st.DrawFn, start: int) -> list[Line]:
    """Registration, a consent change (on or off), or a card added or removed;
    any of them may carry a time zone."""
    action = draw(st.sampled_from(("registered", "consent_changed", "card_added", "card_removed")))
    fields: dict[str, Any] = {
        "action": action,
        "timezone": draw(st.sampled_from((None, *TIMEZONES))),
    }
    if action == "consent_changed":
        fields["personalization"] = draw(st.booleans())
    if action in ("card_added", "card_removed"):
        fields["card_fingerprint"] = draw(st.sampled_from(CARDS))
    return [Line(start, "accounts", fields)]


@st.composite
def regular_buyer(draw: st.DrawFn, start: int) -> list[Line]:
    """Three to six paid orders, half a day to six days apart, mostly of one brand
    and often with a coupon or a new-user promotion."""
    brand = draw(st.sampled_from(BRANDS))
    coupon = draw(st.sampled_from((None, "SAVE10")))
    promo = draw(st.sampled_from((None, "new_user")))
    lines = []
    for ts in _times(draw, start, (3, 6), 12 * HOUR, 6 * DAY):
        fields = _order(draw, f"r{ts}")
        fields["amount"] = draw(st.sampled_from((300.0, 250.0, 900.0)))
        fields["items"] = [{"sku": "gc-50", "brand": brand, "unit_price": fields["amount"]}]
        fields["coupon_code"] = coupon if draw(st.integers(0, 4)) else None
        fields["promo_kind"] = promo if draw(st.integers(0, 4)) else None
        paid_at = ts + _after(draw, SECOND, MINUTE)
        lines += [Line(ts, "orders", {**fields, "status": "created"})]
        lines += [Line(paid_at, "orders", {**fields, "status": "paid"})]
    return lines


@st.composite
def night_orders(draw: st.DrawFn, start: int) -> list[Line]:
    """Orders created late at night (UTC), on consecutive days from the next one."""
    lines = []
    midnight = (start // DAY + 1) * DAY
    for day in range(draw(st.integers(3, 6))):
        hour = draw(st.sampled_from((23, 22, 0, 1, 2, 3, 12)))
        lines += _checkout(draw, midnight + day * DAY + hour * HOUR + _after(draw, 0, HOUR - 1))
    return lines


@st.composite
def cards_in_a_day(draw: st.DrawFn, start: int) -> list[Line]:
    """Cards used on (declined) orders or added to the account, minutes to hours apart."""
    lines = []
    for ts in _times(draw, start, (2, 4), MINUTE, 10 * HOUR):
        card = {"card_fingerprint": draw(st.sampled_from(CARDS))}
        if draw(st.booleans()):
            lines.append(Line(ts, "accounts", {"action": "card_added", **card}))
        else:
            lines.append(Line(ts, "orders", {**_order(draw, f"k{ts}"), **card, "status": "failed"}))
    return lines


#: Every scene; together they reach every rule of the catalogue.
SCENES = (
    shopping_cart,
    one_order,
    top_up_then_buy,
    failed_payments,
    searches,
    rage_clicks,
    complaint,
    window_shopping,
    logins,
    account_change,
    regular_buyer,
    night_orders,
    cards_in_a_day,
)


@st.composite
def scenes(draw: st.DrawFn, start: int) -> list[Line]:
    """Any one scene, starting at ``start`` (epoch ms UTC)."""
    scene = draw(st.sampled_from(SCENES))
    return draw(scene(start))


def _gap(draw: st.DrawFn) -> int:
    """Time to the user's next scene: seconds, minutes, hours or days."""
    scale = draw(st.sampled_from(("seconds", "minutes", "hours", "days")))
    low, high = {
        "seconds": (0, 20 * SECOND),
        "minutes": (MINUTE, 45 * MINUTE),
        "hours": (HOUR, 20 * HOUR),
        "days": (DAY, 4 * DAY),
    }[scale]
    return _after(draw, low, high)


def _scene_starts(draw: st.DrawFn, count: int, *, long: bool) -> list[int]:
    """When a user's scenes start (epoch ms UTC): chained by short gaps, or, in a
    long history, scattered over :data:`_LONG_SPAN_MS`."""
    if long:
        return sorted(T0 + _after(draw, 0, _LONG_SPAN_MS) for _ in range(count))
    starts = [T0 + _after(draw, 0, DAY)]
    for _ in range(count - 1):
        starts.append(starts[-1] + _gap(draw))
    return starts


@st.composite
def histories(draw: st.DrawFn, *, max_users: int = 4, max_scenes: int = 6) -> list[Sent]:
    """A plausible history: 1-``max_users`` users, each with 1-``max_scenes`` scenes,
    in event-time order (ties in the order they were drawn); event ids unique.
    About one history in three is long (scenes scattered over ~90 days)."""
    long = draw(st.sampled_from((False, False, True)))
    producer = Producer()
    sent: list[Sent] = []
    for n in range(draw(st.integers(1, max_users))):
        user_id = f"u{n + 1}"
        for start in _scene_starts(draw, draw(st.integers(1, max_scenes)), long=long):
            sent += [producer.send(user_id, line) for line in draw(scenes(start))]
    sent.sort(key=lambda item: item.event.ts)
    return sent


# -- guarding and restarting the engine ---------------------------------------------


#: The longest one engine call may take (seconds) before it counts as stuck. The
#: longest calls these tests make take ~10 ms; a stuck one costs this much again on
#: every shrinking step, so the limit is no longer than it must be.
_CALL_LIMIT_S = 0.5


class _Stuck(BaseException):
    """Raised by the alarm inside a stuck engine call. A BaseException, so that the
    engine's per-event ``except Exception`` cannot swallow it."""


@contextmanager
def time_limit(what: str, *, seconds: float = _CALL_LIMIT_S) -> Iterator[None]:
    """Fail with a clear AssertionError if the body runs longer than ``seconds``
    (an infinite loop in the engine, say). Main thread only (it uses SIGALRM)."""
    caught = False

    def on_alarm(signum: int, frame: object) -> None:
        if not caught:
            raise _Stuck

    previous = signal.signal(signal.SIGALRM, on_alarm)
    # The alarm repeats: one that lands in a garbage-collector callback is swallowed.
    signal.setitimer(signal.ITIMER_REAL, seconds, 0.05)
    try:
        yield
    except _Stuck:
        caught = True
        # An AssertionError (not the BaseException) so hypothesis shrinks the example.
        raise AssertionError(f"{what} took over {seconds} s: an infinite loop?") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def restarted(part: Partition) -> Partition:
    """A fresh partition of the same engine from what ``part`` would have stored: every
    user's bytes and the clock (what a worker taking over the partition reads)."""
    fresh = part.engine.partition()
    for user_id in list(part.states):
        fresh.load_bytes(user_id, part.dump(user_id))
    fresh.clock.restore(part.clock.to_list())
    return fresh
