"""Realistic traffic for demos and benchmarks, with a ground truth of expected tags.

Normal shoppers browse, search, log in from a stable address and sometimes
buy what they put in their cart. Personas act out what should earn each
catalogue tag (an abandoner leaves a cart, an IP hopper logs in from three
addresses, ...). Event times are the wall clock at sending, so the live
worker tags them as they happen; persona gaps follow the same
``time_scale`` as the worker's rules so a shortened demo still fits the
rules' windows. Every event is keyed by ``user_id``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from streamtags.contracts.recordings import Outgoing

__all__ = ["PERSONAS", "Plan", "Step", "TruthRow", "background", "plan_personas", "run"]


@dataclass(frozen=True, slots=True)
class Step:
    """One event a persona sends, ``at_s`` seconds (scaled) after it starts."""

    at_s: float
    stream: str
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TruthRow:
    """A persona's user and the tag it should earn."""

    user_id: str
    persona: str
    expected_tag: str
    #: seconds after its start by which the tag is due (scaled), incl. deadlines
    due_after_s: float


Script = Callable[[random.Random, float, float], list[Step]]
"""(rng, time scale, start time in epoch seconds) -> steps."""


def _orders(n: int, gap_s: float, **fields: Any) -> list[Step]:
    return [
        Step(i * gap_s, "orders", {"status": "paid", "amount": 30.0, **fields}) for i in range(n)
    ]


def _night_zone(now_s: float) -> str:
    """An IANA zone where it is 23:00-ish at ``now_s`` (Etc/GMT signs are inverted)."""
    utc_hour = datetime.fromtimestamp(now_s, UTC).hour
    offset = (23 - utc_hour + 12) % 24 - 12
    return "UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"


#: persona -> (tag it should earn, its script, extra seconds until due beyond its last step)
PERSONAS: dict[str, tuple[str, Script, str]] = {
    "abandoner": (
        "cart_abandoned",
        lambda rng, m, now: [
            Step(0, "browse", {"action": "product_view", "sku": "gc-50", "price": 50.0}),
            Step(
                5 * m,
                "browse",
                {
                    "action": "add_to_cart",
                    "cart_id": f"cart-{rng.randrange(10**9)}",
                    "sku": "gc-50",
                    "price": 50.0,
                },
            ),
        ],
        "15m",
    ),
    "ip_hopper": (
        "ip_hopping",
        lambda rng, m, now: [
            Step(i * 60 * m, "logins", {"outcome": "success", "ip": ip, "country": c})
            for i, (ip, c) in enumerate(
                [("203.0.113.10", "SG"), ("198.51.100.20", "MY"), ("192.0.2.30", "TH")]
            )
        ],
        "0s",
    ),
    "card_hopper": (
        "card_hopping",
        lambda rng, m, now: [
            Step(
                i * 120 * m,
                "orders",
                {
                    "status": "failed",
                    "amount": 99.0,
                    "card_fingerprint": f"fp-{rng.randrange(10**9)}",
                },
            )
            for i in range(3)
        ],
        "0s",
    ),
    "frustrated": (
        "frustrated",
        lambda rng, m, now: [
            Step(
                i * 60 * m,
                "orders",
                {"status": "failed", "amount": 20.0, "failure_reason": "declined"},
            )
            for i in range(3)
        ],
        "0s",
    ),
    "rage_clicker": (
        "frustrated",
        lambda rng, m, now: [
            Step(i * 0.2 * m, "browse", {"action": "click", "element": "pay-button"})
            for i in range(4)
        ],
        "0s",
    ),
    "coupon_hunter": (
        "coupon_hunter",
        lambda rng, m, now: _orders(3, 600 * m, promo_kind="new_user", coupon_code="WELCOME"),
        "0s",
    ),
    "whale": ("whale", lambda rng, m, now: _orders(1, 0, amount=4999.0), "0s"),
    "night_owl": (
        "night_owl",
        lambda rng, m, now: [
            Step(0, "accounts", {"action": "registered", "timezone": _night_zone(now)}),
            *[
                Step(1 + i * 60 * m, "orders", {"status": "created", "amount": 15.0})
                for i in range(5)
            ],
        ],
        "0s",
    ),
    "window_shopper": (
        "window_shopper",
        lambda rng, m, now: [
            Step(i * 30 * m, "browse", {"action": "product_view", "sku": f"gc-{i}", "price": 10.0})
            for i in range(11)
        ],
        "0s",
    ),
    "rapid_spender": (
        "rapid_spender",
        lambda rng, m, now: [
            step
            for i in range(3)
            for step in (
                Step(
                    i * 900 * m,
                    "orders",
                    {"status": "paid", "amount": 100.0, "order_kind": "top_up"},
                ),
                Step(
                    i * 900 * m + 120 * m,
                    "orders",
                    {"status": "paid", "amount": 90.0, "order_kind": "purchase"},
                ),
            )
        ],
        "0s",
    ),
    "brand_loyalist": (
        "brand_loyal",
        lambda rng, m, now: _orders(
            5, 300 * m, items=[{"sku": "st-100", "brand": "steam", "unit_price": 30.0}]
        ),
        "0s",
    ),
    "bargain_hunter": (
        "price_sensitive",
        lambda rng, m, now: _orders(3, 300 * m, coupon_code="SAVE10"),
        "0s",
    ),
    "disputer": (
        "dispute_prone",
        lambda rng, m, now: [
            *[Step(i * 300 * m, "orders", {"status": "created", "amount": 25.0}) for i in range(4)],
            Step(1300 * m, "browse", {"action": "complaint", "page": "/orders"}),
        ],
        "0s",
    ),
    "big_spender": (
        "high_value",
        lambda rng, m, now: _orders(5, 600 * m, amount=400.0),
        "0s",
    ),
}


@dataclass(frozen=True, slots=True)
class Plan:
    """Persona events to send, in time order, and the ground truth."""

    steps: list[tuple[float, str, str, dict[str, Any]]]  # (at_s, user, stream, fields)
    truth: list[TruthRow]


def plan_personas(
    count_each: int,
    *,
    time_scale: float,
    seed: int = 1,
    spread_s: float = 5.0,
    now_s: float | None = None,
) -> Plan:
    """``count_each`` users per persona, starting within the first ``spread_s`` seconds
    of a run that begins at ``now_s`` (epoch seconds; default: now)."""
    from streamtags.rulebook.expressions import parse_duration_ms

    rng = random.Random(seed)
    steps: list[tuple[float, str, str, dict[str, Any]]] = []
    truth: list[TruthRow] = []
    for persona, (tag, script, wait) in PERSONAS.items():
        for index in range(count_each):
            user = f"{persona}-{index}"
            start = rng.uniform(0, spread_s)
            planned = script(rng, time_scale, time.time() if now_s is None else now_s)
            for step in planned:
                steps.append((start + step.at_s, user, step.stream, step.fields))
            last = max(step.at_s for step in planned)
            extra = parse_duration_ms(wait, scale=time_scale) / 1000 if wait != "0s" else 0.0
            truth.append(TruthRow(user, persona, tag, start + last + extra))
    steps.sort(key=lambda s: s[0])
    return Plan(steps, truth)


BROWSE = ("page_view", "page_view", "page_view", "product_view", "product_view", "search", "click")


def background(rng: random.Random, users: int) -> tuple[str, str, dict[str, Any]]:
    """One ordinary shopper event: (user, stream, fields)."""
    user = f"shopper-{rng.randrange(users)}"
    roll = rng.random()
    if roll < 0.85:
        action = rng.choice(BROWSE)
        fields: dict[str, Any] = {"action": action, "session_id": f"s-{user}"}
        if action == "search":
            fields |= {"query": "gift card", "results_count": rng.choice((3, 8, 20))}
        elif action == "click":
            fields |= {"element": rng.choice(("nav", "banner", "buy", "faq", "help", "logo"))}
        else:
            fields |= {"sku": f"gc-{rng.randrange(200)}", "price": 10.0, "page": "/p"}
        return user, "browse", fields
    if roll < 0.95:
        return (
            user,
            "logins",
            {
                "outcome": "success",
                "ip": f"10.1.{hash(user) % 250}.7",
                "country": "SG",
                "device_id": f"d-{user}",
            },
        )
    cart = f"cart-{user}-{rng.randrange(10**6)}"
    # Shoppers who buy: the add-to-cart and the order come together, never abandoned.
    return (
        user,
        "orders",
        {
            "status": "created",
            "amount": 20.0,
            "cart_id": cart,
            "items": [{"sku": "gc-20", "brand": rng.choice(("a", "b", "c")), "unit_price": 20.0}],
        },
    )


def events_for(
    user: str, stream: str, fields: dict[str, Any], *, counter: Iterator[int], ts_ms: int
) -> Outgoing:
    """The message for one simulated event."""
    body = {"event_id": f"sim-{next(counter)}", "user_id": user, "ts": ts_ms, **fields}
    if stream == "orders":
        body.setdefault("order_id", f"o-{body['event_id']}")
    return Outgoing(stream, user.encode(), orjson.dumps(body))


async def run(
    send: Callable[[Outgoing], Any],
    *,
    rate: float,
    users: int,
    duration_s: float,
    plan: Plan,
    seed: int = 2,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> int:
    """Send background traffic at ``rate`` events/s plus the persona plan; return the count."""
    import itertools

    rng = random.Random(seed)
    counter = itertools.count()
    started = clock()
    sent = 0
    shoppers = 0
    next_step = 0
    tick_s = 0.05
    while True:
        elapsed = clock() - started
        if elapsed >= duration_s and next_step >= len(plan.steps):
            break
        if elapsed < duration_s:
            target = int(elapsed * rate)
            while shoppers < target:
                user, stream, fields = background(rng, users)
                await send(
                    events_for(user, stream, fields, counter=counter, ts_ms=int(clock() * 1000))
                )
                shoppers += 1
                sent += 1
        while next_step < len(plan.steps) and plan.steps[next_step][0] <= elapsed:
            _, user, stream, fields = plan.steps[next_step]
            await send(events_for(user, stream, fields, counter=counter, ts_ms=int(clock() * 1000)))
            next_step += 1
            sent += 1
        await sleep(tick_s)
    return sent
