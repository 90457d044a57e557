"""The worker's web pages: ``GET /v1/users/{user_id}/tags``, ``/metrics``, ``/health``.

Tags are served from Redis through the lookup client, never from worker
memory (Faust's own table and router pages are switched off in
:mod:`streamtags.live.app`).

With a ``token`` the tag lookup and ``/metrics`` answer only requests that
carry ``Authorization: Bearer <token>`` (compared in constant time) and
give everyone else 401; ``/health`` stays open, so probes need no secret,
and says nothing about users. With ``evidence=False`` the lookup leaves out
each tag's ``evidence`` (IP addresses, countries, card fingerprints).

``/health`` always answers HTTP 200 while the worker runs; its body says
``"status": "ok"`` or ``"status": "degraded"`` with the dependencies that
are down (``"degraded": ["kafka", "redis"]``), see
:mod:`streamtags.live.health` for why a dependency outage is not a 503.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import faust
from faust.web import Request, Response, View

from streamtags.live.metrics import Metrics

__all__ = ["TagLookup", "bearer_allows", "register_pages", "without_evidence"]


class TagLookup(Protocol):
    """Where the lookup page reads tags (:class:`~streamtags.serving.lookup.AsyncTagClient`)."""

    async def tags(
        self, user_id: str, *, default: list[dict[str, Any]] | None = None
    ) -> list[dict[str, Any]]:
        """The user's live tags, or ``default`` when the store failed."""
        ...


def bearer_allows(authorization: str | None, token: str | None) -> bool:
    """Whether an ``Authorization`` header value passes; everything passes without a token.

    The comparison takes the same time however much of the token matches.
    """
    if token is None:
        return True
    scheme, _, offered = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(offered.strip().encode(), token.encode())


def without_evidence(tags: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tags with each one's ``evidence`` left out."""
    return [{key: value for key, value in tag.items() if key != "evidence"} for tag in tags]


def register_pages(
    app: faust.App,
    *,
    lookup: TagLookup,
    metrics: Metrics,
    health: Callable[[], dict[str, Any]],
    token: str | None = None,
    evidence: bool = True,
) -> None:
    """Add the three pages to ``app``; ``health`` builds the ``/health`` body on each call
    (always served with HTTP 200).

    ``token``: the bearer token the lookup and ``/metrics`` demand (None: open).
    ``evidence``: whether the lookup shows each tag's evidence.
    """

    def refusal(view: View, request: Request) -> Response | None:
        headers: Mapping[str, str] = request.headers
        if bearer_allows(headers.get("Authorization"), token):
            return None
        return view.json(
            {"error": "a valid 'Authorization: Bearer <token>' header is required"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="streamtags"'},
        )

    @app.page("/v1/users/{user_id}/tags")
    class UserTagsView(View):
        async def get(self, request: Request, user_id: str) -> Response:
            if (refused := refusal(self, request)) is not None:
                return refused
            failed: list[Any] = []
            tags = await lookup.tags(user_id, default=failed)
            if tags is failed:
                return self.json({"user_id": user_id, "error": "tag store unavailable"}, status=503)
            return self.json(
                {"user_id": user_id, "tags": tags if evidence else without_evidence(tags)}
            )

    @app.page("/metrics")
    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            if (refused := refusal(self, request)) is not None:
                return refused
            return self.bytes(metrics.render(), content_type="text/plain; version=0.0.4")

    @app.page("/health")
    class HealthView(View):
        async def get(self, request: Request) -> Response:
            return self.json(health())

    _ = (UserTagsView, MetricsView, HealthView)
