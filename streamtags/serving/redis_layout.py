"""The Redis layout of live tags: the one place that defines it.

Services in any language read it directly (see README, "Redis layout"):

- one **hash per user**, key ``{prefix}{user_id}`` (default prefix
  ``streamtags:user:``), so a lookup is one ``HGETALL`` and a Redis Cluster
  shards by user;
- one **field per tag**, named after the tag; its value is a JSON object.
  A live tag: ``tag``, ``category``, ``severity``, ``applied_at``,
  ``expires_at`` (RFC 3339), ``expires_at_ms`` (epoch ms), ``rule``
  ``{name, version}``, ``evidence`` ``{reason, figures, event_ids}``,
  ``change_id``, ``version``. A cleared tag is a **tombstone**:
  ``{"tag", "cleared": true, "expires_at_ms": 0, "version", "until_ms"}``;
- **the one reader rule**: a field is a live tag only if its
  ``expires_at_ms`` is after the reader's clock (epoch ms). It drops a tag
  that lapsed a moment before the worker's clearing write lands, and, since a
  tombstone's ``expires_at_ms`` is 0, every tombstone;
- the key expires (``PEXPIREAT``) with its last field (live tag or
  tombstone), so a user with no tag and no recent clear has no key.

Versions. Every field carries ``version``: the event time (epoch ms, UTC)
of the tag change that wrote it. A write whose version is lower than the
field's is rejected, so a late or replayed write never overwrites newer
data; an equal version is accepted (one user's changes come from one
worker, in the engine's order, so the later of two same-instant changes is
the newer). A tombstone stays until the tag's former expiry (the
``expires_at_ms`` of the value it replaces; if Redis held none, the clear's
time plus the rule's TTL, an upper bound of it): until then an older
"applied" cannot resurrect the tag, and after it any older value has
lapsed anyway.

Restores. A tag projected again from a user's state (after Redis lost data,
see :mod:`~streamtags.serving.projection`) is written with the version of
the state's settled time, which is at least that of every change the state
reflects and below that of every later change. A restore only fills a gap:
it is written when the field is missing, or older than the state and
disagreeing with it about the expiry (a lost renewal, a lost re-apply after
a clear); a field that already says what the state says keeps its original
evidence.

Writes are atomic per user: one Lua script applies all of a user's writes
and resets the key's expiry (a script touches one key, so it works on a
cluster too).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import orjson

__all__ = [
    "APPLY_SCRIPT",
    "DEFAULT_PREFIX",
    "WriteOp",
    "decode_tags",
    "encode_tag",
    "encode_tombstone",
    "marker_key",
    "user_key",
]

DEFAULT_PREFIX = "streamtags:user:"

WriteOp = Literal["set", "restore", "clear"]
"""How :data:`APPLY_SCRIPT` writes a field: ``set`` (a tag change that applied or
renewed the tag), ``restore`` (the tag projected again from state), ``clear``
(a tombstone)."""

#: KEYS[1]: the user's hash. ARGV: now_ms (wall clock, epoch ms), then five
#: arguments per field: op (WriteOp), field, version (epoch ms), expires_ms,
#: value. For ``set`` and ``restore``, expires_ms is the value's
#: ``expires_at_ms``; for ``clear`` it is the tombstone's lifetime when the hash
#: holds nothing for the field, and the value is the tombstone without its
#: closing ``until_ms`` (appended here). Then drops fields whose lifetime
#: (``until_ms`` of a tombstone, ``expires_at_ms`` otherwise) is not after now,
#: and sets the key to expire with its last field. Returns {written, rejected}.
APPLY_SCRIPT = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local function held(raw)
  local ok, value = pcall(cjson.decode, raw)
  if not ok or type(value) ~= 'table' then
    return -1, 0, 0
  end
  local expires = tonumber(value['expires_at_ms']) or 0
  return tonumber(value['version']) or -1, expires, tonumber(value['until_ms']) or expires
end
local written, rejected = 0, 0
for i = 2, #ARGV, 5 do
  local op, field, value = ARGV[i], ARGV[i + 1], ARGV[i + 4]
  local version, expires = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local current = redis.call('HGET', key, field)
  local write, lifetime = true, 0
  if current then
    local held_version, held_expires, held_lifetime = held(current)
    lifetime = held_lifetime
    if op == 'restore' then
      write = held_version < version and held_expires ~= expires
    else
      write = held_version <= version
    end
  end
  if write then
    if op == 'clear' then
      if lifetime <= 0 then
        lifetime = expires
      end
      value = string.sub(value, 1, -2) .. ',"until_ms":' .. string.format('%d', lifetime) .. '}'
    end
    redis.call('HSET', key, field, value)
    written = written + 1
  else
    rejected = rejected + 1
  end
end
local latest = 0
local fields = redis.call('HGETALL', key)
for i = 1, #fields, 2 do
  local _, _, lifetime = held(fields[i + 1])
  if lifetime <= now then
    redis.call('HDEL', key, fields[i])
  elseif lifetime > latest then
    latest = lifetime
  end
end
if latest > 0 then
  redis.call('PEXPIREAT', key, latest)
end
return {written, rejected}
"""


def user_key(user_id: str, *, prefix: str = DEFAULT_PREFIX) -> str:
    """The Redis key holding ``user_id``'s tags."""
    return prefix + user_id


def marker_key(run_id: str, *, prefix: str = DEFAULT_PREFIX) -> str:
    """The key a worker run keeps alive to notice that Redis lost its data.

    It starts with ``prefix`` and a NUL byte, which no user id contains, so it
    never collides with a user's hash."""
    return f"{prefix}\x00run:{run_id}"


def encode_tag(
    change: Mapping[str, Any], *, expires_at_ms: int, applied_at: str, version: int
) -> bytes:
    """The hash value for a live tag, from the tag change that applied or renewed it
    (or one rebuilt from state); ``version`` is epoch ms (see the module docstring)."""
    return orjson.dumps(
        {
            "tag": change["tag"],
            "category": change["category"],
            "severity": change["severity"],
            "applied_at": applied_at,
            "expires_at": change["expires_at"],
            "expires_at_ms": expires_at_ms,
            "rule": change["rule"],
            "evidence": change["evidence"],
            "change_id": change["change_id"],
            "version": version,
        }
    )


def encode_tombstone(tag: str, *, version: int) -> bytes:
    """The hash value for a cleared tag, as sent to :data:`APPLY_SCRIPT` (which adds
    ``until_ms``); ``version`` is the clear's event time, epoch ms."""
    return orjson.dumps({"tag": tag, "cleared": True, "expires_at_ms": 0, "version": version})


def decode_tags(fields: Mapping[Any, bytes | str], *, now_ms: int) -> list[dict[str, Any]]:
    """Live tags from an ``HGETALL`` reply, sorted by tag: fields whose
    ``expires_at_ms`` is not after ``now_ms`` (lapsed tags, tombstones) left out."""
    tags = []
    for value in fields.values():
        try:
            tag = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        if isinstance(tag, dict) and _expires_at_ms(tag) > now_ms:
            tags.append(tag)
    return sorted(tags, key=lambda t: str(t.get("tag")))


def _expires_at_ms(value: Mapping[str, Any]) -> int:
    expires = value.get("expires_at_ms")
    if value.get("cleared") or not isinstance(expires, int | float):
        return 0
    return int(expires)
