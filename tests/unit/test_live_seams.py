"""The production collaborators and the twins both fit the live tagger's seams."""

from __future__ import annotations

import faust

from streamtags.live.app import ProducerSender
from streamtags.live.seams import Sender, StateStore, TagSink, TriggerLedger
from streamtags.live.table_store import TableStore
from streamtags.live.twins import MemoryStore, MemoryTagSink, MemoryTopic, MemoryTriggerLedger
from streamtags.serving.redis_sink import RedisSink, TriggerGuard

#: Nothing listens here: connections are refused at once.
NOWHERE = "redis://127.0.0.1:1/0"


def production_seams(
    store: TableStore, sink: RedisSink, guard: TriggerGuard, sender: ProducerSender
) -> tuple[StateStore, TagSink, TriggerLedger, Sender]:
    """mypy checks the production classes against the Protocols here."""
    return store, sink, guard, sender


def twin_seams(
    store: MemoryStore, sink: MemoryTagSink, guard: MemoryTriggerLedger, sender: MemoryTopic
) -> tuple[StateStore, TagSink, TriggerLedger, Sender]:
    """mypy checks the twins against the Protocols here."""
    return store, sink, guard, sender


async def test_the_production_classes_and_the_twins_have_every_seam_method() -> None:
    app = faust.App("seams", broker="kafka://127.0.0.1:9")
    sink = RedisSink(redis_url=NOWHERE, prefix="p:", timeout_ms=50)
    guard = TriggerGuard(redis_url=NOWHERE, prefix="t:", timeout_ms=50, ttl_s=60)
    production = production_seams(
        TableStore(object(), partitions=2), sink, guard, ProducerSender(app, "tags")
    )
    twins = twin_seams(MemoryStore(), MemoryTagSink(), MemoryTriggerLedger(), MemoryTopic("tags"))
    for store, tag_sink, ledger, sender in (production, twins):
        assert isinstance(store, StateStore)
        assert isinstance(tag_sink, TagSink)
        assert isinstance(ledger, TriggerLedger)
        assert isinstance(sender, Sender)
    await sink.close()
    await guard.close()


async def test_the_redis_classes_report_an_unreachable_redis_instead_of_raising() -> None:
    """What the tagger relies on from production: a failed flush keeps its queue, and an
    unreachable guard lets every trigger through."""
    sink = RedisSink(redis_url=NOWHERE, prefix="p:", timeout_ms=50)
    guard = TriggerGuard(redis_url=NOWHERE, prefix="t:", timeout_ms=50, ttl_s=60)
    sink.add(
        [
            {
                "user_id": "ann",
                "tag": "whale",
                "action": "applied",
                "ts": "2026-11-20T10:00:00.000Z",
                "expires_at": "2026-12-20T10:00:00.000Z",
                "category": "value",
                "severity": "medium",
                "rule": {"name": "whale", "version": 1},
                "evidence": {"reason": "", "figures": {}, "event_ids": []},
                "change_id": "c1",
            }
        ]
    )
    assert await sink.flush() is False
    assert sink.queued_users == 1
    assert await guard.claim(["t1", "t2"]) == {"t1", "t2"}
    await guard.mark_sent(["t1"])  # logged, not raised
    await sink.close()
    await guard.close()
