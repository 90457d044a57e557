"""Prometheus metrics of a worker, served at ``/metrics``.

One registry per worker process (not the global default), so tests can
build several apps in one process without name clashes.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]


class Metrics:
    """The worker's counters, gauges and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_consumed = Counter(
            "streamtags_events_consumed_total",
            "Valid input events consumed.",
            ["topic"],
            registry=r,
        )
        self.events_rejected = Counter(
            "streamtags_events_rejected_total",
            "Input messages sent to the dead-letter topic.",
            ["topic", "kind"],
            registry=r,
        )
        self.tag_changes = Counter(
            "streamtags_tag_changes_total", "Tag changes emitted.", ["tag", "action"], registry=r
        )
        self.coupon_triggers = Counter(
            "streamtags_coupon_triggers_total", "Coupon triggers emitted.", registry=r
        )
        self.deadline_lateness = Histogram(
            "streamtags_deadline_fire_delay_seconds",
            "Wall-clock delay between a deadline plus allowed lateness and its firing.",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.event_to_output = Histogram(
            "streamtags_event_to_output_seconds",
            "Wall-clock time from an event's time to the tag change it caused being shipped.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
            registry=r,
        )
        self.redis_errors = Counter(
            "streamtags_redis_errors_total", "Failed Redis batch writes.", registry=r
        )
        self.redis_pending_users = Gauge(
            "streamtags_redis_pending_users",
            "Users whose Redis record waits for Redis to come back.",
            registry=r,
        )
        self.flush_failures = Counter(
            "streamtags_flush_failures_total",
            "Flushes the broker did not fully confirm; their events stay unacked and retry.",
            registry=r,
        )
        self.duplicates = Counter(
            "streamtags_duplicate_events_total",
            "Events dropped because an event with the same id was waiting (producer retries).",
            registry=r,
        )
        self.unreadable_states = Counter(
            "streamtags_unreadable_states_total",
            "Stored user states that could not be read and started afresh, opted out.",
            registry=r,
        )
        self.flush_pause = Histogram(
            "streamtags_flush_pause_seconds",
            "How long each flush held batches back to snapshot dirty states, outputs and acks.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=r,
        )
        self.batch_size = Histogram(
            "streamtags_batch_events",
            "Events per processed batch.",
            buckets=(1, 10, 100, 500, 1000, 5000),
            registry=r,
        )

        self._resources(r)

    def _resources(self, r: CollectorRegistry) -> None:
        """Bounded resources and degradation: sizes, idle users, cache, outages, logs."""
        self.oversized_records = Counter(
            "streamtags_oversized_records_total",
            "Records over the producer's size limit, refused and dead-lettered instead "
            "(kind: state, tag_change, coupon_trigger, dead_letter).",
            ["kind"],
            registry=r,
        )
        self.idle_users_deleted = Counter(
            "streamtags_idle_users_deleted_total",
            "User states deleted (tombstoned) after the longest rule horizon without activity.",
            registry=r,
        )
        self.cache_bytes = Gauge(
            "streamtags_state_cache_bytes",
            "Estimated memory of the cached user states of all partitions.",
            registry=r,
        )
        self.cache_evictions = Counter(
            "streamtags_state_cache_evictions_total",
            "Clean user states evicted from memory to stay within the cache budget.",
            registry=r,
        )
        self.dependency_up = Gauge(
            "streamtags_dependency_up",
            "1 while the dependency answers, 0 during an outage.",
            ["dependency"],
            registry=r,
        )
        self.dependency_down_seconds = Counter(
            "streamtags_dependency_down_seconds_total",
            "Wall-clock seconds the dependency has been unreachable.",
            ["dependency"],
            registry=r,
        )
        self.log_records_held = Counter(
            "streamtags_log_records_held_total",
            "Repeated warning and error log records held back (logged once per interval).",
            ["logger"],
            registry=r,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
