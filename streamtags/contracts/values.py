"""The value types of the input contract: what one field may hold, checked and published alike.

Each type validates strictly (a JSON string is never a number, a bool is
never a number, a number is never text), bounds its size, normalises where
two spellings mean one thing (IP addresses, event times) and describes
itself in the JSON Schema with exactly the rules the decoder applies, so a
producer validating against ``schemas/`` and the worker agree on every
document. Two checks need data a schema cannot carry and are documented on
their fields: an IP address is checked as JSON Schema ``format`` ``ipv4`` /
``ipv6`` (validate with format assertion on), and a time zone must exist in
the worker's tz database.

Patterns are written to mean the same in Python's ``re`` (the decoder, and
the ``jsonschema`` package) and in ECMA-262 (most other validators): they
are anchored with ``^`` and never end in ``$``, because Python's ``$`` also
matches before a final newline; ``[0-9]`` is written, never ``\\d``, which
Python extends to every Unicode digit. The decoder runs the published
pattern itself, so the two cannot drift apart (an id first meets a cheaper
pattern whose match implies the published one's; a test holds them to that).

Where a type's check calls Python, it also names a cheaper *stand-in*
(:data:`STAND_IN`): a check pydantic-core runs natively that accepts only
values the full check accepts, with the same result. The decoder tries the
stand-ins first (:mod:`~streamtags.contracts.fast_path`) and runs the full
checks whenever they decline, so the stand-ins change speed, never verdicts.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

__all__ = [
    "EARLIEST_TS_MS",
    "EVENT_ID_PATTERN",
    "EVENT_TIME_PATTERN",
    "LATEST_TS_MS",
    "NATIVE_ID_PATTERN",
    "PLAIN_ID_PATTERN",
    "RESERVED_USER_ID_PREFIXES",
    "STAND_IN",
    "USER_ID_PATTERN",
    "EventId",
    "EventTime",
    "Integer",
    "IpAddress",
    "Money",
    "Name",
    "ShortText",
    "StandIn",
    "Text",
    "TimeZoneName",
    "UserId",
    "parse_event_time",
    "shown",
]

#: Integer event times before 2000-01-01 or from 2100-01-01 on (epoch ms, UTC) are impossible.
EARLIEST_TS_MS = 946_684_800_000
LATEST_TS_MS = 4_102_444_800_000

#: User-id prefixes the worker keeps for itself in the per-user state table: ``\x00``
#: (partition clocks, ``\x00clock:N``) and ``__faust`` (Faust's offset marker).
RESERVED_USER_ID_PREFIXES = ("\x00", "__faust")

# Characters no identifier may hold: C0 controls and space, DEL, C1 controls and
# no-break space, soft hyphen, the other Unicode spaces, zero-width and bidi
# controls, line and paragraph separators, the BOM and the specials block.
# An id with any of them looks like another id, splits log lines or hides text.
_NOT_IN_IDS = (
    r"\x00-\x20\x7f-\xa0\xad\u1680\u180e\u2000-\u200f\u2028-\u202f\u205f-\u206f"
    r"\u3000\ufeff\ufff0-\uffff"
)

#: An event id: no whitespace, control or invisible formatting characters.
EVENT_ID_PATTERN = rf"^(?![\s\S]*[{_NOT_IN_IDS}])"

#: A user id: as an event id, and also no ``{`` or ``}`` (in the Redis key
#: ``streamtags:user:{user_id}`` they would form a Redis Cluster hash tag and pin
#: many users to one slot) and no reserved prefix. ``\x00`` is already a control.
USER_ID_PATTERN = rf"^(?!__faust|[\s\S]*[{_NOT_IN_IDS}{{}}])"

# Calendar-exact dates of the years 2000-2099 (leap years: every fourth, 2000 included).
_DATE = (
    r"20[0-9][0-9]-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    r"|20(?:[02468][048]|[13579][26])-02-29"
)
#: RFC 3339 date-time with offset, years 2000-2099; fractions of up to 9 digits; no
#: leap second. ``T`` and ``Z`` may be lower case, as RFC 3339 allows.
EVENT_TIME_PATTERN = (
    rf"^(?:{_DATE})[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{{1,9}})?"
    r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])(?![\s\S])"
)
_EVENT_TIME = re.compile(EVENT_TIME_PATTERN)
#: The same pattern for pydantic-core's engine, which has no look-around but whose ``$``
#: matches only at the very end (Python's also before a final newline).
_NATIVE_EVENT_TIME_PATTERN = EVENT_TIME_PATTERN.removesuffix(r"(?![\s\S])") + "$"

#: The shape of an IANA zone name; whether it exists is checked against tz data.
_TIME_ZONE_PATTERN = r"^[A-Za-z](?![\s\S]*[^A-Za-z0-9_+/-])"


def shown(value: object, *, limit: int = 60) -> str:
    """``value`` for an error message: a scalar's repr cut to about ``limit``
    characters; a list or dict only named (its repr could be megabytes deep)."""
    if isinstance(value, list | dict):
        return "an array" if isinstance(value, list) else "an object"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


#: The key, in a core schema's metadata, of its stand-in: a core schema that calls no
#: validator written in Python (or fewer), accepts only values the schema accepts and
#: gives the same value for them. Declining more is allowed; accepting more is a bug.
STAND_IN = "streamtags_stand_in"


@dataclass(frozen=True, slots=True, eq=False)
class StandIn:
    """Metadata naming the stand-in of the validators before it:
    ``Annotated[int, BeforeValidator(f), StandIn(schema)]`` (see :data:`STAND_IN`)."""

    schema: CoreSchema

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        schema = handler(source)
        metadata = {**schema.get("metadata", {}), STAND_IN: self.schema}
        return {**schema, "metadata": metadata}


#: Printable ASCII but for the space, ``{`` and ``}``, not starting ``__faust``: a
#: string that fully matches this matches both id patterns too, and finding that out
#: costs a sixth of the published patterns' scan (their ``[\s\S]*`` backtracks).
PLAIN_ID_PATTERN = r"(?!__faust)[!-z|~]*"

#: :data:`PLAIN_ID_PATTERN` for pydantic-core's own regex engine, which has no
#: look-around: a string it matches matches that pattern too (one starting with ``_``
#: is left to the full check). The ids' stand-in (see :data:`STAND_IN`).
NATIVE_ID_PATTERN = r"^[!-\^`-z|~][!-z|~]*$"


@dataclass(frozen=True, slots=True)
class _Text:
    """A JSON string of bounded length, optionally matching a published pattern."""

    max_length: int
    min_length: int = 0
    pattern: str | None = None
    #: what a value failing ``pattern`` lacks, in words, for the error message
    rule: str = ""
    #: a pattern whose full match promises that ``pattern`` matches, tried first
    #: because it is cheaper (``pattern`` decides when it does not match)
    shortcut: str | None = None
    #: a pattern for pydantic-core's engine whose match promises the same: the stand-in
    native_shortcut: str | None = None

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        schema = core_schema.str_schema(
            min_length=self.min_length, max_length=self.max_length, strict=True
        )
        if self.pattern is None:
            return schema
        compiled = re.compile(self.pattern)
        shortcut = re.compile(self.shortcut or "(?!)")  # (?!) matches nothing
        rule = self.rule

        def check(value: str) -> str:
            # match() with a ^-anchored pattern is what jsonschema's re.search() does
            if shortcut.fullmatch(value) is None and compiled.match(value) is None:
                raise ValueError(rule)
            return value

        metadata = {}
        if self.native_shortcut is not None:
            metadata[STAND_IN] = core_schema.str_schema(
                min_length=self.min_length,
                max_length=self.max_length,
                pattern=self.native_shortcut,
                strict=True,
            )
        return core_schema.no_info_after_validator_function(check, schema, metadata=metadata)

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        published: dict[str, Any] = {"type": "string", "maxLength": self.max_length}
        if self.min_length:
            published["minLength"] = self.min_length
        if self.pattern is not None:
            published["pattern"] = self.pattern
        return published


UserId = Annotated[
    str,
    _Text(
        max_length=256,
        min_length=1,
        pattern=USER_ID_PATTERN,
        rule="a user id may not hold whitespace, control or invisible characters, "
        "'{' or '}', nor start with '__faust'",
        shortcut=PLAIN_ID_PATTERN,
        native_shortcut=NATIVE_ID_PATTERN,
    ),
]
"""A user id: 1-256 characters, taken verbatim (never trimmed or case-folded)."""

EventId = Annotated[
    str,
    _Text(
        max_length=256,
        min_length=1,
        pattern=EVENT_ID_PATTERN,
        rule="an event id may not hold whitespace, control or invisible characters",
        shortcut=PLAIN_ID_PATTERN,
        native_shortcut=NATIVE_ID_PATTERN,
    ),
]
"""An event id: 1-256 characters without whitespace or control characters."""

Name = Annotated[str, _Text(max_length=256, min_length=1)]
"""A short required name or id (order id, SKU): 1-256 characters, verbatim."""

ShortText = Annotated[str, _Text(max_length=256)]
"""A short optional label or id (brand, cart id, card fingerprint): at most 256 characters."""

Text = Annotated[str, _Text(max_length=1024)]
"""Free text (a search query, a user agent): at most 1024 characters, verbatim."""


def _json_integer(value: Any) -> Any:
    # JSON has one number type: 3.0 is the integer 3 (JSON Schema agrees); 3.5,
    # "3" and true are not.
    if type(value) is int:  # the common case first (a bool's type is bool)
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {shown(value)}")
    return value


@dataclass(frozen=True, slots=True)
class Integer:
    """Metadata for a bounded JSON integer: ``Annotated[int, Integer(minimum, maximum)]``.

    An int, or a float with no fraction (``3.0`` is the integer 3 in JSON and
    JSON Schema); never a bool, a string or ``3.5``. Both bounds are inclusive.
    """

    minimum: int
    maximum: int

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        bounded = core_schema.int_schema(ge=self.minimum, le=self.maximum, strict=True)
        # stand-in: the JSON integer as an int; a whole float goes the full way
        return core_schema.no_info_before_validator_function(
            _json_integer, bounded, metadata={STAND_IN: bounded}
        )

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}


Money = Annotated[float, Field(ge=0, le=1e12, strict=True, allow_inf_nan=False)]
"""An amount in currency units (not cents), 0 to 10^12: a JSON number, never a string."""


def parse_event_time(value: Any) -> int:
    """Return an event time as epoch milliseconds, UTC.

    Accepts an RFC 3339 date-time with an offset (``2026-11-22T10:00:00Z``,
    ``...+08:00``; years 2000-2099 as written, fractions truncated to the
    millisecond) or a JSON integer of epoch milliseconds in 2000-2099 UTC
    (``1795341600000.0`` is that integer too). A time without an offset is
    ambiguous and rejected; so is a bool, a fractional number, or any other
    ISO 8601 spelling (week dates, a space for ``T``, basic format).
    """
    if isinstance(value, str):
        return _parse_rfc3339(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"ts must be an RFC 3339 string or integer epoch milliseconds, not {shown(value)}"
        )
    if not EARLIEST_TS_MS <= value < LATEST_TS_MS:
        raise ValueError(f"ts {value} is outside the years 2000-2099")
    return value


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def _parse_rfc3339(text: str) -> int:
    if _EVENT_TIME.match(text) is None:
        if re.match(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9:.]*(?![\s\S])", text):
            raise ValueError(f"ts {shown(text)} has no UTC offset")
        raise ValueError(f"ts {shown(text)} is not an RFC 3339 time in the years 2000-2099")
    return _checked_rfc3339_ms(text)


def _checked_rfc3339_ms(text: str) -> int:
    # The pattern fixed every position: YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM).
    # fromisoformat (C) reads what the pattern checked (its own rules are looser), but
    # for a lower-case z, and cuts the fraction to microseconds; // then cuts it to ms.
    if text[-1] == "z":
        text = text[:-1] + "Z"
    return (datetime.fromisoformat(text) - _EPOCH) // _MILLISECOND


EventTime = Annotated[
    int,
    BeforeValidator(parse_event_time),
    # stand-in: integer epoch ms natively; text checked natively, then only read in Python
    StandIn(
        core_schema.union_schema(
            [
                core_schema.int_schema(ge=EARLIEST_TS_MS, lt=LATEST_TS_MS, strict=True),
                core_schema.chain_schema(
                    [
                        core_schema.str_schema(pattern=_NATIVE_EVENT_TIME_PATTERN, strict=True),
                        core_schema.no_info_plain_validator_function(_checked_rfc3339_ms),
                    ]
                ),
            ],
            mode="left_to_right",
        )
    ),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time", "pattern": EVENT_TIME_PATTERN},
                {"type": "integer", "minimum": EARLIEST_TS_MS, "maximum": LATEST_TS_MS - 1},
            ],
        }
    ),
]
"""Event time in epoch milliseconds, UTC, parsed from RFC 3339 or epoch ms."""

#: The longest text form of an IP address: ``ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255``.
_IP_MAX_LENGTH = 45


#: A dotted-quad IPv4 address as ipaddress writes it (no leading zeros): already canonical.
_IPV4_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_IPV4 = re.compile(rf"{_IPV4_OCTET}(?:\.{_IPV4_OCTET}){{3}}")


def _canonical_ip(value: str) -> str:
    if _CANONICAL_IPV4.fullmatch(value) is not None:
        return value  # the common case, without the cost of parsing it (~2 us)
    if "%" in value:
        raise ValueError(
            f"IP {shown(value)} has a zone id (after '%'): it names a link on the sender's "
            "host and is not accepted"
        )
    if len(value) > _IP_MAX_LENGTH:
        raise ValueError(f"IP {shown(value)} is longer than any IP address")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{shown(value)} is not an IPv4 or IPv6 address") from None
    # One address, one spelling: an IPv4-mapped IPv6 address is that IPv4 address, and
    # str() gives the compressed, lower-case form of any IPv6 spelling.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


IpAddress = Annotated[
    str,
    Field(strict=True),
    AfterValidator(_canonical_ip),
    # stand-in: an IPv4 address already canonical, which _canonical_ip returns as it is
    StandIn(core_schema.str_schema(pattern=f"^{_CANONICAL_IPV4.pattern}$", strict=True)),
    WithJsonSchema(
        {
            "type": "string",
            "maxLength": _IP_MAX_LENGTH,
            "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}],
        }
    ),
]
"""An IPv4 or IPv6 address without zone id, held in its one canonical spelling:
IPv6 compressed and lower case, an IPv4-mapped IPv6 address as the IPv4 address."""


def _existing_time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    # A name that is a tzdata directory ("Europe") raises IsADirectoryError, one too
    # long for the file system OSError: every failure to load means "no such zone".
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"{shown(value)} is not an IANA time zone") from None
    return value


TimeZoneName = Annotated[
    str,
    _Text(
        max_length=64,
        min_length=1,
        pattern=_TIME_ZONE_PATTERN,
        rule="a time zone name holds only letters, digits and _ + - /, starting with a letter",
    ),
    AfterValidator(_existing_time_zone),
]
"""An IANA time zone name (``Asia/Shanghai``) that exists in the worker's tz database."""
