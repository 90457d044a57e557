"""The Redis layout of live tags: the one place that defines it.

Services in any language read it directly (see README, "Redis layout"):

- one **hash per user**, key ``{prefix}{user_id}`` (default prefix
  ``streamtags:user:``), so a lookup is one ``HGETALL`` and a Redis Cluster
  shards by user;
- one **field per live tag**, named after the tag; its value is a JSON object:
  ``tag``, ``category``, ``severity``, ``applied_at``, ``expires_at`` (RFC 3339),
  ``expires_at_ms`` (epoch ms), ``rule`` ``{name, version}``, ``evidence``
  ``{reason, figures, event_ids}``, ``change_id``;
- a reader must ignore fields whose ``expires_at_ms`` is not after its clock:
  a tag can lapse before the worker's clearing write lands;
- the key expires (``PEXPIREAT``) when its last tag does, and cleared tags are
  deleted, so an untagged user has no key at all.

Writes are atomic per user: one Lua script applies all of a user's changes
and resets the key's expiry (a script touches one key, so it works on a
cluster too).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

__all__ = [
    "APPLY_SCRIPT",
    "DEFAULT_PREFIX",
    "decode_tags",
    "encode_tag",
    "user_key",
]

DEFAULT_PREFIX = "streamtags:user:"

#: KEYS[1]: the user's hash. ARGV: now_ms, then (field, value) pairs; an empty
#: value deletes the field. Drops lapsed fields and sets the key to expire
#: with its last live tag.
APPLY_SCRIPT = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', key, ARGV[i])
  else
    redis.call('HSET', key, ARGV[i], ARGV[i + 1])
  end
end
local latest = 0
local fields = redis.call('HGETALL', key)
for i = 1, #fields, 2 do
  local ok, value = pcall(cjson.decode, fields[i + 1])
  local expires = ok and tonumber(value['expires_at_ms']) or 0
  if expires <= now then
    redis.call('HDEL', key, fields[i])
  elseif expires > latest then
    latest = expires
  end
end
if latest > 0 then
  redis.call('PEXPIREAT', key, latest)
end
return latest
"""


def user_key(user_id: str, *, prefix: str = DEFAULT_PREFIX) -> str:
    """The Redis key holding ``user_id``'s live tags."""
    return prefix + user_id


def encode_tag(change: Mapping[str, Any], *, expires_at_ms: int, applied_at: str) -> bytes:
    """The hash value for a live tag, from the tag change that applied or renewed it."""
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
        }
    )


def decode_tags(fields: Mapping[Any, bytes | str], *, now_ms: int) -> list[dict[str, Any]]:
    """Live tags from an ``HGETALL`` reply, expired ones left out, sorted by tag."""
    tags = []
    for value in fields.values():
        try:
            tag = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        if isinstance(tag, dict) and int(tag.get("expires_at_ms", 0)) > now_ms:
            tags.append(tag)
    return sorted(tags, key=lambda t: str(t.get("tag")))
