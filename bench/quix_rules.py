"""The three headline streamtags rules as an idiomatic Quix Streams 3.x application.

A contestant of ``bench/compare.py``: what a team would write in Quix Streams
instead of streamtags, for ``ip_hopping``, ``frustrated`` and ``cart_abandoned``
as ``rules/`` defines them. The four input topics are concatenated into one
``StreamingDataFrame``; one stateful ``apply`` keeps each user's recent
events in Quix's RocksDB state (changelog topics on) and expands into zero
or more tag records, which go to one output topic as JSON.

Written the way the Quix docs show custom per-key logic (``apply(...,
stateful=True)`` with ``state.get``/``state.set``), not with windowed
aggregations: the rules combine several filtered features per user (distinct
IPs *or* countries, four frustration signals), which Quix windows cannot
express as one per-user decision. Windows run on event time (the ``ts``
field, in epoch ms as the benchmark's backlog sends it), pruned on every
update.

Where it does less than streamtags (so a reader can weigh the numbers):

- no timers in Quix: an abandoned cart is judged on the user's *later*
  events (its first event 15 minutes or more after the cart's last
  activity), so a user who goes quiet is never tagged; streamtags fires from
  the watermark;
- tags carry ``expires_at`` but are never cleared by TTL (no timers), only
  ``cart_abandoned`` is cleared, when the cart's order arrives;
- no Redis, no coupon triggers, no dead-letter topic, no duplicate-event
  suppression, no validation beyond JSON decoding, and rules are fixed
  Python, not compiled from YAML.

Run by ``bench/compare.py`` in the ``.venv-bench`` venv (``make bench-compare``)::

    python bench/quix_rules.py --topics a,b,c,d --streams orders,browse,logins,accounts \\
        --output tags --group g --state-dir /tmp/s --events 200000 --result r.json
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quixstreams import Application, State

__all__ = [
    "CART_ABANDONED",
    "FRUSTRATED",
    "IP_HOPPING",
    "Drain",
    "TagSpec",
    "build_app",
    "cart_abandoned",
    "frustrated",
    "ip_hopping",
    "main",
    "tag_user",
]

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
Record = dict[str, Any]
"""One tag record, shaped like streamtags' tag changes (fewer evidence fields)."""


@dataclass(frozen=True, slots=True)
class TagSpec:
    """A tag's metadata and lifecycle, as in its ``rules/*.yaml`` (ms)."""

    name: str
    category: str
    severity: str
    ttl_ms: int
    #: no new ``applied`` within this long of the last one
    cooldown_ms: int = 0


IP_HOPPING = TagSpec("ip_hopping", "risk", "high", ttl_ms=24 * HOUR_MS, cooldown_ms=HOUR_MS)
FRUSTRATED = TagSpec("frustrated", "service", "medium", ttl_ms=2 * HOUR_MS)
CART_ABANDONED = TagSpec("cart_abandoned", "marketing", "medium", ttl_ms=24 * HOUR_MS)


def _record(event: Record, spec: TagSpec, action: str, expires_ms: int, evidence: Record) -> Record:
    return {
        "user_id": event["user_id"],
        "tag": spec.name,
        "action": action,
        "category": spec.category,
        "severity": spec.severity,
        "ts": event["ts"],
        "expires_at": expires_ms,
        "rule": {"name": spec.name, "version": 1},
        "evidence": {**evidence, "event_id": event["event_id"]},
    }


def _holds(event: Record, state: State, spec: TagSpec, evidence: Record) -> list[Record]:
    """Apply or renew ``spec``'s tag at the event's time, as streamtags' lifecycle does.

    Renewal needs the expiry to move by a quarter of the TTL or more, and a
    cooldown blocks re-applying; state holds ``[applied_at, expires_at]``.
    """
    now = event["ts"]
    key = f"tag:{spec.name}"
    applied_at, expires_at = state.get(key, [None, 0])
    if expires_at > now:
        if now + spec.ttl_ms - expires_at < spec.ttl_ms // 4:
            return []
        action = "renewed"
    else:
        if spec.cooldown_ms and applied_at is not None and now - applied_at < spec.cooldown_ms:
            return []
        action, applied_at = "applied", now
    state.set(key, [applied_at, now + spec.ttl_ms])
    return [_record(event, spec, action, now + spec.ttl_ms, evidence)]


def _windowed(state: State, key: str, now: int, window_ms: int, item: list[Any]) -> list[Any]:
    """Append ``item`` (``[ts, ...]``) to the list at ``key``; drop entries out of the window."""
    kept = [old for old in state.get(key, []) if old[0] > now - window_ms]
    kept.append(item)
    state.set(key, kept)
    return kept


def ip_hopping(event: Record, state: State) -> list[Record]:
    """Logins (any outcome) from 3+ distinct IPs or 2+ countries within 1 hour."""
    if event["stream"] != "logins":
        return []
    now = event["ts"]
    logins = _windowed(state, "logins", now, HOUR_MS, [now, event.get("ip"), event.get("country")])
    ips = {ip for _, ip, _ in logins if ip is not None}
    countries = {country for _, _, country in logins if country is not None}
    if len(ips) < 3 and len(countries) < 2:
        return []
    return _holds(event, state, IP_HOPPING, {"ips": len(ips), "countries": len(countries)})


def frustrated(event: Record, state: State) -> list[Record]:
    """3+ failed payments or 3+ zero-result searches in 10 min, 3+ clicks on one
    element within 1 s, or a complaint in 10 min."""
    stream, action, now = event["stream"], event.get("action"), event["ts"]
    threshold = 3
    if stream == "orders" and event.get("status") == "failed":
        signal = "failed_payments"
        count = len(_windowed(state, signal, now, 10 * MINUTE_MS, [now]))
    elif stream == "browse" and action == "search" and event.get("results_count") == 0:
        signal = "empty_searches"
        count = len(_windowed(state, signal, now, 10 * MINUTE_MS, [now]))
    elif stream == "browse" and action == "click":
        signal = "rage_clicks"
        clicks = _windowed(state, "clicks", now, 1000, [now, event.get("element")])
        count = max(Counter(element for _, element in clicks).values())
    elif stream == "browse" and action == "complaint":
        signal, threshold = "complaints", 1
        count = len(_windowed(state, signal, now, 10 * MINUTE_MS, [now]))
    else:
        return []
    if count < threshold:
        return []
    return _holds(event, state, FRUSTRATED, {signal: count})


def cart_abandoned(event: Record, state: State) -> list[Record]:
    """A cart with add-to-cart or checkout-started and no order created or paid
    within 15 minutes of its last such event, judged on the user's later
    events (Quix has no timers).

    Each cart fires once (``applied``, or ``renewed`` when the tag is live);
    a cart emptied by ``remove_from_cart`` is forgotten; a fired cart's order
    clears the tag. Marketing: never for users who opted out.
    """
    stream, action, now = event["stream"], event.get("action"), event["ts"]
    if stream == "accounts" and "personalization" in event:
        state.set("personalization", bool(event["personalization"]))
    cart_id = event.get("cart_id")
    carts: dict[str, list[Any]] = state.get("carts", {})
    out: list[Record] = []
    changed = True
    if cart_id is None:
        changed = False
    elif stream == "browse" and action in ("add_to_cart", "checkout_started"):
        if cart_id not in state.get("fired_carts", []):
            _, skus = carts.get(cart_id, [now, {}])
            if sku := event.get("sku"):
                skus[sku] = skus.get(sku, 0) + 1
            carts[cart_id] = [now, skus]
    elif stream == "browse" and action == "remove_from_cart" and cart_id in carts:
        skus = carts[cart_id][1]
        if skus.get(event.get("sku"), 0) > 1:
            skus[event["sku"]] -= 1
        elif skus.pop(event.get("sku"), None) is not None and not skus:
            del carts[cart_id]
    elif stream == "orders" and event.get("status") in ("created", "paid"):
        changed = carts.pop(cart_id, None) is not None
        out += _clear_cart_tag(event, state, cart_id)
    else:
        changed = False
    for due in [cart for cart, (last, _) in carts.items() if last + 15 * MINUTE_MS <= now]:
        del carts[due]
        changed = True
        out += _fire_cart(event, state, due)
    if changed:
        state.set("carts", carts)
    return out


def _fire_cart(event: Record, state: State, cart_id: str) -> list[Record]:
    state.set("fired_carts", [*state.get("fired_carts", [])[-19:], cart_id])
    if not state.get("personalization", True):
        return []
    key, now = f"tag:{CART_ABANDONED.name}", event["ts"]
    applied_at, expires_at = state.get(key, [None, 0])
    action = "renewed" if expires_at > now else "applied"
    applied_at = applied_at if action == "renewed" else now
    state.set(key, [applied_at, max(expires_at, now + CART_ABANDONED.ttl_ms)])
    return [
        _record(event, CART_ABANDONED, action, now + CART_ABANDONED.ttl_ms, {"cart_id": cart_id})
    ]


def _clear_cart_tag(event: Record, state: State, cart_id: str) -> list[Record]:
    key, now = f"tag:{CART_ABANDONED.name}", event["ts"]
    applied_at, expires_at = state.get(key, [None, 0])
    if expires_at <= now or cart_id not in state.get("fired_carts", []):
        return []
    state.set(key, [applied_at, now])
    return [_record(event, CART_ABANDONED, "cleared", now, {"cart_id": cart_id})]


RULES: tuple[Callable[[Record, State], list[Record]], ...] = (
    ip_hopping,
    frustrated,
    cart_abandoned,
)


def tag_user(event: Record, state: State) -> list[Record]:
    """Every tag record one event causes for its user (the message key)."""
    return [record for rule in RULES for record in rule(event, state)]


@dataclass(slots=True)
class Drain:
    """Times the drain of a backlog of ``expected`` messages and stops the app after it.

    The clock starts after the first message is processed (which is not
    counted) and stops after the last: wall seconds and the process's
    user+system CPU seconds (all threads, librdkafka's included).
    """

    expected: int
    #: what ends the run: the app's ``stop``
    stop: Callable[[], object] = lambda: None
    processed: int = 0
    started_wall: float = 0.0
    started_cpu: float = 0.0
    drain_s: float = 0.0
    cpu_s: float = 0.0

    def on_message_processed(self, topic: str, partition: int, offset: int) -> None:
        """Quix's per-message callback."""
        self.processed += 1
        if self.processed == 1:
            self.started_wall, self.started_cpu = time.perf_counter(), _cpu_s()
        elif self.processed == self.expected:
            self.drain_s = time.perf_counter() - self.started_wall
            self.cpu_s = _cpu_s() - self.started_cpu
            self.stop()


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def build_app(
    *,
    bootstrap: str,
    group: str,
    state_dir: Path,
    inputs: dict[str, str],
    output: str,
    tally: Counter[str],
    commit_interval_s: float = 1.0,
    poll_timeout_s: float = 1.0,
    on_message_processed: Callable[[str, int, int], None] | None = None,
) -> Application:
    """The Quix app: ``inputs`` (stream name -> topic) concatenated, tagged, to ``output``.

    Quix's defaults except ``commit_interval_s`` (Quix: 5 s), which defaults to a
    streamtags worker's 1 s so both promise the same durability.
    ``poll_timeout_s`` is Quix's ``consumer_poll_timeout`` (default 1 s): with
    concatenated topics it also bounds how long a buffer refill waits for a
    full batch. ``tally`` counts the emitted records by ``tag/action``.
    """
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=str(state_dir),
        commit_interval=commit_interval_s,
        consumer_poll_timeout=poll_timeout_s,
        use_changelog_topics=True,
        loglevel="WARNING",
        on_message_processed=on_message_processed,
    )
    frames = []
    for stream, name in inputs.items():
        frame = app.dataframe(app.topic(name, value_deserializer="json"))
        frame["stream"] = stream
        frames.append(frame)
    events = functools.reduce(lambda left, right: left.concat(right), frames)
    tags = events.apply(tag_user, stateful=True, expand=True)
    tags = tags.update(lambda record: tally.update([f"{record['tag']}/{record['action']}"]))
    tags.to_topic(app.topic(output, value_serializer="json"))
    return app


def main() -> None:
    """Drain ``--events`` messages from the inputs, then write the timings to ``--result``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topics", required=True, help="comma-separated input topics")
    parser.add_argument("--streams", required=True, help="their stream names, same order")
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--commit-interval-s", type=float, default=1.0)
    parser.add_argument("--poll-timeout-s", type=float, default=1.0)
    args = parser.parse_args()
    tally: Counter[str] = Counter()
    drain = Drain(expected=args.events)
    app = build_app(
        bootstrap=args.bootstrap,
        group=args.group,
        state_dir=args.state_dir,
        inputs=dict(zip(args.streams.split(","), args.topics.split(","), strict=True)),
        output=args.output,
        tally=tally,
        commit_interval_s=args.commit_interval_s,
        poll_timeout_s=args.poll_timeout_s,
        on_message_processed=drain.on_message_processed,
    )
    drain.stop = app.stop
    app.run()
    result = {
        "events_timed": drain.processed - 1,
        "drain_s": drain.drain_s,
        "cpu_s": drain.cpu_s,
        "tags": dict(sorted(tally.items())),
    }
    args.result.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
