"""Ingest enforces delivery rules: keys are user ids, clocks are not ahead, dead letters fit."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson
import pytest

from streamtags.contracts.codec import KEPT_KEY_BYTES, dead_letter, encode
from streamtags.contracts.ingest import IngestBatch, RawMessage, decode_batch
from streamtags.contracts.records import DeadLetter
from streamtags.errors import InvalidEvent
from streamtags.settings import Settings
from tests.unit.test_codec import GOOD

NOW_MS = 1_795_341_600_000  # 2026-11-22T10:00:00Z, the worker's wall clock
TOPICS = {"browse": "browse", "orders": "orders"}


def message(key: bytes | None, offset: int = 0, **changes: Any) -> RawMessage:
    value = orjson.dumps({**GOOD["browse"], "ts": NOW_MS, **changes})
    return RawMessage("browse", 0, offset, key, value)


def kinds(batch: IngestBatch) -> list[str]:
    return [letter.error_kind for _, letter in batch.rejected]


def test_a_message_keyed_by_its_user_id_is_accepted() -> None:
    batch = decode_batch([message(b"u1")], stream_of_topic=TOPICS, now_ms=NOW_MS)
    assert [d.event.user_id for d in batch.events] == ["u1"]
    assert batch.rejected == []


@pytest.mark.parametrize("key", [b"u2", b"U1", b"u1 ", None, b"\xff"])
def test_a_message_whose_key_is_not_its_user_id_is_dead_lettered_as_wrong_key(
    key: bytes | None,
) -> None:
    batch = decode_batch([message(key)], stream_of_topic=TOPICS, now_ms=NOW_MS)
    assert batch.events == []
    assert kinds(batch) == ["wrong_key"]
    assert "u1" in batch.rejected[0][1].reason


def test_a_non_ascii_user_id_is_keyed_by_its_utf8_bytes() -> None:
    raw = message("用户7".encode(), user_id="用户7")
    batch = decode_batch([raw], stream_of_topic=TOPICS, now_ms=NOW_MS)
    assert [d.event.user_id for d in batch.events] == ["用户7"]


def test_key_checks_can_be_turned_off_for_unkeyed_recordings() -> None:
    batch = decode_batch([message(None)], stream_of_topic=TOPICS, now_ms=NOW_MS, check_keys=False)
    assert len(batch.events) == 1


def test_an_invalid_value_is_reported_as_invalid_not_as_a_wrong_key() -> None:
    batch = decode_batch([message(b"other", ts="soon")], stream_of_topic=TOPICS, now_ms=NOW_MS)
    assert kinds(batch) == ["invalid"]


def test_an_event_stamped_beyond_the_allowed_skew_is_dead_lettered_as_future() -> None:
    messages = [
        message(b"u1", offset=0, ts=NOW_MS + 300_000),
        message(b"u1", offset=1, ts=NOW_MS + 300_001),
        message(b"u1", offset=2, ts="2099-01-01T00:00:00Z"),
    ]
    batch = decode_batch(messages, stream_of_topic=TOPICS, now_ms=NOW_MS)
    assert [d.offset for d in batch.events] == [0]
    assert kinds(batch) == ["future_timestamp", "future_timestamp"]
    assert "300001 ms ahead" in batch.rejected[0][1].reason


def test_the_skew_limit_is_a_parameter_and_none_turns_it_off() -> None:
    ahead = [message(b"u1", ts=NOW_MS + 60_000)]
    strict = decode_batch(ahead, stream_of_topic=TOPICS, now_ms=NOW_MS, max_future_skew_ms=0)
    assert kinds(strict) == ["future_timestamp"]
    off = decode_batch(ahead, stream_of_topic=TOPICS, now_ms=NOW_MS, max_future_skew_ms=None)
    assert len(off.events) == 1


def test_the_skew_setting_defaults_to_five_minutes_and_reads_its_variable() -> None:
    assert Settings().max_future_skew_ms == 300_000
    env = {"STREAMTAGS_MAX_FUTURE_SKEW_MS": "1000"}
    assert Settings.from_env(env).max_future_skew_ms == 1000


def reject(value: bytes, key: bytes | None = b"u1", *, limit: int) -> DeadLetter:
    return dead_letter(
        topic="browse",
        partition=3,
        offset=7,
        key=key,
        value=value,
        error=InvalidEvent("bad", "invalid"),
        now_ms=NOW_MS,
        max_record_bytes=limit,
    )


def test_a_small_dead_letter_carries_the_whole_message_and_its_fingerprint() -> None:
    value = b'{"not": "an event"}'
    letter = reject(value, limit=1_000_000)
    assert base64.b64decode(letter.value_b64) == value
    assert not letter.value_truncated
    assert letter.value_bytes == len(value)
    assert letter.value_sha256 == hashlib.sha256(value).hexdigest()


@pytest.mark.parametrize("size", [800_000, 1_000_000, 5_000_000])
def test_an_oversized_dead_letter_is_cut_to_the_record_limit_and_still_identifies_the_value(
    size: int,
) -> None:
    value = bytes(range(256)) * (size // 256)
    letter = reject(value, limit=1_000_000)
    assert len(encode(letter)) <= 1_000_000
    kept = base64.b64decode(letter.value_b64)
    assert letter.value_truncated
    assert value.startswith(kept)
    assert len(kept) > 1_000_000 * 0.7  # cut to fit, not emptied
    assert letter.value_bytes == len(value)
    assert letter.value_sha256 == hashlib.sha256(value).hexdigest()
    assert orjson.loads(encode(letter))["value_truncated"] is True


def test_an_oversized_key_is_cut_too_and_marked() -> None:
    key = b"k" * 900_000
    letter = reject(b"v" * 900_000, key, limit=1_000_000)
    assert len(encode(letter)) <= 1_000_000
    assert letter.key_truncated
    assert letter.key_b64 is not None
    assert base64.b64decode(letter.key_b64) == key[:KEPT_KEY_BYTES]


def test_decode_batch_passes_its_record_limit_to_the_dead_letters() -> None:
    raw = RawMessage("browse", 0, 0, b"u1", b"x" * 50_000)
    batch = decode_batch([raw], stream_of_topic=TOPICS, now_ms=NOW_MS, max_record_bytes=10_000)
    letter = batch.rejected[0][1]
    assert letter.error_kind == "not_json"
    assert letter.value_truncated
    assert len(encode(letter)) <= 10_000


def test_a_huge_reason_is_cut_so_it_cannot_push_the_record_over() -> None:
    letter = dead_letter(
        topic="browse",
        partition=0,
        offset=0,
        key=None,
        value=b"{}",
        error=InvalidEvent("x" * 100_000, "engine_error"),
        now_ms=NOW_MS,
    )
    assert len(letter.reason) < 2100
