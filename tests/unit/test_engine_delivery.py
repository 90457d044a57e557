"""What the engine promises whatever the delivery: skewed clocks, late events, lost state, ids."""

from __future__ import annotations

from pathlib import Path

import orjson

from streamtags.contracts.codec import decode_event
from streamtags.contracts.ingest import Decoded
from streamtags.contracts.records import iso_ms
from streamtags.engine.output import digest
from streamtags.engine.partition import Engine, Output
from streamtags.rulebook.loader import load_rules
from tests.unit.test_engine import ev

ROOT = Path(__file__).resolve().parents[2]
RULES = load_rules(ROOT / "rules")
T0 = 1_795_341_600_000
MINUTE = 60_000
HOUR = 60 * MINUTE
LATENESS = 10_000


def login(offset: int, at_ms: int, ip: str, country: str = "SG", user: str = "u1") -> Decoded:
    return ev("logins", offset, at_ms, user, ip=ip, country=country)


def test_an_event_stamped_beyond_the_skew_is_rejected_and_moves_no_clock() -> None:
    part = Engine(RULES, lateness_ms=LATENESS, max_future_skew_ms=5 * MINUTE).partition()
    out = part.process([login(1, 0, "203.0.113.1")], T0)
    out.extend(part.process([login(2, 6 * MINUTE, "203.0.113.2")], T0))  # 6 min ahead
    assert [(r.decoded.offset, r.kind) for r in out.rejected] == [(2, "future_timestamp")]
    assert part.clock.streams["logins"].highest_event_ms == T0
    out = part.process([login(3, 4 * MINUTE, "203.0.113.3")], T0)  # 4 min ahead: accepted
    assert out.rejected == []


def test_no_event_moves_the_watermark_past_the_wall_clock() -> None:
    part = Engine(RULES, lateness_ms=LATENESS).partition()
    part.process([login(1, 4 * MINUTE, "203.0.113.1")], T0)  # ahead, within the skew
    watermark = part.watermark(T0)
    assert watermark is not None and watermark <= T0 - LATENESS


def test_an_event_older_than_what_was_settled_is_rejected_as_too_late() -> None:
    part = Engine(RULES, lateness_ms=LATENESS).partition()
    part.process([login(1, 0, "203.0.113.1")], T0)
    part.advance(T0 + MINUTE)  # the login at T0 is applied: the user is settled to T0
    out = part.process([login(2, -5_000, "203.0.113.2")], T0 + MINUTE)
    assert [(r.decoded.offset, r.kind) for r in out.rejected] == [(2, "too_late")]
    assert "already applied" in out.rejected[0].reason


def test_a_redelivered_offset_is_dropped_silently_and_a_retry_by_id_is_counted() -> None:
    part = Engine(RULES, lateness_ms=LATENESS).partition()
    first = ev("orders", 1, 0, status="failed")
    retry = Decoded(0, "orders", 2, first.event)  # a producer retry: same id, new offset
    out = part.process([first, first, retry], T0)
    assert out.rejected == [] and out.duplicates == 1
    assert len(part.states["u1"].buffer) == 1


def test_a_state_that_cannot_be_read_starts_without_marketing_consent() -> None:
    part = Engine(RULES, lateness_ms=LATENESS).partition()
    state = part.load_bytes("u1", b"\x07not a state")
    assert state.personalization is False
    assert part.unreadable_states == 1


def test_ids_digest_their_parts_unambiguously() -> None:
    assert digest("a|b", "c") != digest("a", "b|c")
    assert digest("u1", "rule", "15") != digest("u1", "rule", 15)
    assert digest("u1", "rule", 15) == digest("u1", "rule", 15)


def test_a_tag_lives_its_ttl_after_the_last_signal_within_one_percent() -> None:
    """ip_hopping lasts 24 h after the last qualifying login (renewals every signal)."""
    part = Engine(RULES, lateness_ms=LATENESS).partition()
    logins = [login(i, i * 10 * MINUTE, f"203.0.113.{i % 4}") for i in range(1, 19)]
    out = Output()
    for decoded in logins:
        out.extend(part.process([decoded], decoded.event.ts))
    last_signal = logins[-1].event.ts
    out.extend(part.advance(last_signal + LATENESS + 1))
    live = part.states["u1"].tags["ip_hopping"]
    ttl = 24 * HOUR
    assert last_signal + ttl - ttl // 100 <= live.expires_at_ms <= last_signal + ttl
    renewals = [c for c in out.changes if c["tag"] == "ip_hopping" and c["action"] == "renewed"]
    assert renewals and renewals[-1]["expires_at"] == iso_ms(live.expires_at_ms)


def test_far_future_accepted_times_never_break_expiries_or_deadlines() -> None:
    """The latest accepted event time: 2099-12-31; every expiry and deadline formats."""
    late_2099 = 4_102_444_799_000 - 4 * HOUR
    part = Engine(RULES, lateness_ms=LATENESS).partition()
    body = {"event_id": "e1", "user_id": "u9", "ts": late_2099, "action": "add_to_cart"}
    event = decode_event("browse", orjson.dumps({**body, "cart_id": "c", "sku": "s"}))
    out = part.process([Decoded(0, "browse", 1, event)], late_2099)
    out.extend(part.advance(late_2099 + 40 * 86_400_000))
    assert out.rejected == [] and out.triggers
