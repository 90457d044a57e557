"""Decoding input events: valid ones parse, anything else is an InvalidEvent with a reason."""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamtags.contracts.codec import decode_event, encode
from streamtags.contracts.events import STREAMS, Browse, Login, Order, parse_event_time
from streamtags.contracts.records import iso_ms
from streamtags.errors import InvalidEvent

GOOD: dict[str, dict[str, Any]] = {
    "orders": {
        "event_id": "o-1",
        "user_id": "u1",
        "ts": "2026-11-22T10:00:00+08:00",
        "order_id": "ord-1",
        "cart_id": "c1",
        "status": "paid",
        "amount": 25.5,
        "currency": "CNY",
        "items": [{"sku": "gc-100", "brand": "acme", "quantity": 1, "unit_price": 25.5}],
        "order_kind": "purchase",
        "card_fingerprint": "fp1",
    },
    "browse": {
        "event_id": "b-1",
        "user_id": "u1",
        "ts": 1795341600000,
        "action": "search",
        "query": "steam card",
        "results_count": 0,
    },
    "logins": {
        "event_id": "l-1",
        "user_id": "u1",
        "ts": "2026-11-22T02:00:00Z",
        "outcome": "success",
        "ip": "203.0.113.9",
        "country": "SG",
    },
    "accounts": {
        "event_id": "a-1",
        "user_id": "u1",
        "ts": 1795341600000,
        "action": "registered",
        "personalization": True,
        "timezone": "Asia/Shanghai",
    },
}


def raw(obj: object) -> bytes:
    return orjson.dumps(obj)


@pytest.mark.parametrize("stream", list(STREAMS))
def test_a_valid_event_of_each_stream_decodes(stream: str) -> None:
    event = decode_event(stream, raw(GOOD[stream]))
    assert event.user_id == "u1"
    assert type(event) is STREAMS[stream]


def test_rfc3339_and_epoch_ms_give_the_same_time() -> None:
    assert parse_event_time("2026-11-22T10:00:00Z") == 1795341600000
    assert parse_event_time("2026-11-22T18:00:00+08:00") == 1795341600000
    assert parse_event_time(1795341600000) == 1795341600000
    assert iso_ms(1795341600123) == "2026-11-22T10:00:00.123Z"


def test_unknown_extra_fields_are_ignored_not_fatal() -> None:
    event = decode_event("browse", raw({**GOOD["browse"], "campaign": {"x": 1}}))
    assert isinstance(event, Browse)
    assert not hasattr(event, "campaign")


@pytest.mark.parametrize(
    ("stream", "payload", "kind", "fragment"),
    [
        ("orders", b"{not json", "not_json", "not valid JSON"),
        ("orders", b"[1, 2]", "not_object", "expected a JSON object, got list"),
        ("orders", b'"text"', "not_object", "got str"),
        (
            "orders",
            raw({k: v for k, v in GOOD["orders"].items() if k != "order_id"}),
            "invalid",
            "order_id: Field required",
        ),
        ("orders", raw({**GOOD["orders"], "amount": "lots"}), "invalid", "amount"),
        ("orders", raw({**GOOD["orders"], "amount": -3}), "invalid", "greater than or equal to 0"),
        ("orders", raw({**GOOD["orders"], "status": "teleported"}), "invalid", "status"),
        (
            "orders",
            raw({**GOOD["orders"], "ts": "2026-11-22T10:00:00"}),
            "invalid",
            "no UTC offset",
        ),
        ("orders", raw({**GOOD["orders"], "ts": 12}), "invalid", "outside the years"),
        ("logins", raw({**GOOD["logins"], "ip": "999.0.0.1"}), "invalid", "ip"),
        ("logins", raw({**GOOD["logins"], "country": "Singapore"}), "invalid", "country"),
        (
            "accounts",
            raw({**GOOD["accounts"], "timezone": "Mars/Olympus"}),
            "invalid",
            "not an IANA time zone",
        ),
        ("browse", raw({**GOOD["browse"], "results_count": -1}), "invalid", "results_count"),
    ],
)
def test_bad_input_is_rejected_with_a_readable_reason(
    stream: str, payload: bytes, kind: str, fragment: str
) -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode_event(stream, payload)
    assert caught.value.kind == kind
    assert fragment in caught.value.reason


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(stream=st.sampled_from(list(STREAMS)), junk=st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_invalid_event(stream: str, junk: bytes) -> None:
    with contextlib.suppress(InvalidEvent):
        decode_event(stream, junk)


@settings(max_examples=300, deadline=None)
@given(
    stream=st.sampled_from(list(STREAMS)),
    mutation=st.dictionaries(
        st.sampled_from(
            [
                "event_id",
                "user_id",
                "ts",
                "amount",
                "status",
                "items",
                "ip",
                "action",
                "outcome",
                "timezone",
                "order_id",
                "country",
                "price",
                "personalization",
            ]
        ),
        json_values,
        max_size=5,
    ),
)
def test_mutated_events_either_validate_or_raise_invalid_event(
    stream: str, mutation: dict[str, object]
) -> None:
    try:
        event = decode_event(stream, raw({**GOOD[stream], **mutation}))
    except InvalidEvent as error:
        assert error.reason
    else:
        assert isinstance(event, STREAMS[stream])


def test_output_records_encode_as_compact_json() -> None:
    order = decode_event("orders", raw(GOOD["orders"]))
    assert isinstance(order, Order)
    assert orjson.loads(encode(order))["order_id"] == "ord-1"
    login = decode_event("logins", raw(GOOD["logins"]))
    assert isinstance(login, Login)
