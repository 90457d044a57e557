"""The decoder's fast path accepts only what the models accept, and builds the same event.

:func:`prevalidated` validates with the value types' stand-ins; whatever they
decline is validated by the model. Over generated messages of every stream,
well-formed and spoiled (wrong types, bools and floats for numbers, big
integers, odd strings and Unicode, bad times and offsets, bad IPs, missing and
extra fields), a message the fast path accepts must validate to an identical
event, and :func:`decode_event` must give exactly what plain validation gives:
the same event, or the same rejection with the same reason.
"""

from __future__ import annotations

import ipaddress
import json
import operator
import re
from typing import Any
from unittest.mock import patch

import orjson
import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from pydantic_core import SchemaValidator, core_schema

from streamtags.contracts import codec
from streamtags.contracts.codec import decode_event
from streamtags.contracts.events import STREAMS, Event, Order
from streamtags.contracts.fast_path import prevalidated
from streamtags.contracts.records import iso_ms
from streamtags.contracts.values import NATIVE_ID_PATTERN, PLAIN_ID_PATTERN, parse_event_time
from streamtags.errors import InvalidEvent
from tests.unit.test_codec import GOOD
from tests.unit.test_contract_value_shortcuts import ID_CHARACTERS

TS_MS = 1_795_341_600_123


def spelled(model: BaseModel) -> bytes:
    """Every value with its type: 3 and 3.0, 0.0 and -0.0 are told apart."""
    return orjson.dumps(model.model_dump())


def assert_identical(fast: Event, slow: Event) -> None:
    assert type(fast) is type(slow)
    assert fast == slow
    assert spelled(fast) == spelled(slow)
    assert repr(fast) == repr(slow)
    if not isinstance(fast, Order):  # an order's items are a list, which has no hash
        assert hash(fast) == hash(slow)  # frozen models hash their fields
    # what the engine stores for an event built in memory (engine.state)
    assert fast.model_dump_json(exclude_none=True) == slow.model_dump_json(exclude_none=True)
    assert fast.model_fields_set == slow.model_fields_set
    assert fast.__pydantic_extra__ is None
    assert fast.__pydantic_private__ is None
    assert list(fast.__dict__) == list(slow.__dict__)  # the same fields, in the same order
    if isinstance(fast, Order) and isinstance(slow, Order):
        assert [i.model_fields_set for i in fast.items] == [i.model_fields_set for i in slow.items]


def validated(stream: str, payload: dict[str, Any]) -> Event | None:
    try:
        return STREAMS[stream].model_validate(payload)
    except ValidationError:
        return None


def plainly_decoded(stream: str, raw: bytes) -> Event | InvalidEvent:
    """What decode_event gives with the fast path declining everything: the model's word."""
    with patch.object(codec, "prevalidated", lambda model, payload: None):
        return decoded(stream, raw)


def decoded(stream: str, raw: bytes) -> Event | InvalidEvent:
    try:
        return decode_event(stream, raw)
    except InvalidEvent as error:
        return error


# -- generated messages ---------------------------------------------------------------

#: the characters at the edges of the id rules and of their stand-in, printable ASCII's ends
EDGE_CHARACTERS = st.sampled_from(list(" !^_`z{|}~\x7f\x00\x1f\xa0\xad\u200b"))
ids = st.one_of(
    st.sampled_from(["u1", "user-7", "_u", "__faust", "__faust1", "用户7", "a b", "u{1}", ""]),
    st.builds(operator.add, EDGE_CHARACTERS, st.text(EDGE_CHARACTERS | ID_CHARACTERS, max_size=6)),
    st.text(ID_CHARACTERS, max_size=8),
)
times = st.one_of(
    st.integers(946_684_800_000 - 2, 4_102_444_800_000 + 2),
    st.sampled_from([946_684_800_000, 4_102_444_800_000]).flatmap(
        lambda bound: st.sampled_from([bound - 1, bound, bound + 1])
    ),
    st.sampled_from([TS_MS, float(TS_MS), TS_MS + 0.5, True, 2**63, -1, "1795341600123"]),
    st.builds(
        lambda ms, t, z, offset: iso_ms(ms).replace("T", t)[:-1] + (offset or z),
        st.integers(946_684_800_000, 4_102_444_799_999),
        st.sampled_from("Tt"),
        st.sampled_from("Zz"),
        st.sampled_from([None, "+08:00", "-00:00", "+23:59", "-12:30", "+24:00", "+08"]),
    ),
    st.sampled_from(
        [
            "2026-11-22T10:00:00Z",
            "2026-11-22t10:00:00.123456789z",
            "2026-11-22T10:00:00.1234567890Z",
            "2026-02-29T00:00:00Z",
            "2028-02-29T00:00:00+01:00",
            "2026-11-22T23:59:60Z",
            "2026-11-22 10:00:00Z",
            "2026-11-22T10:00:00",
            "2026-11-22T10:00:00Z\n",
            "١٩٩٩-11-22T10:00:00Z",
            "1999-12-31T23:59:59Z",
            "2100-01-01T00:00:00+01:00",
        ]
    ),
)
#: the bounds of the contract's numbers, and one past each
BOUNDS = [0, 1, 1_000_000, 10**9, 10**12, 946_684_800_000, 4_102_444_800_000, 2**63 - 1]
numbers = st.one_of(
    st.integers(-3, 3),
    st.sampled_from(BOUNDS).flatmap(lambda bound: st.sampled_from([bound - 1, bound, bound + 1])),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 3.0, 2.5, 1e12, 1e12 + 0.5, 1e300, True, False, "3", None]),
)
ips = st.one_of(
    st.builds(
        lambda parts: ".".join(parts),
        st.lists(
            st.integers(0, 300).map(str) | st.sampled_from(["01", "", "a"]), min_size=3, max_size=5
        ),
    ),
    st.ip_addresses().map(str),
    st.ip_addresses(v=6).map(lambda a: str(a).upper()),
    st.sampled_from(["::ffff:1.2.3.4", "fe80::1%eth0", "1.2.3.4 ", " 1.2.3.4", "1.2.3.4\n", ""]),
)
texts = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["", "x" * 256, "x" * 257, "x" * 1024, "x" * 1025, "CNY", "cny", "SG", "S"]),
)
nested = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)

#: for each field, values that are often right and often wrong
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "event_id": ids,
    "user_id": ids,
    "ts": times,
    "ip": ips,
    "amount": numbers,
    "price": numbers,
    "results_count": numbers,
    "personalization": st.sampled_from([True, False, None, 0, 1, "true"]),
    "timezone": st.sampled_from(["Asia/Shanghai", "UTC", "Europe", "Mars/Base", "", None, 8]),
    "currency": st.sampled_from(["CNY", "USD", "cny", "CN", "CNYY", None, 1]) | texts,
    "country": st.sampled_from(["SG", "sg", "S", "SGP", None]) | texts,
    "status": st.sampled_from(["paid", "created", "refunded", "Paid", "", None]),
    "order_kind": st.sampled_from(["purchase", "top_up", "gift", None]),
    "action": st.sampled_from(["search", "click", "registered", "card_added", "x", None]),
    "outcome": st.sampled_from(["success", "failure", "ok", None]),
    "items": st.lists(
        st.fixed_dictionaries(
            {"sku": texts},
            optional={
                "quantity": numbers,
                "unit_price": numbers,
                "brand": texts | st.none(),
                "category": texts | st.none(),
                "extra": nested,
            },
        )
        | nested,
        max_size=3,
    )
    | st.sampled_from([None, [], {}, "items"]),
}
ANY_VALUE = texts | numbers | nested


@st.composite
def payloads(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A stream and a message of it: valid, then changed in a few fields, or not."""
    stream = draw(st.sampled_from(sorted(STREAMS)))
    payload = dict(GOOD[stream])
    payload["ts"] = draw(st.sampled_from([TS_MS, iso_ms(TS_MS), "2026-11-22T18:00:00.123+08:00"]))
    fields = sorted(STREAMS[stream].model_fields)
    extras = ["extra", "stream", "model_config"]
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(fields) | st.sampled_from(extras))
        how = draw(st.sampled_from(["set", "set", "set", "delete", "null"]))
        if how == "delete":
            payload.pop(name, None)
        elif how == "null":
            payload[name] = None
        else:
            payload[name] = draw(FIELD_VALUES.get(name, ANY_VALUE))
    return stream, payload


@settings(max_examples=3000, deadline=None)
@given(message=payloads())
@example(message=("orders", {**GOOD["orders"], "amount": 25}))
@example(message=("orders", {**GOOD["orders"], "items": [{"sku": "x", "quantity": 2.0}]}))
@example(message=("browse", {**GOOD["browse"], "results_count": 3.0, "price": -0.0}))
@example(message=("logins", {**GOOD["logins"], "ip": "::FFFF:1.2.3.4"}))
def test_an_event_the_fast_path_accepts_validates_to_the_identical_event(
    message: tuple[str, dict[str, Any]],
) -> None:
    stream, payload = message
    fast = prevalidated(STREAMS[stream], payload)
    slow = validated(stream, payload)
    # --hypothesis-show-statistics tells how often each case came up
    event("fast" if fast is not None else "model accepts" if slow is not None else "rejected")
    if fast is not None:
        assert slow is not None, payload
        assert_identical(fast, slow)


@settings(max_examples=1500, deadline=None)
@given(message=payloads())
def test_decoding_gives_exactly_what_plain_validation_gives(
    message: tuple[str, dict[str, Any]],
) -> None:
    stream, payload = message
    raw = json.dumps(payload).encode()  # orjson would refuse the integers past 64 bits
    fast, slow = decoded(stream, raw), plainly_decoded(stream, raw)
    if isinstance(slow, InvalidEvent):
        assert isinstance(fast, InvalidEvent), payload
        assert (fast.kind, fast.reason) == (slow.kind, slow.reason)
    else:
        assert not isinstance(fast, InvalidEvent), payload
        assert_identical(fast, slow)


@pytest.mark.parametrize("stream", sorted(STREAMS))
@pytest.mark.parametrize("ts", [TS_MS, iso_ms(TS_MS), "2026-11-22T18:00:00.123+08:00"])
def test_a_well_formed_event_of_every_stream_takes_the_fast_path(stream: str, ts: Any) -> None:
    payload = {**GOOD[stream], "ts": ts}
    fast = prevalidated(STREAMS[stream], payload)
    assert fast is not None
    assert fast.ts == TS_MS
    assert_identical(fast, STREAMS[stream].model_validate(payload))


@pytest.mark.parametrize(
    ("stream", "changes"),
    [
        ("browse", {"results_count": 12.0}),  # a whole float is an integer
        ("browse", {"ts": float(TS_MS)}),
        ("browse", {"user_id": "用户7"}),  # an id outside printable ASCII
        ("browse", {"event_id": "_e1"}),  # an id starting with '_'
        ("logins", {"ip": "2001:DB8::1"}),  # IPv6, held canonical
        ("logins", {"ip": "::ffff:203.0.113.9"}),
    ],
)
def test_what_the_stand_ins_decline_is_still_accepted_by_the_model(
    stream: str, changes: dict[str, Any]
) -> None:
    payload = {**GOOD[stream], **changes}
    assert prevalidated(STREAMS[stream], payload) is None
    assert decode_event(stream, orjson.dumps(payload)) == STREAMS[stream].model_validate(payload)


@pytest.mark.parametrize(
    ("stream", "changes"),
    [
        ("orders", {"amount": True}),
        ("orders", {"amount": "25"}),
        ("orders", {"amount": 10**12 + 1}),
        ("orders", {"items": [{"sku": "x", "quantity": True}]}),
        ("orders", {"items": [{"sku": "x"}] * 1001}),
        ("browse", {"results_count": 10**9 + 1}),
        ("browse", {"results_count": -1}),
        ("browse", {"results_count": 2**63 - 1}),
        ("browse", {"ts": 4_102_444_800_000}),
        ("browse", {"ts": 946_684_799_999}),
        ("browse", {"user_id": "__faust"}),
        ("browse", {"user_id": "u 1"}),
        ("browse", {"user_id": " u1"}),
        ("browse", {"event_id": "\x7fe1"}),
        ("browse", {"user_id": "{u1"}),
        ("browse", {"ts": "2026-11-22T10:00:00"}),
        ("browse", {"ts": True}),
        ("logins", {"ip": "1.2.3.04"}),
        ("logins", {"ip": "1.2.3.256"}),
        ("logins", {"ip": "1.2.3.4\n"}),
        ("logins", {"ip": "fe80::1%eth0"}),
        ("logins", {"country": "sg"}),
        ("accounts", {"personalization": 1}),
        ("accounts", {"timezone": "Europe"}),
    ],
)
def test_what_the_model_rejects_the_fast_path_declines_and_the_reason_is_unchanged(
    stream: str, changes: dict[str, Any]
) -> None:
    payload = {**GOOD[stream], **changes}
    assert prevalidated(STREAMS[stream], payload) is None
    fast, slow = (
        decoded(stream, orjson.dumps(payload)),
        plainly_decoded(stream, orjson.dumps(payload)),
    )
    assert isinstance(fast, InvalidEvent)
    assert isinstance(slow, InvalidEvent)
    assert (fast.kind, fast.reason) == (slow.kind, slow.reason)


def test_extra_fields_stay_out_and_a_given_null_counts_as_set() -> None:
    payload = {**GOOD["browse"], "campaign": {"x": 1}, "stream": "orders", "sku": None}
    fast = prevalidated(STREAMS["browse"], payload)
    assert fast is not None
    assert "campaign" not in fast.model_fields_set
    assert "sku" in fast.model_fields_set
    assert_identical(fast, STREAMS["browse"].model_validate(payload))


_NATIVE_ID = SchemaValidator(core_schema.str_schema(pattern=NATIVE_ID_PATTERN))


@settings(max_examples=2000, deadline=None)
@given(text=st.text(ID_CHARACTERS, max_size=12) | st.sampled_from(["__faust", "_", "a\n", "\n"]))
@example(text="u\n")
@example(text=" u")
@example(text="{u")
def test_an_id_the_native_stand_in_passes_passes_the_python_shortcut(text: str) -> None:
    try:
        _NATIVE_ID.validate_python(text)
    except ValidationError:
        return
    assert re.fullmatch(PLAIN_ID_PATTERN, text), text


@settings(max_examples=1000, deadline=None)
@given(text=ips)
def test_an_ip_the_stand_in_passes_is_already_canonical(text: str) -> None:
    payload = {**GOOD["logins"], "ip": text}
    fast = prevalidated(STREAMS["logins"], payload)
    if fast is not None:
        assert str(ipaddress.ip_address(text)) == text == fast.ip  # type: ignore[union-attr]


@settings(max_examples=2000, deadline=None)
@given(text=times.filter(lambda ts: isinstance(ts, str)) | st.text(max_size=40))
@example(text="2026-11-22T10:00:00Z\n")
@example(text="2026-11-22T10:00:00+08:00:00")  # fromisoformat reads offset seconds
@example(text="2026-11-22T10:00:00+08:00:00.5")
@example(text="2026-11-22T10:00:00.123456789z")
def test_a_time_the_stand_in_passes_reads_as_parse_event_time_reads_it(text: str) -> None:
    fast = prevalidated(STREAMS["browse"], {**GOOD["browse"], "ts": text})
    if fast is not None:
        assert fast.ts == parse_event_time(text), text
