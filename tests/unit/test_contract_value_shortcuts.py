"""The decoder's cheap shortcuts give exactly what the slow, published checks give.

Ids are first tried against :data:`PLAIN_ID_PATTERN`, IPv4 addresses against
a canonical dotted-quad pattern, and RFC 3339 times are read with
``datetime.fromisoformat``; each is checked here against the check it stands
in for (the published id patterns, :mod:`ipaddress`, calendar arithmetic),
over generated values that include the near misses.
"""

from __future__ import annotations

import calendar
import ipaddress
import re
from datetime import UTC, datetime

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from streamtags.contracts.codec import decode_event
from streamtags.contracts.events import Login
from streamtags.contracts.values import (
    EVENT_ID_PATTERN,
    PLAIN_ID_PATTERN,
    USER_ID_PATTERN,
    parse_event_time,
)
from streamtags.errors import InvalidEvent
from tests.unit.test_codec import GOOD

#: printable ASCII and the characters next to the id rules' edges, plus any character
ID_CHARACTERS = (
    st.sampled_from(
        [chr(c) for c in range(0x20, 0x7F)] + ["\x00", "\x1f", "\x7f", "\xa0", "\xad", "\u200b"]
    )
    | st.characters()
)


@settings(max_examples=2000, deadline=None)
@given(text=st.text(ID_CHARACTERS, max_size=12) | st.sampled_from(["__faust", "__faust1", "_fau"]))
@example(text="u{1}")
@example(text="a b")
def test_an_id_the_shortcut_passes_matches_both_published_id_patterns(text: str) -> None:
    if re.fullmatch(PLAIN_ID_PATTERN, text):
        assert re.match(USER_ID_PATTERN, text), text
        assert re.match(EVENT_ID_PATTERN, text), text


OCTETS = st.integers(0, 300).map(str) | st.sampled_from(["00", "01", "007", "-1", "", "1e2"])


@settings(max_examples=1000, deadline=None)
@given(
    octets=st.lists(OCTETS, min_size=3, max_size=5),
    tail=st.sampled_from(["", "", "\n", " ", "%eth0"]),
)
@example(octets=["1", "2", "3", "04"], tail="")
def test_a_login_ip_is_accepted_and_spelled_exactly_as_ipaddress_says(
    octets: list[str], tail: str
) -> None:
    text = ".".join(octets) + tail
    try:
        expected: str | None = str(ipaddress.ip_address(text)) if "%" not in text else None
    except ValueError:
        expected = None
    try:
        event = decode_event("logins", orjson.dumps({**GOOD["logins"], "ip": text}))
    except InvalidEvent:
        assert expected is None, text
    else:
        assert isinstance(event, Login)
        assert event.ip == expected, text


def _calendar_ms(moment: datetime, fraction: str, offset_minutes: int) -> int:
    seconds = calendar.timegm((*moment.timetuple()[:6], 0, 0, 0))
    return (seconds - offset_minutes * 60) * 1000 + int(fraction[:3].ljust(3, "0") or "0")


@settings(max_examples=2000, deadline=None)
@given(
    moment=st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31, 23, 59, 59)),
    fraction=st.text("0123456789", max_size=9),
    offset_minutes=st.integers(-(23 * 60 + 59), 23 * 60 + 59),
    separator=st.sampled_from("Tt"),
    utc=st.sampled_from(["", "Z", "z"]),
)
def test_an_rfc3339_time_reads_as_calendar_arithmetic_says(
    moment: datetime, fraction: str, offset_minutes: int, separator: str, utc: str
) -> None:
    sign = "+" if offset_minutes >= 0 else "-"
    hours, minutes = divmod(abs(offset_minutes), 60)
    offset = utc or f"{sign}{hours:02}:{minutes:02}"
    text = moment.strftime(f"%Y-%m-%d{separator}%H:%M:%S") + (f".{fraction}" if fraction else "")
    expected = _calendar_ms(moment, fraction, 0 if utc else offset_minutes)
    assert parse_event_time(text + offset) == expected, text + offset


def test_the_calendar_reference_agrees_with_the_clock() -> None:
    moment = datetime(2026, 11, 22, 10, 0, 0)
    assert _calendar_ms(moment, "", 0) == moment.replace(tzinfo=UTC).timestamp() * 1000
