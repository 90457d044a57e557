"""One frozen settings object, read from ``STREAMTAGS_*`` environment variables.

Only the CLI calls :meth:`Settings.from_env`; everything else receives the
object (or plain keyword arguments) explicitly. A bad value stops the
process at start-up with the variable's name and what was wrong.

Secrets (the Kafka SASL password, the web token) are held as :class:`Secret`,
whose ``repr`` and ``str`` never show the value, and the ``repr`` of
:class:`Settings` masks a password in the Redis URL: printing or logging the
settings reveals no secret.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast, get_args
from urllib.parse import parse_qsl, urlencode, urlsplit

from streamtags.errors import SettingsError

__all__ = [
    "MIN_RECORD_BYTES",
    "InputTopics",
    "KafkaSecurity",
    "OutputTopics",
    "SaslMechanism",
    "Secret",
    "SecurityProtocol",
    "Settings",
    "masked_url",
]

PREFIX = "STREAMTAGS_"
#: The smallest record size limit that still fits a dead letter's own fields, bytes.
MIN_RECORD_BYTES = 16_384

#: A shorter web token is too easy to guess.
MIN_WEB_TOKEN_CHARS = 16

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
"""Kafka's ``security.protocol``: TLS or not, SASL authentication or not."""

SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
"""Kafka's ``sasl.mechanism`` for a username and password."""


class Secret:
    """A string that must never be printed: ``repr`` and ``str`` show ``'***'``.

    Read the value with :meth:`reveal`, only where it is handed to a client.
    Not a dataclass on purpose: :func:`dataclasses.asdict` would unpack one.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str = "") -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself; empty when it was not set."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__


def masked_url(url: str) -> str:
    """``url`` with any password (``user:pass@`` or ``?password=``) replaced by ``***``."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if parts.password is None and all(key != "password" for key, _ in pairs):
        return url
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostinfo = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{hostinfo}"
    query = urlencode([(k, "***" if k == "password" else v) for k, v in pairs], safe="*")
    # built by hand: urlunsplit would drop the "//" of unix:///path
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """How every Kafka client authenticates and encrypts (``STREAMTAGS_KAFKA_*``).

    The default, ``PLAINTEXT``, neither encrypts nor authenticates. ``SSL`` and
    ``SASL_SSL`` use TLS: ``ssl_cafile`` is the CA bundle that signed the
    brokers' certificates (the system's CAs when unset); ``ssl_certfile`` and
    ``ssl_keyfile`` (PEM) are a client certificate for brokers that demand one.
    ``SASL_PLAINTEXT`` and ``SASL_SSL`` log in with ``sasl_mechanism``,
    ``sasl_username`` and ``sasl_password``.
    """

    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str = ""
    sasl_password: Secret = field(default_factory=Secret)
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @property
    def uses_sasl(self) -> bool:
        """True for ``SASL_PLAINTEXT`` and ``SASL_SSL``."""
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        """True for ``SSL`` and ``SASL_SSL``."""
        return self.security_protocol in ("SSL", "SASL_SSL")

    def describe(self) -> str:
        """How the clients connect, for people and logs (never the password)."""
        if not self.uses_sasl:
            return self.security_protocol
        return f"{self.security_protocol}, {self.sasl_mechanism} as {self.sasl_username!r}"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KafkaSecurity:
        """Read ``STREAMTAGS_KAFKA_SECURITY_PROTOCOL``, ``_SASL_*`` and ``_SSL_*``."""

        def get(name: str) -> str | None:
            """The variable's value; None when unset or blank."""
            raw = env.get(f"{PREFIX}KAFKA_{name.upper()}", "").strip()
            return raw or None

        protocol = _choice("security_protocol", get("security_protocol"), SecurityProtocol)
        mechanism = _choice("sasl_mechanism", get("sasl_mechanism"), SaslMechanism)
        files = {
            name: Path(raw)
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
            if (raw := get(name)) is not None
        }
        return cls(
            security_protocol=cast(SecurityProtocol, protocol or "PLAINTEXT"),
            sasl_mechanism=cast(SaslMechanism | None, mechanism),
            sasl_username=get("sasl_username") or "",
            sasl_password=Secret(env.get(f"{PREFIX}KAFKA_SASL_PASSWORD", "")),
            **files,
        )

    def check(self) -> None:
        """Raise :class:`SettingsError` for a combination that cannot connect as meant."""
        name = f"{PREFIX}KAFKA_SECURITY_PROTOCOL"
        if self.security_protocol not in get_args(SecurityProtocol):
            raise SettingsError(f"{name} must be one of {_listed(SecurityProtocol)}")
        sasl = {
            "SASL_MECHANISM": self.sasl_mechanism,
            "SASL_USERNAME": self.sasl_username,
            "SASL_PASSWORD": self.sasl_password,
        }
        for suffix, value in sasl.items():
            if self.uses_sasl and not value:
                raise SettingsError(
                    f"{name}={self.security_protocol} needs {PREFIX}KAFKA_{suffix} as well"
                )
            if not self.uses_sasl and value:
                raise SettingsError(
                    f"{PREFIX}KAFKA_{suffix} is set but {name}={self.security_protocol} does "
                    f"not log in; use SASL_PLAINTEXT or SASL_SSL"
                )
        self._check_files()

    def _check_files(self) -> None:
        files = {
            "SSL_CAFILE": self.ssl_cafile,
            "SSL_CERTFILE": self.ssl_certfile,
            "SSL_KEYFILE": self.ssl_keyfile,
        }
        for suffix, path in files.items():
            if path is None:
                continue
            if not self.uses_tls:
                raise SettingsError(
                    f"{PREFIX}KAFKA_{suffix} is set but {PREFIX}KAFKA_SECURITY_PROTOCOL="
                    f"{self.security_protocol} does not use TLS; use SSL or SASL_SSL"
                )
            if not (path.is_file() and os.access(path, os.R_OK)):
                raise SettingsError(f"{PREFIX}KAFKA_{suffix}={str(path)!r} is not a readable file")
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise SettingsError(
                f"{PREFIX}KAFKA_SSL_KEYFILE needs {PREFIX}KAFKA_SSL_CERTFILE (the certificate "
                f"it belongs to)"
            )


@dataclass(frozen=True, slots=True)
class InputTopics:
    """Input topic names by stream; all keyed by user_id and co-partitioned."""

    orders: str = "orders"
    browse: str = "browse"
    logins: str = "logins"
    accounts: str = "accounts"

    def by_stream(self) -> dict[str, str]:
        """Stream name -> topic name."""
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class OutputTopics:
    """Output topic names."""

    tags: str = "streamtags.tags"
    risk_tags: str = "streamtags.risk-tags"
    coupon_triggers: str = "streamtags.coupon-triggers"
    dead_letter: str = "streamtags.dead-letter"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a worker needs to know, with units in the names."""

    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    #: ``redis://`` or ``rediss://`` (TLS), optionally ``user:password@`` (ACL); or ``unix://``.
    redis_url: str = "redis://127.0.0.1:6379/0"
    app_id: str = "streamtags"
    inputs: InputTopics = field(default_factory=InputTopics)
    outputs: OutputTopics = field(default_factory=OutputTopics)
    partitions: int = 8
    replication_factor: int = 1
    store: str = "rocksdb://"
    data_dir: Path = Path("streamtags-data")
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    #: When set, the tag lookup and ``/metrics`` answer only ``Authorization: Bearer <token>``.
    web_token: Secret = field(default_factory=Secret)
    #: Whether the HTTP tag lookup includes each tag's ``evidence`` (IPs, countries, cards).
    web_evidence: bool = True
    rules_dir: Path = Path("rules")
    lateness_ms: int = 1_000
    #: How far ahead of the wall clock an event may be stamped before it is dead-lettered.
    max_future_skew_ms: int = 300_000
    time_scale: float = 1.0
    #: How often dirty states are flushed and offsets acked and committed, seconds. Each
    #: flush snapshots its dirty users between two batches (a short pause): 0.25 s kept
    #: p99 event-to-Redis under 300 ms at half load where 1 s gave 2.5 s (bench/live.py).
    commit_interval_s: float = 0.25
    #: How long the group waits for a silent worker before its partitions move (kill -9).
    session_timeout_s: float = 30.0
    #: Workers that keep a warm copy of each partition's state besides its owner (Faust's
    #: standby replicas): a failover then reads less changelog, and every worker reads
    #: the others' changelogs all the time (bench/scale.py measures what that costs).
    standby_replicas: int = 1
    #: How often deadlines, waiting events and caught-up streams are looked at, seconds,
    #: besides after every batch: in a partition that gets no events, the tick alone
    #: releases what waits. Measured before batches marked caught-up streams (p99
    #: event-to-Redis at 5 % load, lateness 100 ms, bench/live.py): 247 / 196 / 152 ms
    #: at 0.5 / 0.1 / 0.05 s; a tick costs microseconds per owned partition.
    tick_interval_s: float = 0.05
    #: Each fetch asks the broker for at least this many bytes, waiting at most
    #: ``fetch_max_wait_ms`` for them (Faust: 1 byte, 1.5 s). Under a trickle of events a
    #: fetch per few records cost CPU per fetch: bench/live.py, lateness 20 ms, worker
    #: cores / p99 at 5 % load 0.47 / 76 ms -> 0.28 / 64 ms, at 50 % 0.61 / 220 -> 0.54 / 132.
    fetch_min_bytes: int = 65_536
    fetch_max_wait_ms: int = 10
    redis_timeout_ms: int = 100
    redis_key_prefix: str = "streamtags:user:"
    redis_trigger_prefix: str = "streamtags:trigger:"
    log_level: str = "info"
    #: Largest record (key + value) the worker sends; larger ones are refused and
    #: dead-lettered (``too_large``). Kafka's own limits must allow a little more.
    max_record_bytes: int = 1_000_000
    #: Memory budget of the user-state caches of all partitions together, MiB (estimated).
    cache_max_mb: int = 512
    #: How often idle users are looked for and deleted, wall-clock seconds.
    sweep_interval_s: float = 600.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``STREAMTAGS_*`` variables; unset ones keep defaults.

        ``STREAMTAGS_TOPIC_ORDERS`` etc. rename input topics;
        ``STREAMTAGS_TOPIC_TAGS`` etc. rename outputs.
        """
        env = os.environ if environ is None else environ
        base = cls()
        values: dict[str, object] = {}
        for spec in dataclasses.fields(cls):
            if spec.name in ("inputs", "outputs", "kafka_security"):
                continue
            raw = env.get(PREFIX + spec.name.upper())
            if raw is None:
                continue
            values[spec.name] = _convert(spec.name, raw, type(getattr(base, spec.name)))
        values["inputs"] = InputTopics(
            **{
                name: env.get(f"{PREFIX}TOPIC_{name.upper()}", default)
                for name, default in base.inputs.by_stream().items()
            }
        )
        values["outputs"] = OutputTopics(
            **{
                spec.name: env.get(
                    f"{PREFIX}TOPIC_{spec.name.upper()}", getattr(base.outputs, spec.name)
                )
                for spec in dataclasses.fields(OutputTopics)
            }
        )
        values["kafka_security"] = KafkaSecurity.from_env(env)
        settings = cls(**values)  # type: ignore[arg-type]
        settings.check()
        return settings

    def __repr__(self) -> str:
        """Every field, with the Redis URL's password masked (secrets mask themselves)."""
        shown = {spec.name: getattr(self, spec.name) for spec in dataclasses.fields(self)}
        shown["redis_url"] = masked_url(self.redis_url)
        return f"Settings({', '.join(f'{name}={value!r}' for name, value in shown.items())})"

    def check(self) -> None:
        """Raise :class:`SettingsError` for values that cannot work."""
        if self.partitions < 1:
            raise SettingsError(f"{PREFIX}PARTITIONS must be at least 1, got {self.partitions}")
        if self.store.split("://")[0] not in ("memory", "rocksdb"):
            raise SettingsError(f"{PREFIX}STORE must be memory:// or rocksdb://, got {self.store}")
        if self.time_scale <= 0:
            raise SettingsError(f"{PREFIX}TIME_SCALE must be positive, got {self.time_scale}")
        if self.standby_replicas < 0:
            raise SettingsError(
                f"{PREFIX}STANDBY_REPLICAS must be >= 0, got {self.standby_replicas}"
            )
        if self.lateness_ms < 0:
            raise SettingsError(f"{PREFIX}LATENESS_MS must be >= 0, got {self.lateness_ms}")
        if self.max_future_skew_ms < 0:
            raise SettingsError(
                f"{PREFIX}MAX_FUTURE_SKEW_MS must be >= 0, got {self.max_future_skew_ms}"
            )
        if min(self.commit_interval_s, self.tick_interval_s, self.sweep_interval_s) <= 0:
            raise SettingsError(
                f"{PREFIX}COMMIT_INTERVAL_S, TICK_INTERVAL_S and SWEEP_INTERVAL_S must be positive"
            )
        if self.fetch_min_bytes < 1 or self.fetch_max_wait_ms < 0:
            raise SettingsError(
                f"{PREFIX}FETCH_MIN_BYTES must be >= 1 and {PREFIX}FETCH_MAX_WAIT_MS >= 0"
            )
        if self.max_record_bytes < MIN_RECORD_BYTES:
            raise SettingsError(
                f"{PREFIX}MAX_RECORD_BYTES must be at least {MIN_RECORD_BYTES} (a dead letter's "
                f"own fields need room), got {self.max_record_bytes}"
            )
        if self.cache_max_mb < 1:
            raise SettingsError(f"{PREFIX}CACHE_MAX_MB must be at least 1, got {self.cache_max_mb}")
        scheme = urlsplit(self.redis_url).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise SettingsError(
                f"{PREFIX}REDIS_URL must start with redis://, rediss:// (TLS) or unix://, "
                f"got {masked_url(self.redis_url)!r}"
            )
        token = self.web_token.reveal()
        if token and (len(token) < MIN_WEB_TOKEN_CHARS or token != token.strip()):
            raise SettingsError(
                f"{PREFIX}WEB_TOKEN must be at least {MIN_WEB_TOKEN_CHARS} characters without "
                f"surrounding spaces; make one with: python -c 'import secrets; "
                f"print(secrets.token_urlsafe(32))'"
            )
        self.kafka_security.check()


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _convert(name: str, raw: str, kind: type) -> object:
    if kind is Secret:
        return Secret(raw)  # never quoted in an error message below
    try:
        if kind is bool:
            word = raw.strip().lower()
            if word not in _TRUE + _FALSE:
                # a typo must not silently switch a security setting
                raise ValueError(word)
            return word in _TRUE
        if kind is Path:
            return Path(raw)
        return kind(raw)
    except ValueError:
        raise SettingsError(
            f"{PREFIX}{name.upper()}={raw!r} is not a valid {kind.__name__}"
        ) from None


def _choice(name: str, raw: str | None, allowed: object) -> str | None:
    """``raw`` upper-cased if it is one of the ``Literal`` ``allowed``; None if unset."""
    if raw is None:
        return None
    if raw.upper() not in get_args(allowed):
        raise SettingsError(
            f"{PREFIX}KAFKA_{name.upper()}={raw!r} must be one of {_listed(allowed)}"
        )
    return raw.upper()


def _listed(allowed: object) -> str:
    return ", ".join(get_args(allowed))
