"""The decoder accepts exactly the documents the published JSON Schemas accept.

The schemas are read from ``schemas/`` and applied with format assertion on
(``ipv4``/``ipv6``), as a producer validating its output would. The one
check no schema can carry, that a time zone exists in the worker's tz
database, is the only allowed difference, and only in one direction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from streamtags.contracts.codec import decode_event
from streamtags.contracts.events import STREAMS
from streamtags.errors import InvalidEvent
from tests.unit.test_codec import GOOD

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
VALIDATORS = {
    stream: Draft202012Validator(
        orjson.loads((SCHEMAS / f"{stream}.schema.json").read_bytes()),
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )
    for stream in STREAMS
}

#: Rejected by the decoder although the schema cannot say so: a well-shaped zone name
#: that the worker's tz database does not hold.
UNKNOWN_ZONE = "is not an IANA time zone"


def assert_agree(stream: str, document: object) -> None:
    schema_errors = [e.message for e in VALIDATORS[stream].iter_errors(document)]
    try:
        decode_event(stream, orjson.dumps(document))
    except InvalidEvent as error:
        if not schema_errors:
            assert UNKNOWN_ZONE in error.reason, f"schema accepts, decoder: {error.reason}"
    else:
        assert not schema_errors, f"decoder accepts, schema: {schema_errors[:3]}"


EDGE_CASES: list[tuple[str, dict[str, Any]]] = [
    ("orders", {"amount": "2500"}),
    ("orders", {"amount": True}),
    ("orders", {"amount": 0}),
    ("orders", {"amount": 1e12}),
    ("orders", {"amount": 1e12 + 1}),
    ("orders", {"amount": -0.0}),
    ("orders", {"currency": "CNY\n"}),
    ("orders", {"currency": "cny"}),
    ("orders", {"currency": None}),
    ("orders", {"items": [{"sku": "x", "quantity": 3.0}]}),
    ("orders", {"items": [{"sku": "x", "quantity": 0}]}),
    ("orders", {"items": [{"sku": ""}]}),
    ("orders", {"items": [{"sku": "x"}] * 1000}),
    ("orders", {"items": [{"sku": "x"}] * 1001}),
    ("orders", {"items": [{"sku": "x", "extra": {"deep": [1, 2]}}]}),
    ("orders", {"ts": "2026-11-22T10:00:00Z\n"}),
    ("orders", {"ts": "2026-02-29T00:00:00Z"}),
    ("orders", {"ts": "2024-02-29T00:00:00.123456789-12:00"}),
    ("orders", {"ts": "2000-01-01T00:00:00+23:59"}),
    ("orders", {"ts": "2099-12-31T23:59:59-23:59"}),
    ("orders", {"ts": 946_684_800_000}),
    ("orders", {"ts": 946_684_799_999}),
    ("orders", {"ts": 4_102_444_799_999}),
    ("orders", {"ts": 4_102_444_800_000}),
    ("orders", {"ts": 1_795_341_600_000.0}),
    ("orders", {"ts": "٢٠٢٦-11-22T10:00:00Z"}),
    ("orders", {"user_id": "u1\n"}),
    ("orders", {"user_id": "__faust"}),
    ("orders", {"user_id": "_faust"}),
    ("orders", {"user_id": "{u}"}),
    ("orders", {"user_id": "u" * 256}),
    ("orders", {"user_id": "u" * 257}),
    ("orders", {"user_id": "😀" * 256}),
    ("orders", {"event_id": "e\u2028"}),
    ("browse", {"results_count": 1_000_000_000}),
    ("browse", {"results_count": 1_000_000_001}),
    ("browse", {"results_count": 2.0}),
    ("browse", {"results_count": None}),
    ("browse", {"price": None}),
    ("browse", {"action": "teleport"}),
    ("logins", {"ip": "::ffff:1.2.3.4"}),
    ("logins", {"ip": "fe80::1%eth0"}),
    ("logins", {"ip": "1.2.3.04"}),
    ("logins", {"ip": "1.2.3.4\n"}),
    ("logins", {"ip": "0000:0000:0000:0000:0000:ffff:255.255.255.255"}),
    ("logins", {"ip": 16909060}),
    ("logins", {"country": "SGP"}),
    ("accounts", {"timezone": "Europe"}),
    ("accounts", {"timezone": "Mars/Olympus"}),
    ("accounts", {"timezone": "UTC\n"}),
    ("accounts", {"timezone": "/etc/passwd"}),
    ("accounts", {"personalization": 1}),
    ("accounts", {"action": "card_removed", "card_fingerprint": ""}),
]


@pytest.mark.parametrize(("stream", "changes"), EDGE_CASES)
def test_hand_written_edge_cases_are_judged_alike(stream: str, changes: dict[str, Any]) -> None:
    assert_agree(stream, {**GOOD[stream], **changes})


@pytest.mark.parametrize("stream", list(STREAMS))
def test_a_missing_required_field_is_judged_alike(stream: str) -> None:
    for name in GOOD[stream]:
        assert_agree(stream, {k: v for k, v in GOOD[stream].items() if k != name})


text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
#: Values near every field's edges, for every field of every stream.
interesting: st.SearchStrategy[Any] = st.sampled_from(
    [
        "",
        "x",
        "x" * 256,
        "x" * 257,
        "x" * 1025,
        "paid",
        "search",
        "card_added",
        "success",
        "SG",
        "CNY",
        "Asia/Shanghai",
        "Europe",
        "2001:DB8::1",
        "::ffff:10.0.0.1",
        "10.0.0.1",
        "2026-11-22T10:00:00Z",
        "2026-11-22T10:00:00",
        "__faust1",
        "u{1}",
        0,
        1,
        -1,
        3.0,
        2.5,
        1_000_000,
        1_000_001,
        1_000_000_000,
        1e12,
        1_795_341_600_000,
        True,
        None,
        [],
        {},
        [{"sku": "x", "quantity": 2}],
        [{"sku": "x", "quantity": 2.5}],
        [{"sku": "x", "unit_price": "1"}],
    ]
)


@settings(
    max_examples=600,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    stream=st.sampled_from(list(STREAMS)),
    changes=st.dictionaries(
        st.sampled_from(sorted({name for doc in GOOD.values() for name in doc} | {"x"})),
        interesting | json_values,
        max_size=4,
    ),
    dropped=st.sets(st.sampled_from(["event_id", "user_id", "ts", "status", "ip", "action"])),
)
def test_generated_documents_are_judged_alike(
    stream: str, changes: dict[str, Any], dropped: set[str]
) -> None:
    document = {k: v for k, v in {**GOOD[stream], **changes}.items() if k not in dropped}
    assert_agree(stream, document)
