"""Engine throughput: a million mixed events over 100,000 users, full catalogue.

Prints whether the engine ran compiled (mypyc) or interpreted, events/s,
microseconds per event and serialised state bytes per user, and writes
bench/results/engine.json. The target on a 2-core machine is at
least 100,000 events/s for the engine alone (no Kafka, no decoding).

    .venv/bin/python bench/engine.py [--events 1000000] [--users 100000]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamtags.contracts.events import Account, Browse, Event, Login, Order, OrderItem  # noqa: E402
from streamtags.contracts.ingest import Decoded  # noqa: E402
from streamtags.engine import COMPILED  # noqa: E402
from streamtags.engine.partition import Engine, Output, Partition  # noqa: E402
from streamtags.rulebook.loader import load_rules  # noqa: E402

START_MS = 1_795_341_600_000
#: The worker raises the young-generation threshold too (streamtags.live.app): per-user
#: state is many small long-lived containers, and default thresholds rescan them often.
GC_THRESHOLDS = (50_000, 50, 100)

# The mix, shaped like a shop's traffic: mostly browsing (72 %), orders 12 %,
# logins 13 %, account changes 3 %. Every catalogue rule sees events.
BROWSE_ACTIONS = (
    "page_view",
    "product_view",
    "search",
    "click",
    "add_to_cart",
    "remove_from_cart",
    "checkout_started",
    "error",
    "complaint",
)
BROWSE_WEIGHTS = (35, 25, 10, 12, 8, 2, 4, 3, 1)
ORDER_STATUSES = ("created", "paid", "failed", "cancelled", "refunded")
ORDER_WEIGHTS = (35, 40, 12, 10, 3)


def generate(count: int, users: int, seed: int = 7) -> list[Decoded]:
    """A deterministic, reproducible mix of events (see the weights above)."""
    rng = random.Random(seed)
    events: list[Decoded] = []
    offsets = {"orders": 0, "browse": 0, "logins": 0, "accounts": 0}
    ts = START_MS
    for i in range(count):
        ts += rng.randint(0, 20)  # ~100 events/s overall, so each user's windows hold data
        user = f"user-{rng.randrange(users)}"
        roll = rng.random()
        event: Event
        if roll < 0.72:
            action: Any = rng.choices(BROWSE_ACTIONS, BROWSE_WEIGHTS)[0]
            event = Browse.model_construct(
                event_id=f"e{i}",
                user_id=user,
                ts=ts,
                action=action,
                sku=f"sku-{rng.randrange(500)}",
                price=float(rng.choice((10, 20, 50, 100))),
                cart_id=f"cart-{user}-{rng.randrange(3)}",
                results_count=rng.choice((0, 3, 12)),
                element=f"btn-{rng.randrange(4)}",
                session_id=None,
                category=None,
                brand=None,
                query="q",
                page="/p",
            )
        elif roll < 0.84:
            status: Any = rng.choices(ORDER_STATUSES, ORDER_WEIGHTS)[0]
            amount = float(rng.choice((10, 25, 50, 100, 500, 2500)))
            event = Order.model_construct(
                event_id=f"e{i}",
                user_id=user,
                ts=ts,
                order_id=f"o{i}",
                cart_id=f"cart-{user}-{rng.randrange(3)}",
                status=status,
                amount=amount,
                currency="USD",
                items=[
                    OrderItem.model_construct(
                        sku=f"sku-{rng.randrange(500)}",
                        brand=rng.choice(("acme", "zen", "nova")),
                        quantity=1,
                        unit_price=amount,
                        category=None,
                    )
                ],
                order_kind=rng.choice(("purchase", "purchase", "top_up")),
                payment_method="card",
                card_fingerprint=f"fp-{rng.randrange(5)}",
                coupon_code=rng.choice((None, None, "SAVE10")),
                promo_kind=rng.choice((None, None, None, "new_user")),
                failure_reason=None,
            )
        elif roll < 0.97:
            event = Login.model_construct(
                event_id=f"e{i}",
                user_id=user,
                ts=ts,
                outcome=rng.choice(("success", "success", "failure")),
                ip=f"203.0.113.{rng.randrange(6)}",
                country=rng.choice(("SG", "SG", "MY")),
                device_id=None,
                user_agent=None,
            )
        else:
            event = Account.model_construct(
                event_id=f"e{i}",
                user_id=user,
                ts=ts,
                action=rng.choice(("registered", "consent_changed", "card_added")),
                personalization=rng.random() > 0.1,
                card_fingerprint=f"fp-{rng.randrange(9)}",
                timezone=rng.choice(("Asia/Singapore", "Europe/Berlin", None)),
            )
        stream = event.stream
        offsets[stream] += 1
        events.append(Decoded(0, stream, offsets[stream], event))
    return events


def _fold(outputs: Any, out: Output) -> None:
    """Hash one call's changes and triggers (in emission order) into ``outputs``."""
    for change in out.changes:
        outputs.update(b"c" + orjson.dumps(change))
    for trigger in out.triggers:
        outputs.update(b"t" + orjson.dumps(trigger))


def _run(
    engine: Engine, partition: Partition, events: list[Decoded], batch_size: int, outputs: Any
) -> tuple[float, int, int]:
    """Seconds the engine took (hashing left out), tag changes and coupon triggers."""
    changes = triggers = 0
    hashing = 0.0  # seconds spent hashing, left out of the engine's time
    gc.collect()
    gc.freeze()  # the generated events are not garbage; keep the collector off them
    gc.set_threshold(*GC_THRESHOLDS)
    started = time.perf_counter()
    for begin in range(0, len(events), batch_size):
        batch = events[begin : begin + batch_size]
        out = partition.process(batch, batch[-1].event.ts)
        changes += len(out.changes)
        triggers += len(out.triggers)
        hashing -= time.perf_counter()
        _fold(outputs, out)
        hashing += time.perf_counter()
    # Let the last events out of the reorder buffer (they wait for the watermark).
    out = partition.advance(events[-1].event.ts + engine.lateness_ms + 1)
    changes += len(out.changes)
    triggers += len(out.triggers)
    elapsed = time.perf_counter() - started - hashing
    _fold(outputs, out)
    return elapsed, changes, triggers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "engine.json"))
    args = parser.parse_args()

    ruleset = load_rules(ROOT / "rules")
    print(f"generating {args.events:,} events over {args.users:,} users ...", flush=True)
    events = generate(args.events, args.users)
    engine = Engine(ruleset, lateness_ms=10_000)
    partition = engine.partition()
    # Every change and trigger, in emission order: equal digests mean equal behaviour.
    outputs = hashlib.sha256()
    elapsed, changes, triggers = _run(engine, partition, events, args.batch, outputs)

    sizes = [len(partition.dump(user)) for user in list(partition.states)]
    sizes.sort()
    result = {
        "events": len(events),
        "users": len(partition.states),
        "rules": len(ruleset.rules),
        "seconds": round(elapsed, 3),
        "events_per_s": round(len(events) / elapsed),
        "us_per_event": round(elapsed / len(events) * 1e6, 2),
        "tag_changes": changes,
        "coupon_triggers": triggers,
        "state_bytes_mean": round(statistics.fmean(sizes), 1),
        "state_bytes_p50": sizes[len(sizes) // 2],
        "state_bytes_p99": sizes[int(len(sizes) * 0.99)],
        "state_bytes_max": sizes[-1],
        "outputs_sha256": outputs.hexdigest(),
        "python": sys.version.split()[0],
        "compiled": COMPILED,
    }
    print(f"{'engine':>22}: {'compiled (mypyc)' if COMPILED else 'interpreted'}")
    print(f"{'events':>22}: {result['events']:,}")
    print(f"{'users':>22}: {result['users']:,}")
    print(f"{'events/s':>22}: {result['events_per_s']:,}")
    print(f"{'us/event':>22}: {result['us_per_event']}")
    print(f"{'tag changes':>22}: {changes:,}   coupon triggers: {triggers:,}")
    print(
        f"{'state bytes/user':>22}: mean {result['state_bytes_mean']}, "
        f"p50 {result['state_bytes_p50']}, p99 {result['state_bytes_p99']}, "
        f"max {result['state_bytes_max']}"
    )
    print(f"{'outputs sha256':>22}: {result['outputs_sha256']}")
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
