"""The intake on twins: bad bytes and engine failures become dead letters, never a crash,
and a batch's acks wait for its dead letters and state."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from streamtags.contracts.ingest import RawMessage
from streamtags.live.intake import Intake
from tests.unit.test_live_tagger import STREAMS, T0, World, spin

STREAM_OF_TOPIC = {"in.orders": "orders", "in.browse": "browse", "in.logins": "logins"}


def order(offset: int, user: str, **fields: Any) -> RawMessage:
    body = {"event_id": f"o-{offset}", "user_id": user, "ts": T0, "order_id": f"o{offset}"}
    body.update(status="paid", amount=2500, **fields)
    return RawMessage("in.orders", 0, offset, user.encode(), orjson.dumps(body))


def intake(world: World) -> Intake:
    return Intake(world.tagger, stream_of_topic=STREAM_OF_TOPIC, metrics=world.metrics)


async def test_invalid_messages_are_dead_lettered_and_the_rest_are_tagged() -> None:
    world = World()
    await world.assign([0])
    garbage = RawMessage("in.browse", 0, 7, b"bob", b"{not json")
    await intake(world).handle([order(1, "ann"), garbage], acks={0: world.ack("batch")})
    await world.release()
    await world.tagger.flush()
    [letter] = world.dead.values()
    assert (letter["topic"], letter["offset"]) == ("in.browse", 7)
    assert [change["tag"] for change in world.tags.values()] == ["whale"]
    assert world.acked == ["batch"]
    assert (
        world.metrics.registry.get_sample_value(
            "streamtags_events_consumed_total", {"topic": "in.orders"}
        )
        == 1
    )


async def test_an_event_the_engine_fails_on_is_dead_lettered_as_engine_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World()
    await world.assign([0])
    feature = next(f for f in world.tagger.engine.features.values() if f.streams == ("orders",))

    def explode(data: Any, event: Any, tz: str | None) -> Any:
        raise ZeroDivisionError("a rule bug")

    monkeypatch.setattr(feature, "update", explode)  # features are shared by every engine
    await intake(world).handle([order(1, "ann")], acks={0: world.ack("batch")})
    await world.release()  # the event is applied, and fails, once the watermark passes it
    await world.tagger.flush()
    [letter] = world.dead.values()
    assert letter["error_kind"] == "engine_error" and "a rule bug" in letter["reason"]
    assert (letter["topic"], letter["offset"]) == ("in.orders", 1)
    assert world.acked == ["batch"]


async def test_a_batch_is_not_acked_before_its_dead_letters_land() -> None:
    world = World()
    await world.assign([0])
    world.dead.fault.down()
    garbage = RawMessage("in.browse", 0, 7, b"bob", b"{not json")
    await intake(world).handle([garbage], acks={0: world.ack("batch")})
    await world.tagger.flush()
    await spin()
    assert world.acked == [] and world.dead.records == []
    world.dead.fault.up()
    await world.tagger.flush()
    assert world.acked == ["batch"] and len(world.dead.records) == 1


def page_view(offset: int, user: str, at_ms: int) -> RawMessage:
    body = {"event_id": f"b-{offset}", "user_id": user, "ts": T0 + at_ms}
    body.update(action="page_view", page="/home")
    return RawMessage("in.browse", 0, offset, user.encode(), orjson.dumps(body))


def login(offset: int, user: str, at_ms: int) -> RawMessage:
    body = {"event_id": f"l-{offset}", "user_id": user, "ts": T0 + at_ms, "outcome": "success"}
    body.update(ip="203.0.113.7", country="SG")
    return RawMessage("in.logins", 0, offset, user.encode(), orjson.dumps(body))


async def test_a_tick_waiting_for_the_gate_does_not_see_a_batch_read_before_it_is_admitted() -> (
    None
):
    """The last fetch of a backlog comes while a tick waits for the batch gate (behind a
    flush's snapshot, say), and the tick runs first. Had the batch been noted as read
    already, its browse stream would count as read to its end (caught up: the wall
    clock's time): the tick would apply ann's login, 10 s after her browse event still
    in the batch, and that event would be dead-lettered too_late once the batch ran."""
    ends = {"browse": 3, "logins": 1}  # the backlog at assignment: browse 0-2, logins 0
    world = World(options={"partition_end": lambda number, stream: ends.get(stream, 0)})
    await world.tagger.assign([0])
    world.tagger.expect_backlog({(0, s): (0, ends.get(s, 0)) for s in STREAMS})
    tagger_intake = intake(world)
    first = [page_view(0, "ann", -60_000), login(0, "ann", -40_000)]
    await tagger_intake.handle(first, acks={0: world.ack("batch-1")})
    async with world.tagger.batch():  # held, as by a flush taking its snapshot
        tick = asyncio.create_task(world.tagger.tick())
        await spin()  # the tick waits for the gate first
        last = [page_view(1, "ann", -50_000), page_view(2, "bob", -49_000)]
        handled = asyncio.create_task(tagger_intake.handle(last, acks={0: world.ack("batch-2")}))
        await spin()  # then the batch
    await asyncio.wait_for(asyncio.gather(tick, handled), timeout=5)
    await world.release()
    await world.tagger.flush()
    assert world.dead.values() == []
    assert tagger_intake.consumed == {"browse": 3, "logins": 1}
    assert world.acked == ["batch-1", "batch-2"]
