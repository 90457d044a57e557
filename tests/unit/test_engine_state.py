"""A user's state: named types in memory, compact versioned bytes on disk; old bytes load."""

from __future__ import annotations

from streamtags.engine.clock import PartitionClock, StreamClock
from streamtags.engine.state import CartItem, LiveTag, PendingDeadline, UserState

T0 = 1_795_341_600_000

#: Written by the engine before it had named types (positional lists in memory);
#: stored changelogs hold bytes like these, so they must keep reading back.
STORED_V1 = (
    b'\x01[1795341600000,{"o":3,"b":7},"Asia/Singapore",0,{},{"whale":[1000,-5000]},'
    b'{"whale":1000},{"cart_abandoned":{"c1":[2000,-60000,["e1","e2"],'
    b'{"gc-50":[2,50.0],"gc-10":[1,null]}]}},{"cart_abandoned":{"c0":9000}},'
    b'{"cart_abandoned":{"c2":10}}]'
)


def a_state() -> UserState:
    state = UserState()
    state.latest_ts = T0
    state.offsets = {"orders": 3, "browse": 7}
    state.tz = "Asia/Singapore"
    state.personalization = False
    state.tags = {"whale": LiveTag(applied_at_ms=T0 - 1000, expires_at_ms=T0 + 5000)}
    state.last_applied = {"whale": T0 - 1000}
    cart = {"gc-50": CartItem(quantity=2, unit_price=50.0), "gc-10": CartItem(1, None)}
    state.pending = {
        "cart_abandoned": {"c1": PendingDeadline(T0 - 2000, T0 + 60_000, ["e1", "e2"], cart)}
    }
    state.fired = {"cart_abandoned": {"c0": T0 - 9000}}
    state.stops = {"cart_abandoned": {"c2": T0 - 10}}
    return state


#: Version 2 appends how far the user's time is settled and the waiting events.
STORED_V2 = STORED_V1.replace(b"\x01", b"\x02", 1)[:-1] + b",1795341600000,[]]"


def test_a_state_is_stored_as_version_2_bytes_the_version_1_layout_plus_two_fields() -> None:
    assert a_state().to_bytes({}) == STORED_V2


def test_waiting_events_are_stored_as_sent_and_read_back_as_events() -> None:
    from streamtags.contracts.codec import decode_event
    from streamtags.contracts.ingest import Decoded

    raw = b'{"event_id":"e9","user_id":"u1","ts":1795341600500,"outcome":"success","ip":"::1"}'
    state = a_state()
    state.processed_to_ms = T0 + 250
    state.buffer = [Decoded(3, "logins", 41, decode_event("logins", raw), raw)]
    back = UserState.from_bytes(state.to_bytes({}), {})
    assert back.processed_to_ms == T0 + 250
    assert [(d.source, d.offset, d.event, d.raw) for d in back.buffer] == [
        ("logins", 41, decode_event("logins", raw), raw)
    ]


def test_version_1_bytes_read_back_into_named_tags_deadlines_and_carts() -> None:
    state = UserState.from_bytes(STORED_V1, {})
    expected = a_state()
    assert state.tags == expected.tags
    assert state.pending == expected.pending
    assert (state.fired, state.stops, state.last_applied) == (
        expected.fired,
        expected.stops,
        expected.last_applied,
    )
    assert (state.offsets, state.tz, state.personalization, state.latest_ts) == (
        expected.offsets,
        expected.tz,
        expected.personalization,
        expected.latest_ts,
    )


def test_a_partition_clock_round_trips_through_its_changelog_list() -> None:
    clock = PartitionClock(lateness_ms=0)
    clock.observe("orders", T0, now_ms=T0 + 5)
    clock.observe("browse", T0 + 9, now_ms=T0 + 7)
    assert clock.to_list() == [["browse", T0 + 9, T0 + 7], ["orders", T0, T0 + 5]]
    restored = PartitionClock(lateness_ms=0)
    restored.restore(clock.to_list())
    assert restored.streams == {
        "browse": StreamClock(highest_event_ms=T0 + 9, seen_at_wall_ms=T0 + 7),
        "orders": StreamClock(highest_event_ms=T0, seen_at_wall_ms=T0 + 5),
    }


def test_a_held_stream_does_not_follow_the_wall_clock_until_released() -> None:
    clock = PartitionClock(lateness_ms=0)
    clock.observe("browse", T0, T0)
    clock.observe("orders", T0, T0)
    clock.hold(["orders", "logins"], T0 + 1000)
    assert clock.watermark(T0 + 60_000) is None  # logins: unread backlog, no time yet
    clock.release("logins", T0 + 1000)
    assert clock.watermark(T0 + 60_000) == T0  # orders is held at its highest event time
    clock.release("orders", T0 + 2000)
    assert clock.watermark(T0 + 60_000) == T0 + 58_000  # it follows the clock from release


def test_an_idle_stream_does_not_hold_the_partition_at_its_last_old_event() -> None:
    clock = PartitionClock(lateness_ms=0)
    clock.observe("browse", T0, T0)
    clock.observe("accounts", T0 - 3_600_000, T0)  # a rare topic: its last event is old
    assert clock.watermark(T0) == T0 - 3_600_000
    clock.mark_idle("accounts")  # its consumer read everything there is
    assert clock.watermark(T0) == T0
    clock.observe("accounts", T0 - 1000, T0)  # reading again makes it count again
    assert clock.watermark(T0) == T0 - 1000


def test_a_stream_behind_its_unread_events_keeps_its_highest_time() -> None:
    """A worker falling behind: the orders partition holds events not read yet. Its
    time must not follow the wall clock (or count as idle) past them, or they come
    too late; once nothing is unread it follows the clock again."""
    clock = PartitionClock(lateness_ms=0)
    clock.observe("browse", T0 + 5_000, T0 + 5_000)
    clock.observe("orders", T0, T0)  # read at T0; more orders wait unread since
    clock.mark_idle("orders")  # an earlier, caught-up moment said so
    clock.set_behind(["orders"])
    assert clock.watermark(T0 + 5_000) == T0  # its own highest time, not the clock's
    clock.set_behind([])
    assert clock.watermark(T0 + 5_000) == T0 + 5_000
