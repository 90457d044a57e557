"""A real worker on real Kafka dead-letters exactly the bad events and keeps going."""

from __future__ import annotations

import base64
from collections.abc import Callable

import orjson

from streamtags.live.topics import ensure_topics
from tests.integration.conftest import KAFKA, Names, Worker, consume, produce, wait_for

BASE_TS = 1_795_341_600_000


def good_browse(i: int) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"b{i}",
            "user_id": f"user{i % 13}",
            "ts": BASE_TS + i,
            "action": "page_view",
            "page": "/home",
        }
    )


BAD: list[tuple[bytes, str, str]] = [
    (b"{this is not json", "not_json", "not valid JSON"),
    (b"[1, 2, 3]", "not_object", "expected a JSON object"),
    (
        orjson.dumps({"event_id": "x", "user_id": "u", "ts": BASE_TS}),
        "invalid",
        "action: Field required",
    ),
    (
        orjson.dumps({"event_id": "x", "user_id": "u", "ts": "yesterday", "action": "click"}),
        "invalid",
        "not an RFC 3339 time",
    ),
    (
        orjson.dumps({"event_id": "x", "user_id": "u", "ts": BASE_TS, "action": "teleport"}),
        "invalid",
        "action",
    ),
]


async def test_one_bad_event_in_ten_goes_to_dead_letter_and_the_rest_are_consumed(
    names: Names, worker_factory: Callable[..., Worker]
) -> None:
    await ensure_topics(
        [names.topic(s) for s in ("orders", "browse", "logins", "accounts", "dead-letter")],
        bootstrap=KAFKA,
        partitions=4,
    )
    worker = worker_factory()
    worker.start()

    messages: list[tuple[bytes | None, bytes]] = []
    expected_bad: dict[bytes, tuple[str, str]] = {}
    for i in range(200):
        if i % 10 == 9:
            value, kind, fragment = BAD[(i // 10) % len(BAD)]
            value = value.replace(b"{", b"{ ", 1) if i >= 100 else value  # distinct bytes
            expected_bad[value] = (kind, fragment)
            messages.append((f"user{i % 13}".encode(), value))
        else:
            messages.append((f"user{i % 13}".encode(), good_browse(i)))
    await produce(names.topic("browse"), messages)

    letters = await consume(names.topic("dead-letter"), count=20, timeout_s=45)
    assert len(letters) == 20
    seen_values = set()
    for letter in letters:
        value = base64.b64decode(str(letter["value_b64"]))
        seen_values.add(value)
        kind, fragment = expected_bad[value]
        assert letter["error_kind"] == kind
        assert fragment in str(letter["reason"])
        assert letter["topic"] == names.topic("browse")
        assert isinstance(letter["offset"], int)
    assert seen_values == set(expected_bad)

    topic = names.topic("browse")
    await wait_for(
        lambda: worker.metric("streamtags_events_consumed_total", topic=topic) >= 180,
        timeout_s=30,
        what="180 valid events consumed",
    )
    assert worker.metric("streamtags_events_consumed_total", topic=topic) == 180
    assert worker.metric("streamtags_events_rejected_total", topic=topic) == 20
    assert worker.alive(), worker.log()[-2000:]

    # valid events behind the bad ones are still processed
    # keyed by its user_id, as ingest requires (a wrong key is dead-lettered as wrong_key)
    await produce(topic, [(f"user{1000 % 13}".encode(), good_browse(1000)), (b"late", b"junk")])
    await wait_for(
        lambda: worker.metric("streamtags_events_consumed_total", topic=topic) == 181,
        timeout_s=30,
        what="the event behind more junk",
    )
    assert worker.alive()
