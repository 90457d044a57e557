"""One frozen settings object, read from ``STREAMTAGS_*`` environment variables.

Only the CLI calls :meth:`Settings.from_env`; everything else receives the
object (or plain keyword arguments) explicitly. A bad value stops the
process at start-up with the variable's name and what was wrong.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from streamtags.errors import SettingsError

__all__ = ["MIN_RECORD_BYTES", "InputTopics", "OutputTopics", "Settings"]

PREFIX = "STREAMTAGS_"
#: The smallest record size limit that still fits a dead letter's own fields, bytes.
MIN_RECORD_BYTES = 16_384


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
    rules_dir: Path = Path("rules")
    lateness_ms: int = 10_000
    #: How far ahead of the wall clock an event may be stamped before it is dead-lettered.
    max_future_skew_ms: int = 300_000
    time_scale: float = 1.0
    commit_interval_s: float = 1.0
    #: How long the group waits for a silent worker before its partitions move (kill -9).
    session_timeout_s: float = 30.0
    tick_interval_s: float = 0.5
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
            if spec.name in ("inputs", "outputs"):
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
        settings = cls(**values)  # type: ignore[arg-type]
        settings.check()
        return settings

    def check(self) -> None:
        """Raise :class:`SettingsError` for values that cannot work."""
        if self.partitions < 1:
            raise SettingsError(f"{PREFIX}PARTITIONS must be at least 1, got {self.partitions}")
        if self.store.split("://")[0] not in ("memory", "rocksdb"):
            raise SettingsError(f"{PREFIX}STORE must be memory:// or rocksdb://, got {self.store}")
        if self.time_scale <= 0:
            raise SettingsError(f"{PREFIX}TIME_SCALE must be positive, got {self.time_scale}")
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
        if self.max_record_bytes < MIN_RECORD_BYTES:
            raise SettingsError(
                f"{PREFIX}MAX_RECORD_BYTES must be at least {MIN_RECORD_BYTES} (a dead letter's "
                f"own fields need room), got {self.max_record_bytes}"
            )
        if self.cache_max_mb < 1:
            raise SettingsError(f"{PREFIX}CACHE_MAX_MB must be at least 1, got {self.cache_max_mb}")


def _convert(name: str, raw: str, kind: type) -> object:
    try:
        if kind is bool:
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if kind is Path:
            return Path(raw)
        return kind(raw)
    except ValueError:
        raise SettingsError(
            f"{PREFIX}{name.upper()}={raw!r} is not a valid {kind.__name__}"
        ) from None
