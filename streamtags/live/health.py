"""Whether Kafka and Redis answer: said once per outage, shown on ``/health`` and in metrics.

A dependency is *down* from the first failure anyone reports (the Kafka
probe, a producer delivery, a Redis write) until the next success. Each
outage is logged exactly twice: one WARNING when it starts and one INFO
when it ends, with its length; the failures in between only count.

- ``/health`` answers HTTP 200 with ``{"status": "ok", "degraded": []}``,
  or ``{"status": "degraded", "degraded": ["kafka", ...]}`` while a
  dependency is down. Always 200: the worker rides out both outages
  (Kafka: it waits and retries; Redis: tagging to Kafka goes on), so a
  liveness probe must not restart it; alert on the body or the metrics.
- ``streamtags_dependency_up{dependency}``: 1 or 0 now;
  ``streamtags_dependency_down_seconds_total{dependency}``: wall-clock
  seconds of outage so far (grows during an outage, each time
  :meth:`DependencyHealth.account` runs).

:class:`KafkaProbe` asks the broker for cluster metadata through the app's
own producer client (so it uses the worker's security settings), with a
short timeout: the consumer and producer retry quietly for minutes, so a
probe is what notices a dead broker within seconds.

:class:`RedisProbe` sets two marker keys on every check and so notices both an
outage (even when no tag changes) and a Redis that came back without its data
(restarted empty, flushed, evicted): the worker's own marker, which lives a
minute and is renewed each time, and the app's marker, which never lapses (for
a worker that starts after the loss). Restoring the lost tags is the Redis
projection's job (:mod:`streamtags.serving.projection`), which keeps its own marker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio as aioredis

from streamtags.live.metrics import Metrics

__all__ = ["DEPENDENCIES", "DependencyHealth", "KafkaProbe", "RedisProbe"]

log = logging.getLogger("streamtags.live.health")

#: The dependencies whose outages the worker reports.
DEPENDENCIES = ("kafka", "redis")


class DependencyHealth:
    """Up or down per dependency, with the one WARNING and one INFO per outage."""

    def __init__(self, metrics: Metrics, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics = metrics
        #: wall clock, seconds (monotonic)
        self.clock = clock
        self._down_since: dict[str, float] = {}
        self._accounted_to: dict[str, float] = {}
        #: failures reported per dependency during the current outage
        self.failures: dict[str, int] = {}
        for name in DEPENDENCIES:
            metrics.dependency_up.labels(name).set(1)

    def failed(self, name: str, reason: object) -> None:
        """``name`` failed just now; the first failure of an outage is logged."""
        if name in self._down_since:
            self.failures[name] += 1
            return
        now = self.clock()
        self._down_since[name] = self._accounted_to[name] = now
        self.failures[name] = 1
        self.metrics.dependency_up.labels(name).set(0)
        log.warning(
            "%s is unreachable (%s); working on and retrying until it answers", name, reason
        )

    def ok(self, name: str) -> None:
        """``name`` answered just now; ends its outage, if any, with one INFO line."""
        since = self._down_since.get(name)
        if since is None:
            return
        self.account()
        del self._down_since[name], self._accounted_to[name]
        self.metrics.dependency_up.labels(name).set(1)
        log.info(
            "%s answers again after %.1f s down (%d failures)",
            name,
            self.clock() - since,
            self.failures.pop(name),
        )

    def account(self) -> None:
        """Add the outage time since the last call to the down-seconds counter."""
        now = self.clock()
        for name, accounted_to in self._accounted_to.items():
            self.metrics.dependency_down_seconds.labels(name).inc(max(0.0, now - accounted_to))
            self._accounted_to[name] = now

    def degraded(self) -> list[str]:
        """The dependencies down now, sorted."""
        return sorted(self._down_since)

    def status(self) -> dict[str, Any]:
        """The health part of the ``/health`` body (see the module docstring)."""
        degraded = self.degraded()
        return {"status": "degraded" if degraded else "ok", "degraded": degraded}


class KafkaProbe:
    """One cheap metadata request to the broker, through an aiokafka client.

    ``client`` returns the client to ask (the app's producer client), or
    None while there is none yet (then nothing is known).
    """

    def __init__(self, client: Callable[[], Any | None], *, timeout_s: float) -> None:
        self.client = client
        #: how long the broker may take to answer, seconds
        self.timeout_s = timeout_s

    async def check(self, health: DependencyHealth) -> None:
        """Ask once and report the answer (or its absence) to ``health``."""
        client = self.client()
        if client is None:
            return
        try:
            await asyncio.wait_for(client.fetch_all_metadata(), timeout=self.timeout_s)
        except Exception as exc:  # any failure to answer: refused, timed out, protocol error
            health.failed("kafka", exc if str(exc) else type(exc).__name__)
            return
        health.ok("kafka")


class RedisProbe:
    """Two marker keys, set on every check: says whether Redis lost its data.

    ``worker_key`` is this worker's (set with ``SET ... EX``, renewed on every
    check, so it lapses ``marker_ttl_s`` after the worker stops); ``app_key``
    is shared by the app's workers and never lapses. Redis lost its data since
    the last check when the worker's marker is gone, or, at the first check,
    when the app's marker is.
    """

    def __init__(
        self,
        *,
        redis_url: str,
        worker_key: str,
        app_key: str,
        timeout_s: float,
        marker_ttl_s: int = 60,
    ) -> None:
        self.worker_key = worker_key
        self.app_key = app_key
        #: seconds
        self.timeout_s = timeout_s
        self.marker_ttl_s = marker_ttl_s
        self._redis = aioredis.Redis.from_url(
            redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._checked = False

    async def check(self, health: DependencyHealth) -> bool:
        """Ask once, report the answer to ``health``; True when Redis lost its data."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(self.worker_key, b"1", ex=self.marker_ttl_s, get=True)
                pipe.set(self.app_key, b"1", get=True)
                worker_had, app_had = await asyncio.wait_for(pipe.execute(), self.timeout_s)
        except (redis.RedisError, OSError, TimeoutError) as exc:
            health.failed("redis", exc)
            return False
        health.ok("redis")
        first, self._checked = not self._checked, True
        return app_had is None if first else worker_had is None

    async def close(self) -> None:
        """Release the connection."""
        await self._redis.aclose()
