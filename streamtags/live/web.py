"""The worker's web pages: ``GET /v1/users/{user_id}/tags``, ``/metrics``, ``/health``.

Tags are served from Redis through the lookup client, never from worker
memory (Faust's own table and router pages are switched off in
:mod:`streamtags.live.app`).

``/health`` always answers HTTP 200 while the worker runs; its body says
``"status": "ok"`` or ``"status": "degraded"`` with the dependencies that
are down (``"degraded": ["kafka", "redis"]``), see
:mod:`streamtags.live.health` for why a dependency outage is not a 503.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faust
from faust.web import Request, Response, View

from streamtags.live.metrics import Metrics
from streamtags.serving.lookup import AsyncTagClient

__all__ = ["register_pages"]


def register_pages(
    app: faust.App,
    *,
    lookup: AsyncTagClient,
    metrics: Metrics,
    health: Callable[[], dict[str, Any]],
) -> None:
    """Add the three pages to ``app``; ``health`` builds the ``/health`` body on each call
    (always served with HTTP 200)."""

    @app.page("/v1/users/{user_id}/tags")
    class UserTagsView(View):
        async def get(self, request: Request, user_id: str) -> Response:
            failed: list[Any] = []
            tags = await lookup.tags(user_id, default=failed)
            if tags is failed:
                return self.json({"user_id": user_id, "error": "tag store unavailable"}, status=503)
            return self.json({"user_id": user_id, "tags": tags})

    @app.page("/metrics")
    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(metrics.render(), content_type="text/plain; version=0.0.4")

    @app.page("/health")
    class HealthView(View):
        async def get(self, request: Request) -> Response:
            return self.json(health())

    _ = (UserTagsView, MetricsView, HealthView)
