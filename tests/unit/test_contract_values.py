"""The input contract's values: strict, bounded, and one spelling for one thing."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from streamtags.contracts.codec import decode_event
from streamtags.contracts.events import Account, Browse, Login, Order, parse_event_time
from streamtags.contracts.values import RESERVED_USER_ID_PREFIXES
from streamtags.errors import InvalidEvent
from tests.unit.test_codec import GOOD


def decode(stream: str, **changes: Any) -> Any:
    return decode_event(stream, orjson.dumps({**GOOD[stream], **changes}))


def rejection(stream: str, **changes: Any) -> str:
    with pytest.raises(InvalidEvent) as caught:
        decode(stream, **changes)
    assert caught.value.kind == "invalid"
    return caught.value.reason


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("2001:db8::1", "2001:db8::1"),
        ("2001:DB8::1", "2001:db8::1"),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("::FFFF:cb00:7109", "203.0.113.9"),
        ("203.0.113.9", "203.0.113.9"),
    ],
)
def test_every_spelling_of_an_ip_decodes_to_one_canonical_form(
    spelling: str, canonical: str
) -> None:
    login = decode("logins", ip=spelling)
    assert isinstance(login, Login)
    assert login.ip == canonical


def test_three_spellings_of_one_ipv6_address_are_one_ip() -> None:
    spellings = ["2001:db8::1", "2001:DB8::1", "2001:0db8:0:0:0:0:0:1"]
    assert len({decode("logins", ip=s).ip for s in spellings}) == 1


@pytest.mark.parametrize("ip", ["fe80::1%eth0", "fe80::1%" + "x" * 900_000, "fe80::1%1"])
def test_an_ip_with_a_zone_id_is_rejected_with_a_short_clear_reason(ip: str) -> None:
    reason = rejection("logins", ip=ip)
    assert "zone id" in reason
    assert len(reason) < 400


@pytest.mark.parametrize("zone", ["Europe", "Europe/", "America", "Z" * 300, "A/" * 30 + "B"])
def test_a_time_zone_that_is_a_directory_or_too_long_is_invalid_not_a_crash(zone: str) -> None:
    rejection("accounts", timezone=zone)


@pytest.mark.parametrize("zone", ["/etc/passwd", "../../etc/passwd", "Europe/../Asia/Tokyo"])
def test_a_time_zone_shaped_like_a_path_is_rejected_before_any_file_is_read(zone: str) -> None:
    assert "time zone name holds only" in rejection("accounts", timezone=zone)


def test_a_real_time_zone_is_accepted() -> None:
    account = decode("accounts", timezone="America/Argentina/Buenos_Aires")
    assert isinstance(account, Account)
    assert account.timezone == "America/Argentina/Buenos_Aires"


@pytest.mark.parametrize(
    ("stream", "field", "value"),
    [
        ("orders", "amount", "2500"),
        ("orders", "amount", True),
        ("browse", "price", "3.5"),
        ("browse", "results_count", "0"),
        ("browse", "results_count", False),
        ("browse", "results_count", 1.5),
        ("accounts", "personalization", "true"),
        ("accounts", "personalization", 1),
        ("orders", "ts", True),
        ("orders", "ts", 1795341600000.5),
    ],
)
def test_a_number_or_bool_written_as_another_json_type_is_rejected(
    stream: str, field: str, value: object
) -> None:
    assert field in rejection(stream, **{field: value})


def test_a_whole_float_is_the_integer_it_spells_as_json_schema_says() -> None:
    browse = decode("browse", results_count=3.0, ts=1795341600000.0)
    assert isinstance(browse, Browse)
    assert (browse.results_count, browse.ts) == (3, 1795341600000)
    assert type(browse.results_count) is int


@pytest.mark.parametrize(
    ("stream", "changes", "field"),
    [
        ("browse", {"results_count": 1_000_000_001}, "results_count"),
        ("orders", {"items": [{"sku": "x", "quantity": 1_000_001}]}, "quantity"),
        ("orders", {"items": [{"sku": "x"}] * 1001}, "items"),
        ("orders", {"amount": 1e12 + 1}, "amount"),
        ("orders", {"order_id": "o" * 257}, "order_id"),
        ("orders", {"card_fingerprint": "f" * 257}, "card_fingerprint"),
        ("browse", {"query": "q" * 1025}, "query"),
        ("logins", {"user_agent": "a" * 1025}, "user_agent"),
        ("orders", {"user_id": "u" * 257}, "user_id"),
        ("orders", {"event_id": "e" * 257}, "event_id"),
    ],
)
def test_every_count_list_and_string_has_an_upper_bound(
    stream: str, changes: dict[str, Any], field: str
) -> None:
    assert field in rejection(stream, **changes)


@pytest.mark.parametrize(
    "user_id",
    [
        "u1\n",
        "u\x001",
        "\x00clock:3",
        "__faust",
        "__faust_offset",
        "u{1}",
        "{hot}",
        " u1",
        "u 1",
        "u\u200b1",
        "u\u202e1",
        "\ufeffu1",
        "",
    ],
)
def test_a_user_id_with_control_invisible_brace_or_reserved_text_is_rejected(
    user_id: str,
) -> None:
    assert "user_id" in rejection("orders", user_id=user_id)


def test_no_user_id_can_start_with_a_reserved_internal_prefix() -> None:
    for prefix in RESERVED_USER_ID_PREFIXES:
        for rest in ("", "1", "clock:0", "_offset"):
            rejection("orders", user_id=prefix + rest)


@pytest.mark.parametrize("user_id", ["u1", "user-42@example.com", "ünïcødé", "用户7", "a:b/c"])
def test_printable_user_ids_are_accepted_verbatim(user_id: str) -> None:
    assert decode("orders", user_id=user_id).user_id == user_id


@pytest.mark.parametrize("event_id", ["e\n", "e\x7f", "e 1", ""])
def test_an_event_id_with_control_or_space_characters_is_rejected(event_id: str) -> None:
    assert "event_id" in rejection("orders", event_id=event_id)


def test_text_is_kept_verbatim_not_trimmed() -> None:
    order = decode("orders", coupon_code=" SAVE10 ")
    assert isinstance(order, Order)
    assert order.coupon_code == " SAVE10 "


@pytest.mark.parametrize(
    ("text", "epoch_ms"),
    [
        ("2026-11-22T10:00:00Z", 1795341600000),
        ("2026-11-22t10:00:00z", 1795341600000),
        ("2026-11-22T18:00:00+08:00", 1795341600000),
        ("2026-11-22T05:30:00-04:30", 1795341600000),
        ("2026-11-22T10:00:00.1239Z", 1795341600123),
        ("2026-11-22T10:00:00.5Z", 1795341600500),
        ("2028-02-29T00:00:00Z", 1835395200000),
        ("2000-01-01T00:30:00+01:00", 946684800000 - 1_800_000),
    ],
)
def test_rfc3339_times_parse_exactly_to_epoch_ms(text: str, epoch_ms: int) -> None:
    assert parse_event_time(text) == epoch_ms


@pytest.mark.parametrize(
    "text",
    [
        "2026-02-29T00:00:00Z",
        "2026-04-31T00:00:00Z",
        "2026-11-22T24:00:00Z",
        "2026-11-22T23:59:60Z",
        "2026-11-22 10:00:00Z",
        "20261122T100000Z",
        "2026-W47-7T10:00:00Z",
        "2026-11-22T10:00:00+08",
        "2026-11-22T10:00:00Z\n",
        "٢٠٢٦-11-22T10:00:00Z",
        "2026-11-22T10:00:00.1234567890Z",
        "2100-01-01T00:00:00Z",
        "1999-12-31T23:59:59Z",
    ],
)
def test_anything_but_an_rfc3339_time_in_2000_to_2099_is_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_event_time(text)
