"""Click-to-call end to end: HTTP request -> AmiClient -> fake Asterisk replaying the recording
-> recorded OriginateResponse/VarSet frames -> outcome readable over HTTP.
"""

from __future__ import annotations

import asyncio

from ari_app.originate.ami_backend import AmiOriginateBackend
from ari_app.originate.model import OriginateState
from ari_app.originate.record_log import StoreOriginateLog
from ari_app.pbx.ami.client import AmiClient
from ari_app.pbx.settings import AmiSettings
from ari_app.web.deps import HttpDeps
from crm.store.sqlite import Store
from tests.fakes.ami_pbx import FakePbx
from tests.recordings import ami_path
from tests.test_http_support import CREATIO_TOKEN, bearer, make_service, make_settings, running


async def _wait_state(server, originate_id: str, headers: dict[str, str]) -> dict:
    async def poll() -> dict:
        while True:
            async with server.session.get(
                server.url(f"/api/v1/originate/{originate_id}"), headers=headers
            ) as resp:
                body = await resp.json()
            if body["state"] not in ("pending", "ringing_agent"):
                return body
            await asyncio.sleep(0.02)

    return await asyncio.wait_for(poll(), 3)


async def _run(tmp_path, scenario: str, originate_id: str, *, via_creatio: bool = False):
    settings = make_settings(tmp_path)
    store = await Store.open(settings.store)
    pbx = FakePbx(ami_path(scenario))
    await pbx.start()
    service = None

    def on_frame(frame: dict[str, str]) -> None:
        if service is not None:
            service.on_frame(frame)

    client = AmiClient(
        AmiSettings(host="127.0.0.1", port=pbx.port, username="crm", password="crmsecret"),
        on_frame=on_frame,
    )
    ids = iter([originate_id])
    service = make_service(
        settings,
        AmiOriginateBackend(client),
        log_store=StoreOriginateLog(store),
        new_id=lambda: next(ids),
    )
    await client.start()
    try:
        await client.wait_connected(5)
        deps = HttpDeps(settings=settings, store=store, originate_service=service)
        async with running(deps) as server:
            if via_creatio:
                url = server.url(f"/webapi/{CREATIO_TOKEN}/makecall?first=101&second=89161234567")
                async with server.session.get(url) as resp:
                    assert resp.status == 200, await resp.text()
                    answer = await resp.json()
                    assert answer["success"] is True
            else:
                async with server.session.post(
                    server.url("/api/v1/originate"),
                    json={"extension": "101", "number": "+7 916 123-45-67"},
                    headers=bearer(),
                ) as resp:
                    assert resp.status == 202, await resp.text()
                    answer = await resp.json()
            assert answer["id"] == originate_id
            # The creatio client cannot read the native status route: check through the service.
            if via_creatio:
                record = await service.get(originate_id)
                await asyncio.wait_for(_final(service, originate_id), 3)
                outcome = record.public()
            else:
                outcome = await _wait_state(server, originate_id, bearer())
        await service.close()
        stored = await store.get_originate(originate_id)
        return pbx.received_actions, outcome, stored
    finally:
        await client.stop()
        await pbx.stop()
        await store.close()


async def _final(service, originate_id: str) -> None:
    while (await service.get(originate_id)).state not in (
        OriginateState.CONNECTED,
        OriginateState.AGENT_NO_ANSWER,
        OriginateState.AGENT_BUSY,
        OriginateState.FAILED,
    ):
        await asyncio.sleep(0.02)


def _originates(actions: list[dict[str, str]]) -> list[dict[str, str]]:
    return [a for a in actions if a.get("Action") == "Originate"]


async def test_a_native_click_to_call_rings_the_agent_once_and_reports_connected(tmp_path):
    actions, outcome, stored = await _run(tmp_path, "click_to_call_originate", "c2c-0001")
    (sent,) = _originates(actions)
    assert sent["Channel"] == "PJSIP/101"
    assert sent["Exten"] == "89161234567"
    assert sent["Variable"] == "CRM_CALL_ID=c2c-0001"
    assert sent["Async"] == "true"
    assert outcome["state"] == "connected"
    assert stored.state == "connected"


async def test_creatio_makecall_when_the_agent_does_not_answer_ends_agent_no_answer(tmp_path):
    actions, outcome, stored = await _run(
        tmp_path, "click_to_call_agent_no_answer", "c2c-0002", via_creatio=True
    )
    assert len(_originates(actions)) == 1
    assert outcome["state"] == "agent_no_answer"
    assert outcome["uniqueid"] == "1795420573.2"  # only the CRM_CALL_ID VarSet carries it
    assert stored.state == "agent_no_answer"
    assert stored.reason == "agent did not answer"


async def test_click_to_call_while_the_pbx_is_down_answers_503_and_sends_nothing(tmp_path):
    settings = make_settings(tmp_path)
    pbx = FakePbx(ami_path("click_to_call_originate"))
    await pbx.start()
    port = pbx.port
    await pbx.stop()  # nothing listens there any more
    client = AmiClient(AmiSettings(host="127.0.0.1", port=port), on_frame=lambda f: None)
    service = make_service(settings, AmiOriginateBackend(client), new_id=iter(["x-1"]).__next__)
    async with running(HttpDeps(settings=settings, originate_service=service)) as server:
        async with server.session.post(
            server.url("/api/v1/originate"),
            json={"extension": "101", "number": "89161234567"},
            headers=bearer(),
        ) as resp:
            assert resp.status == 503
            assert await resp.json() == {"error": "pbx unavailable"}
        async with server.session.get(
            server.url("/api/v1/originate/x-1"), headers=bearer()
        ) as resp:
            body = await resp.json()
            assert body["state"] == "failed"
            assert body["reason"].startswith("PBX unavailable")
    assert pbx.received_actions == []
    await service.close()
