"""Properties of the engine over plausible histories of the whole rule catalogue.

Each property compares two runs of the same history that must not differ:
with and without producer retries, with and without a crash replay, read in
event-time order and shuffled within the allowed lateness. "The same" means
the same tag changes (every field, ``change_id`` included, except the
wall-clock ``emitted_at``) and the same coupon triggers, as multisets. See
:mod:`tests.unit.histories` for what the histories hold.

A run drives the engine as :class:`~streamtags.offline.replay.Replay` does:
each event "arrives" at the highest event time read so far, and
:func:`finish` then lets the clock run 100 days past the last event, stopping
at every wake-up, so deadlines, expiries and re-checks fire in order. Every
engine call runs under :func:`~tests.unit.histories.time_limit`, so an engine
stuck in a loop fails the property instead of hanging the suite.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from streamtags.contracts.ingest import Decoded
from streamtags.engine.partition import Change, Engine, Output, Partition, Trigger
from streamtags.engine.state import UserState
from tests.unit.histories import (
    DAY,
    LATENESS_MS,
    MINUTE,
    RULES,
    STATE_LIMIT_BYTES,
    T0,
    Line,
    Producer,
    Sent,
    histories,
    read_in_order,
    restarted,
    time_limit,
)

#: The catalogue at the lateness the properties use; an engine holds compiled rules
#: only (no per-partition state), so every run shares it.
ENGINE = Engine(RULES, lateness_ms=LATENESS_MS)

#: Reproducible in ``make test``: a fixed seed, no example database.
PROPERTY = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: How far past the last event :func:`finish` lets the clock run (ms): past every
#: 30-day TTL, 7-day absence and 90-day window of the catalogue
FINISH_MS = 100 * DAY

#: More wake-ups than this while finishing a history means the engine is stuck
#: re-scheduling itself (a history has at most a few hundred deadlines and re-checks)
MAX_WAKE_UPS = 20_000


def feed(part: Partition, reads: Iterable[Decoded], *, now_ms: int = 0) -> tuple[Output, int]:
    """Process events one at a time, each read at the highest event time read so far
    (as :class:`~streamtags.offline.replay.Replay` does); the output and that time."""
    out = Output()
    for decoded in reads:
        now_ms = max(now_ms, decoded.event.ts)
        with time_limit(f"process(offset {decoded.offset} of {decoded.source}, now={now_ms})"):
            out.extend(part.process([decoded], now_ms))
    return out, now_ms


def finish(part: Partition, *, now_ms: int, last_ts_ms: int) -> Output:
    """Let the clock run to :data:`FINISH_MS` (plus lateness) past ``last_ts_ms``,
    stopping at every wake-up the partition asks for, so deadlines, expiries and
    re-checks fire one at a time in the order they come due."""
    out = Output()
    watermark = part.watermark(now_ms)
    # Quiet streams let event time run with the wall clock; the watermark trails it by
    # the lateness plus however late the streams were last read.
    trail = now_ms - watermark if watermark is not None else part.engine.lateness_ms
    end = last_ts_ms + FINISH_MS + part.engine.lateness_ms
    for _ in range(MAX_WAKE_UPS):
        due = part.next_deadline_ms()
        if due is None or due + trail > end:
            break
        now_ms = max(now_ms + 1, due + trail)
        with time_limit(f"advance(now={now_ms})"):
            out.extend(part.advance(now_ms))
    else:
        raise AssertionError(f"the partition asked for over {MAX_WAKE_UPS} wake-ups")
    with time_limit(f"advance(now={max(now_ms, end)})"):
        out.extend(part.advance(max(now_ms, end)))
    return out


def run(engine: Engine, reads: Sequence[Decoded]) -> tuple[Output, Partition]:
    """Feed ``reads`` to a fresh partition of ``engine`` and finish; all output."""
    part = engine.partition()
    out, now = feed(part, reads)
    last = max((decoded.event.ts for decoded in reads), default=T0)
    out.extend(finish(part, now_ms=now, last_ts_ms=last))
    return out, part


class Outcome(NamedTuple):
    """What a run produced, comparable across runs: every field but ``emitted_at``
    (the wall-clock stamp), each list sorted."""

    changes: list[dict[str, Any]]
    triggers: list[Trigger]


def outcome(out: Output) -> Outcome:
    """The comparable form of ``out``."""
    return Outcome(
        sorted((_without_wall_clock(change) for change in out.changes), key=_sort_key),
        sorted(out.triggers, key=_sort_key),
    )


def differences(expected: Outcome, actual: Outcome) -> str:
    """What ``actual`` lacks and adds compared with ``expected``, one record a line."""
    lines = []
    for name in ("changes", "triggers"):
        want = [orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in getattr(expected, name)]
        got = [orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in getattr(actual, name)]
        missing, extra = Counter(want) - Counter(got), Counter(got) - Counter(want)
        lines += [f"missing {name[:-1]}: {r.decode()}" for r in sorted(missing.elements())]
        lines += [f"extra {name[:-1]}: {r.decode()}" for r in sorted(extra.elements())]
    return "\n".join(lines)


def _without_wall_clock(change: Change) -> dict[str, Any]:
    return {key: value for key, value in change.items() if key != "emitted_at"}


def _sort_key(record: Any) -> tuple[str, bytes]:
    return (
        record.get("ts") or record.get("abandoned_at"),
        orjson.dumps(record, option=orjson.OPT_SORT_KEYS),
    )


@PROPERTY
@given(history=histories(), data=st.data())
def test_a_producer_retry_read_later_at_a_new_offset_changes_no_tag_and_no_trigger(
    history: list[Sent], data: st.DataObject
) -> None:
    """The same event (same id, same content) sent again by its producer and read
    anywhere after the original, at a new offset, counts once."""
    with_retries = list(history)
    for _ in range(data.draw(st.integers(1, 4), label="retries")):
        retried = history[data.draw(st.integers(0, len(history) - 1), label="retried event")]
        original_at = with_retries.index(retried)  # the first: copies go after it
        read_at = data.draw(st.integers(original_at + 1, len(with_retries)), label="read at")
        with_retries.insert(read_at, retried)
    once, _ = run(ENGINE, read_in_order(history))
    retried_run, _ = run(ENGINE, read_in_order(with_retries))
    _assert_same(outcome(once), outcome(retried_run))


@PROPERTY
@given(history=histories(), data=st.data())
def test_redelivering_a_suffix_at_the_same_offsets_after_a_crash_changes_nothing(
    history: list[Sent], data: st.DataObject
) -> None:
    """A worker that crashes after reading some events and reads again from an earlier
    committed position (the same offsets), with its in-memory state or with the state
    it stored, ends with exactly the changes and triggers of one clean run."""
    crash_after = data.draw(st.integers(1, len(history)), label="crash after")
    resume_at = data.draw(st.integers(0, crash_after - 1), label="resume from")
    restart = data.draw(st.booleans(), label="restart from stored state")
    _assert_a_crash_replay_changes_nothing(history, crash_after, resume_at, restart=restart)


@PROPERTY
@given(history=histories(), data=st.data())
def test_reading_events_out_of_order_within_the_lateness_gives_the_same_changes_and_triggers(
    history: list[Sent], data: st.DataObject
) -> None:
    """Each event is read at its event time plus up to the allowed lateness, so no
    event is read more than the lateness after a later-stamped one; whatever that
    read order, the changes and triggers are those of reading in event-time order."""
    delays = data.draw(
        st.lists(st.integers(0, LATENESS_MS), min_size=len(history), max_size=len(history)),
        label="read delays (ms)",
    )
    _assert_reading_late_changes_nothing(history, delays)


@PROPERTY
@given(history=histories())
def test_every_users_stored_state_stays_under_8_kib_and_reads_back(history: list[Sent]) -> None:
    """After the events and after the clock ran 100 days on, every user's stored
    bytes are under 8 KiB and read back into a state that stores the same bytes."""
    reads = read_in_order(history)
    part = ENGINE.partition()
    _, now = feed(part, reads)
    _assert_stored_states_are_small_and_read_back(part)
    finish(part, now_ms=now, last_ts_ms=max(d.event.ts for d in reads))
    _assert_stored_states_are_small_and_read_back(part)


# -- cases the properties found, kept as plain tests -------------------------------------
# Hypothesis does not always draw these with its fixed seed; each names what goes wrong.


def _pinned(*events: tuple[str, int, str, dict[str, Any]]) -> list[Sent]:
    """A written-out history: (user, ms after T0, stream, fields) per event."""
    producer = Producer()
    return [producer.send(user, Line(T0 + at, stream, body)) for user, at, stream, body in events]


def _add(at_ms: int, user_id: str = "u1", *, action: str = "add_to_cart") -> tuple[Any, ...]:
    return (
        user_id,
        at_ms,
        "browse",
        {"action": action, "sku": "gc-10", "price": 10.0, "cart_id": "c1"},
    )


def _cart_order(at_ms: int, user_id: str = "u1") -> tuple[Any, ...]:
    body = {"order_id": "o1", "status": "created", "amount": 10.0, "cart_id": "c1"}
    return (user_id, at_ms, "orders", body)


def test_a_redelivered_old_event_does_not_stop_a_passed_cart_deadline_from_firing() -> None:
    """In a clean run u2's cart deadline (15:01) has passed when their next add (15:11.5)
    is read, so the cart fires first. Redelivering u1's accounts event after a crash
    (now 1 s past its event time) holds the clock back; the add then re-arms the
    passed deadline and the order at 15:12.5 cancels it. A replay must change nothing."""
    history = _pinned(
        ("u1", 0, "accounts", {"action": "card_added", "card_fingerprint": "fp1"}),
        _add(1_000, "u2"),
        _add(15 * MINUTE + 11_500, "u2"),
        _cart_order(15 * MINUTE + 12_500, "u2"),
    )
    _assert_a_crash_replay_changes_nothing(history, crash_after=2, resume_at=0, restart=False)


@pytest.mark.parametrize(
    ("history", "delays"),
    [
        pytest.param(
            _pinned(_add(0), _add(2_000, action="remove_from_cart")),
            [5_000, 0],
            id="a removal read before its add (3 s late) still empties the cart",
        ),
        pytest.param(
            _pinned(
                _add(0),
                _cart_order(15 * MINUTE + 5_000),
                ("u2", 15 * MINUTE + 11_000, "browse", {"action": "page_view"}),
            ),
            [0, 7_000, 0],
            id="an order 5 s after the cart deadline, read 1 s after another user's "
            "later event, decides whether the cart fires",
        ),
    ],
)
def test_known_late_reads_within_the_lateness_give_the_same_changes_and_triggers(
    history: list[Sent], delays: list[int]
) -> None:
    """Read orders the order-insensitivity property found wanting."""
    _assert_reading_late_changes_nothing(history, delays)


# -- checks -------------------------------------------------------------------------------


def _assert_a_crash_replay_changes_nothing(
    history: list[Sent], crash_after: int, resume_at: int, *, restart: bool
) -> None:
    reads = read_in_order(history)
    part = ENGINE.partition()
    out, now = feed(part, reads[:crash_after])
    if restart:
        part = restarted(part)
    again, now = feed(part, reads[resume_at:], now_ms=now)
    out.extend(again)
    out.extend(finish(part, now_ms=now, last_ts_ms=max(d.event.ts for d in reads)))
    once, _ = run(ENGINE, reads)
    _assert_same(outcome(once), outcome(out))


def _assert_reading_late_changes_nothing(history: list[Sent], delays: list[int]) -> None:
    """Read each event ``delays[i]`` ms after its event time (stable on equal read
    times) and compare with reading in event-time order."""
    read_at = [sent.event.ts + delay for sent, delay in zip(history, delays, strict=True)]
    shuffled = [history[i] for i in sorted(range(len(history)), key=read_at.__getitem__)]
    in_order, _ = run(ENGINE, read_in_order(history))
    out_of_order, _ = run(ENGINE, read_in_order(shuffled))
    _assert_same(outcome(in_order), outcome(out_of_order))


def _assert_same(expected: Outcome, actual: Outcome) -> None:
    assert actual == expected, "\n" + differences(expected, actual)


def _assert_stored_states_are_small_and_read_back(part: Partition) -> None:
    for user_id in list(part.states):
        stored = part.dump(user_id)
        assert len(stored) < STATE_LIMIT_BYTES, (user_id, len(stored))
        state = UserState.from_bytes(stored, part.engine.features)
        assert state.to_bytes(part.engine.features) == stored, user_id


def test_the_histories_make_every_catalogue_rule_apply_its_tag() -> None:
    """The histories are worth their name: across 200 of them (the first ones hypothesis
    draws with its fixed seed), every rule of the catalogue applies its tag."""
    applied: set[str] = set()
    engine_failures: list[str] = []

    @settings(PROPERTY, max_examples=200, phases=[Phase.generate])
    @given(history=histories())
    def collect(history: list[Sent]) -> None:
        try:
            out, _ = run(ENGINE, read_in_order(history))
        except Exception as exc:  # an engine bug: the other properties report it
            engine_failures.append(f"{type(exc).__name__}: {exc}")
            return
        applied.update(c["tag"] for c in out.changes if c["action"] == "applied")

    collect()
    never = {rule.tag for rule in RULES.rules} - applied
    assert not never, (
        f"never applied: {sorted(never)}; the engine failed on {len(engine_failures)} "
        f"histories, which may be why (first: {engine_failures[:1]})"
    )
