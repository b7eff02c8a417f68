"""Generic JSON webhook: the CallEvent as JSON, an Idempotency-Key, optional bearer token."""

from __future__ import annotations

import pytest
from aiohttp import web

from crm.dialects.base import DeliveryError
from tests.fakes import crm_scenarios as scenarios
from tests.fakes.crm_harness import adapter_from_toml, client_session, deliver_wanted
from tests.fakes.crm_server import FakeCrm, require


class FakeWebhook(FakeCrm):
    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/hook", self.hook)

    async def hook(self, request: web.Request) -> web.Response:
        require(request.headers.get("Authorization") == "Bearer hook-token-1", "bearer token")
        require(bool(request.headers.get("Idempotency-Key")), "Idempotency-Key header")
        require(request.content_type == "application/json", "JSON body")
        return web.Response(status=204)


@pytest.fixture
async def http():
    async with client_session() as session:
        yield session


async def test_every_lifecycle_step_is_posted_with_its_idempotency_key(http):
    async with FakeWebhook() as hook:
        adapter = adapter_from_toml(
            f"""
[[crm]]
type = "webhook"
url = "{hook.url}/hook"
bearer_token = "hook-token-1"
headers = {{ X-Source = "pbxcrm" }}
""",
            http,
        )
        events = scenarios.answered_recorded()
        await deliver_wanted(adapter, events)

    assert hook.rejections == []
    assert [r.headers["Idempotency-Key"] for r in hook.requests] == [
        f"webhook:{e.event_id}" for e in events
    ]
    bodies = [r.json() for r in hook.requests]
    assert [b["kind"] for b in bodies] == [
        "ringing",
        "answered",
        "leg_ended",
        "hangup",
        "completed",
    ]
    assert bodies[-1]["call"]["recording_url"] == (
        "https://pbx.example.com/recordings/1795418967.2.wav"
    )
    assert bodies[-1]["event_id"] == "default:1795418967.2:5:completed"
    assert hook.requests[0].headers["X-Source"] == "pbxcrm"


async def test_a_webhook_limited_to_some_events_skips_the_others(http):
    async with FakeWebhook() as hook:
        adapter = adapter_from_toml(
            f'[[crm]]\ntype = "webhook"\nurl = "{hook.url}/hook"\n'
            'bearer_token = "hook-token-1"\nevents = ["completed"]\n',
            http,
        )
        await deliver_wanted(adapter, scenarios.answered_recorded())
    assert [r.json()["kind"] for r in hook.requests] == ["completed"]


async def test_a_refused_connection_is_a_retryable_error():
    async with client_session() as http:
        async with FakeWebhook() as hook:
            url = hook.url
        adapter = adapter_from_toml(f'[[crm]]\ntype = "webhook"\nurl = "{url}/hook"\n', http)
        [event, *_] = scenarios.answered_recorded()
        with pytest.raises(DeliveryError) as caught:
            await adapter.deliver(event, "k")
    assert caught.value.retryable is True
