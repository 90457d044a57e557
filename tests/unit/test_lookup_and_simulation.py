"""The lookup client fails open; simulated personas earn their tags in an offline replay."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson

from streamtags.contracts.codec import decode_event
from streamtags.contracts.ingest import Decoded
from streamtags.contracts.recordings import Outgoing
from streamtags.offline.replay import Replay
from streamtags.offline.simulate import PERSONAS, plan_personas, run
from streamtags.rulebook.loader import load_rules
from streamtags.serving.lookup import AsyncTagClient, TagClient
from streamtags.serving.redis_layout import decode_tags

ROOT = Path(__file__).resolve().parents[2]
CLOSED_PORT = "redis://127.0.0.1:1/0"


def test_lookup_returns_the_default_when_redis_is_unreachable() -> None:
    client = TagClient(redis_url=CLOSED_PORT, timeout_ms=50)
    started = time.monotonic()
    assert client.tags("u1") == []
    assert client.tags("u1", default=[{"tag": "fallback"}]) == [{"tag": "fallback"}]
    assert time.monotonic() - started < 5


def test_async_lookup_fails_open_too() -> None:
    async def lookup() -> list[dict[str, object]]:
        async with AsyncTagClient(redis_url=CLOSED_PORT, timeout_ms=50) as client:
            return await client.tags("u1")

    assert asyncio.run(lookup()) == []


def test_expired_fields_are_never_returned() -> None:
    now = 1_795_341_600_000
    fields = {
        b"live": orjson.dumps({"tag": "live", "expires_at_ms": now + 1}),
        b"lapsed": orjson.dumps({"tag": "lapsed", "expires_at_ms": now}),
        b"junk": b"not json",
    }
    assert [t["tag"] for t in decode_tags(fields, now_ms=now)] == ["live"]


def test_every_simulated_persona_earns_its_tag_in_an_offline_replay() -> None:
    scale = 0.01
    now = [1_795_341_600.0]  # a simulated clock that moves only when the simulator sleeps
    plan = plan_personas(1, time_scale=scale, seed=5, now_s=now[0])
    assert {row.persona for row in plan.truth} == set(PERSONAS)
    messages: list[Outgoing] = []

    async def collect(message: Outgoing) -> None:
        messages.append(message)

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    asyncio.run(
        run(collect, rate=20, users=50, duration_s=5, plan=plan, clock=lambda: now[0], sleep=sleep)
    )

    replay = Replay(load_rules(ROOT / "rules", time_scale=scale), lateness_ms=1000)
    events = [
        Decoded(0, m.stream, i, decode_event(m.stream, m.value)) for i, m in enumerate(messages)
    ]
    replay.feed(events)
    replay.until(max(d.event.ts for d in events) + 60_000)
    applied = {
        (r["user_id"], r["tag"])
        for r in replay.records
        if "change_id" in r and r["action"] == "applied"
    }
    missing = [row for row in plan.truth if (row.user_id, row.expected_tag) not in applied]
    assert not missing


def test_importing_the_lookup_client_does_not_import_faust() -> None:
    import subprocess
    import sys

    code = (
        "import sys, streamtags.serving.lookup; "
        "print('faust' in sys.modules, 'mode' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
