"""The backlog ``bench/compare.py`` drains: mixed shopper events and what the rules make of them.

Mostly ``streamtags.offline.simulate.background`` shoppers; a share of the
events (5 % by default) are rule signals — logins from other countries,
failed payments, zero-result searches, rage clicks, complaints, carts and
consent changes — sent by 1 % of the users ("personas"), so the three
headline rules do fire. Event times rise evenly over a span that ends when
the backlog is made; Kafka timestamps equal event times. Same arguments,
same events (one seed), so the offline replay can judge the contestants.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from streamtags.contracts.codec import decode_event
from streamtags.contracts.ingest import Decoded
from streamtags.offline.replay import Replay
from streamtags.offline.simulate import background
from streamtags.rulebook.loader import load_rules
from streamtags.settings import Settings

__all__ = [
    "SIGNAL_SHARE",
    "SIGNAL_WEIGHTS",
    "Message",
    "backlog",
    "produce",
    "reference_tags",
    "signal_events",
]

#: share of events that are rule signals, all sent by the persona users (1 % of users)
SIGNAL_SHARE = 0.05
Message = tuple[str, bytes, bytes, int]
"""(stream, key, JSON value, event time in epoch ms) of one message."""
Planned = tuple[str, dict[str, Any], int]
"""(stream, fields, event time in epoch ms) of one event to send."""


#: kinds of rule signal and how often each is drawn
SIGNAL_WEIGHTS = {
    "login": 3.0,  # from one of 6 IPs in one of 3 countries: ip_hopping
    "failed": 2.0,  # a failed payment: frustrated
    "search": 2.0,  # a zero-result search: frustrated
    "rage": 1.0,  # 2-4 clicks on one element 150 ms apart: frustrated
    "complaint": 0.3,  # frustrated
    "add_to_cart": 2.0,  # one of the user's 3 carts: cart_abandoned
    "checkout_started": 1.0,
    "remove_from_cart": 0.5,
    "order": 1.5,  # created or paid, for one of the user's carts: cancels cart_abandoned
    "consent": 0.5,  # personalisation on (80 %) or off
}


def signal_events(rng: random.Random, user: str, ts_ms: int) -> list[Planned]:
    """One burst of rule signals for a persona ``user`` at ``ts_ms`` (event time, epoch ms)."""
    kind = rng.choices(list(SIGNAL_WEIGHTS), weights=list(SIGNAL_WEIGHTS.values()))[0]
    cart_id, sku = f"cart-{user}-{rng.randrange(3)}", f"gc-{rng.randrange(3)}"
    if kind == "rage":
        click = {"action": "click", "element": "pay-button"}
        return [("browse", click, ts_ms + i * 150) for i in range(rng.randint(2, 4))]
    fields: dict[str, Any]
    if kind == "login":
        stream, fields = "logins", {"outcome": rng.choice(("success", "failure"))}
        fields |= {"ip": f"203.0.113.{rng.randrange(6)}", "country": rng.choice(("SG", "MY", "TH"))}
    elif kind == "failed":
        stream, fields = (
            "orders",
            {"status": "failed", "amount": 20.0, "failure_reason": "declined"},
        )
    elif kind == "search":
        stream, fields = "browse", {"action": "search", "query": "gift card", "results_count": 0}
    elif kind == "complaint":
        stream, fields = "browse", {"action": "complaint", "page": "/support"}
    elif kind in ("add_to_cart", "checkout_started", "remove_from_cart"):
        stream, fields = "browse", {"action": kind, "cart_id": cart_id, "sku": sku, "price": 10.0}
    elif kind == "order":
        stream, fields = "orders", {"status": rng.choice(("created", "paid")), "amount": 10.0}
        fields |= {"cart_id": cart_id, "items": [{"sku": sku, "brand": "a", "unit_price": 10.0}]}
    else:
        stream, fields = "accounts", {"action": "consent_changed"}
        fields["personalization"] = rng.random() < 0.8
    return [(stream, fields, ts_ms)]


def backlog(
    events: int, users: int, *, span_ms: int, end_ms: int, seed: int = 7
) -> Iterator[Message]:
    """``events`` messages (stream, key, JSON value, event time ms), times rising to ``end_ms``."""
    rng = random.Random(seed)
    personas = max(1, users // 100)
    index = 0
    while index < events:
        ts_ms = end_ms - span_ms + index * span_ms // events
        if rng.random() < SIGNAL_SHARE:
            user = f"persona-{rng.randrange(personas)}"
            planned = signal_events(rng, user, ts_ms)
        else:
            user, stream, fields = background(rng, users)
            planned = [(stream, fields, ts_ms)]
        for stream, fields, at_ms in planned[: events - index]:
            body = {"event_id": f"cmp-{index}", "user_id": user, "ts": at_ms, **fields}
            if stream == "orders":
                body.setdefault("order_id", f"o-{index}")
            yield stream, user.encode(), orjson.dumps(body), at_ms
            index += 1


async def produce(topics: dict[str, str], messages: Iterator[Message], *, bootstrap: str) -> int:
    """Send every message to its stream's topic; return how many."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=262144)
    await producer.start()
    sent = 0
    try:
        pending = []
        for stream, key, value, at_ms in messages:
            pending.append(await producer.send(topics[stream], value, key=key, timestamp_ms=at_ms))
            sent += 1
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


def reference_tags(events: Iterator[Message], rules_dir: Path) -> dict[str, float]:
    """``tag/action`` -> tag changes from streamtags' offline replay of the same events.

    The engine on a simulated clock in event-time order, one partition, no
    Kafka: what the rules say should happen, to check every contestant's tags by.
    """
    replay = Replay(load_rules(rules_dir), lateness_ms=Settings().lateness_ms)
    replay.feed(
        Decoded(0, stream, offset, decode_event(stream, value))
        for offset, (stream, _, value, _) in enumerate(events)
    )
    replay.settle()  # every event applied, as the live worker does once its clock moves on
    return {
        f"{tag}/{action}": float(count)
        for tag, counts in sorted(replay.summary().items())
        if tag != "coupon_triggers"
        for action, count in sorted(counts.items())
    }
