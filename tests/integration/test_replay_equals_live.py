"""One recording through the live worker and through the offline replay: the same changes.

The recording mixes the catalogue's headline signals with what delivery does
to them: a producer retry (the same event id twice), events read out of
order across topics, a far-future outlier. `streamtags produce` sends it to
Kafka before the worker starts (a backlog, read as a restarted worker would),
and `streamtags rules test` replays the same file offline with the same rules.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from tests.integration.conftest import ROOT, Names, Worker, consume, wait_for
from tests.integration.test_live import SCALE

#: Every record's event time lies in the 40 s before the file is written; changes
#: up to CUT_S after the last event are compared (carts fire 3.75 s after their
#: last activity on the scaled clock; no tag expires within this).
CUT_S = 6.0


def recording(start_ms: int) -> list[dict[str, Any]]:
    """Lines of a recorded file (each with its ``stream``)."""
    lines: list[dict[str, Any]] = []

    def add(stream: str, user: str, at_s: float, event_id: str, **fields: Any) -> None:
        ts = start_ms + int(at_s * 1000)
        lines.append({"stream": stream, "event_id": event_id, "user_id": user, "ts": ts, **fields})

    for i in range(6):
        user = f"hopper-{i}"
        for n, (ip, country) in enumerate([("203.0.113.1", "SG"), ("198.51.100.2", "MY")]):
            add("logins", user, 1 + n, f"{user}-l{n}", outcome="success", ip=ip, country=country)
        add("logins", user, 3, f"{user}-l2", outcome="failure", ip="192.0.2.3", country="TH")
    for i in range(6):
        user = f"grumpy-{i}"
        for n in range(2):
            add(
                "orders",
                user,
                2 + n,
                f"{user}-f{n}",
                order_id=f"{user}-o{n}",
                status="failed",
                amount=20,
            )
        # a producer retry of the second failed payment: counted once, so no tag
        add("orders", user, 3, f"{user}-f1", order_id=f"{user}-o1", status="failed", amount=20)
    for i in range(8):
        user = f"cart-{i}"
        add(
            "browse",
            user,
            5,
            f"{user}-add",
            action="add_to_cart",
            cart_id=f"c-{user}",
            sku="gc-50",
            price=50,
        )
        add("browse", user, 7, f"{user}-view", action="page_view")
        if i % 2:  # half of them order; the order is written after a later page view
            add(
                "orders",
                user,
                6.5,
                f"{user}-order",
                order_id=f"o-{user}",
                cart_id=f"c-{user}",
                status="created",
                amount=50,
            )
    add("logins", "outlier", 10, "outlier-2099", outcome="success", ip="203.0.113.7")
    lines[-1]["ts"] = 4_000_000_000_000  # 2096: beyond any clock's skew
    return lines


def comparable(change: dict[str, Any]) -> tuple[Any, ...]:
    """A change without its wall-clock stamp."""
    return tuple(sorted((k, orjson.dumps(v)) for k, v in change.items() if k != "emitted_at"))


async def test_the_offline_replay_and_the_live_worker_give_the_same_changes(
    names: Names, worker_factory: Callable[..., Worker], tmp_path: Path
) -> None:
    start_ms = int(time.time() * 1000) - 40_000
    lines = recording(start_ms)
    path = tmp_path / "recording.jsonl"
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    last_ms = max(line["ts"] for line in lines if line["ts"] < 4_000_000_000_000)
    cut_ms = last_ms + int(CUT_S * 1000)
    env = {**os.environ, **names.env(), **SCALE, "STREAMTAGS_PARTITIONS": "4"}
    cli = [sys.executable, "-m", "streamtags"]
    subprocess.run([*cli, "produce", str(path)], env=env, cwd=ROOT, check=True, capture_output=True)
    offline = subprocess.run(
        [*cli, "rules", "test", "--events", str(path), "--json", "--until", str(cut_ms)],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    replayed = [orjson.loads(line) for line in offline.stdout.splitlines()]
    offline_changes = {comparable(r) for r in replayed if "change_id" in r and _ts(r) <= cut_ms}
    offline_triggers = sorted(r["trigger_id"] for r in replayed if "trigger_id" in r)
    assert b"future_timestamp" in offline.stderr  # the outlier, offline

    worker = worker_factory(**SCALE)
    worker.start()
    await wait_for(lambda: time.time() * 1000 > cut_ms + 3000, timeout_s=30, what="the cut")
    changes = await consume(
        names.topic("tags"), count=len(offline_changes), timeout_s=30, settle_s=2
    )
    live_changes = {comparable(c) for c in changes if _ts(c) <= cut_ms}
    triggers = await consume(
        names.topic("coupon-triggers"), count=len(offline_triggers), timeout_s=10, settle_s=1
    )
    letters = await consume(names.topic("dead-letter"), count=1, timeout_s=10)

    assert offline_changes, "the recording produces tag changes"
    assert live_changes == offline_changes, (
        f"only live: {live_changes - offline_changes}\n"
        f"only offline: {offline_changes - live_changes}\n{worker.log()[-3000:]}"
    )
    assert sorted(t["trigger_id"] for t in triggers) == offline_triggers
    assert len(offline_triggers) == 4  # the four carts nobody ordered
    assert [letter["error_kind"] for letter in letters] == ["future_timestamp"]


def _ts(change: dict[str, Any]) -> int:
    from streamtags.contracts.events import parse_event_time

    return parse_event_time(change["ts"])
