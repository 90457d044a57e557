"""The worker's pages demand the bearer token when one is set, keep /health open, and
leave evidence out of the tag lookup when told to."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import faust
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from streamtags.live.metrics import Metrics
from streamtags.live.web import TagLookup, bearer_allows, register_pages, without_evidence

TOKEN = "web-token-0123456789"
TAG = {
    "tag": "ip_hopping",
    "category": "risk",
    "expires_at": "2026-11-23T15:00:00Z",
    "evidence": {"reason": "3 countries in 1h", "figures": {"countries": 3}, "ips": ["192.0.2.7"]},
}
HEALTH = {"status": "ok", "app_id": "web-test", "partitions": [0, 1], "rebalancing": False}


class StoredTags:
    """In-memory twin of the lookup client: every user has :data:`TAG`."""

    async def tags(
        self, user_id: str, *, default: list[dict[str, Any]] | None = None
    ) -> list[dict[str, Any]]:
        return [dict(TAG)]


Get = Callable[..., Awaitable[ClientResponse]]


async def _pages(*, token: str | None, evidence: bool) -> AsyncIterator[Get]:
    app = faust.App("web-test", broker="kafka://127.0.0.1:9", web_enabled=True)
    lookup: TagLookup = StoredTags()
    register_pages(
        app, lookup=lookup, metrics=Metrics(), health=lambda: HEALTH, token=token, evidence=evidence
    )
    web: Any = app.web  # faust's aiohttp driver; its type is the abstract Web
    async with TestClient(TestServer(web.web_app)) as client:
        yield client.get


@pytest.fixture
async def guarded() -> AsyncIterator[Get]:
    async for get in _pages(token=TOKEN, evidence=False):
        yield get


@pytest.fixture
async def open_pages() -> AsyncIterator[Get]:
    async for get in _pages(token=None, evidence=True):
        yield get


@pytest.mark.parametrize("path", ["/v1/users/u1/tags", "/metrics"])
@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-token-0123456", f"Basic {TOKEN}", "Bearer", TOKEN]
)
async def test_a_request_without_the_right_bearer_token_gets_401(
    guarded: Get, path: str, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await guarded(path, headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    body = await response.text()
    assert "192.0.2.7" not in body and "streamtags_" not in body


async def test_the_right_bearer_token_opens_lookup_and_metrics(guarded: Get) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    lookup = await guarded("/v1/users/u1/tags", headers=headers)
    assert lookup.status == 200
    assert [tag["tag"] for tag in (await lookup.json())["tags"]] == ["ip_hopping"]
    metrics = await guarded("/metrics", headers=headers)
    assert metrics.status == 200
    assert "streamtags_events_consumed_total" in await metrics.text()


async def test_health_answers_without_a_token_and_names_no_user(guarded: Get) -> None:
    response = await guarded("/health")
    assert response.status == 200
    assert await response.json() == HEALTH


async def test_with_evidence_off_the_lookup_leaves_out_each_tags_evidence(guarded: Get) -> None:
    response = await guarded("/v1/users/u1/tags", headers={"Authorization": f"Bearer {TOKEN}"})
    body = await response.json()
    assert body["tags"] == [{key: value for key, value in TAG.items() if key != "evidence"}]
    assert "192.0.2.7" not in await response.text()


async def test_without_a_token_the_pages_are_open_and_show_evidence(open_pages: Get) -> None:
    lookup = await open_pages("/v1/users/u1/tags")
    assert lookup.status == 200
    assert (await lookup.json())["tags"] == [TAG]
    assert (await open_pages("/metrics")).status == 200


@pytest.mark.parametrize(
    ("authorization", "token", "allowed"),
    [
        (None, None, True),
        ("anything", None, True),
        (f"Bearer {TOKEN}", TOKEN, True),
        (f"bearer  {TOKEN} ", TOKEN, True),
        (f"Bearer {TOKEN}x", TOKEN, False),
        (f"Bearer {TOKEN[:-1]}", TOKEN, False),
        ("Bearer ", TOKEN, False),
        (None, TOKEN, False),
    ],
)
def test_bearer_allows_only_the_exact_token(
    authorization: str | None, token: str | None, allowed: bool
) -> None:
    assert bearer_allows(authorization, token) is allowed


def test_without_evidence_keeps_every_other_field() -> None:
    assert without_evidence([TAG, {"tag": "x"}]) == [
        {"tag": "ip_hopping", "category": "risk", "expires_at": "2026-11-23T15:00:00Z"},
        {"tag": "x"},
    ]
