"""Click-to-call over ARI: the same OriginateService and outcomes as over AMI (fake ARI).

The success path replays ari/ari_originate_click_to_call.jsonl with the recorded channel id
`c2c-0001` replaced by the request's id. What happens after the agent answers (our
`POST /channels/{id}/continue` into the dialplan, which dials the client) is not recorded: the
lab application hung the agent up instead. The "agent does not answer" events are hand-built
from the recorded Dial/ChannelDestroyed messages with the dialstatus/cause of the AMI recording
click_to_call_agent_no_answer.ami (NOANSWER, cause 19).
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from ari_app.originate.ari_backend import AriOriginateBackend
from ari_app.originate.model import OriginateState, PbxUnavailable
from ari_app.originate.service import OriginateService
from ari_app.originate.settings import OriginateSettings
from ari_app.pbx.ari.client import AriClient
from ari_app.pbx.ari.stasis import StasisApp
from ari_app.pbx.settings import AriSettings
from tests.fakes.ari_server import FakeAri, recorded_ari_messages

TIMEOUT = 5.0


class Rig:
    def __init__(self, fake: FakeAri) -> None:
        self.fake = fake
        settings = AriSettings(
            url=fake.url, username="crm", password=SecretStr("crmsecret"), app="crm"
        )
        self.client = AriClient(settings, on_event=lambda e: None, on_stasis=self._on_stasis)
        self.backend = AriOriginateBackend(self.client)
        self.service = OriginateService(
            OriginateSettings(), self.backend, agent_pattern=r"^\d{2,5}$"
        )
        self.backend.bind(self.service)
        self.app = StasisApp(self.client, context=None, originate=self.backend)  # type: ignore[arg-type]
        self.changed = asyncio.Event()

    def _on_stasis(self, event: Any) -> None:
        self.app.handle(event)
        self.changed.set()

    async def until(self, predicate, timeout: float = TIMEOUT) -> None:
        async def wait() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), timeout)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with FakeAri() as fake:
        r = Rig(fake)
        await r.client.start()
        await r.client.wait_connected(TIMEOUT)
        try:
            yield r
        finally:
            await r.backend.close()
            await r.service.close()
            await r.client.stop()


def originate_messages(originate_id: str) -> list[dict[str, Any]]:
    return [
        json.loads(json.dumps(m).replace("c2c-0001", originate_id))
        for m in recorded_ari_messages("ari_originate_click_to_call")
    ]


async def test_click_to_call_sends_the_recorded_post_channels_request(rig: Rig) -> None:
    record = await rig.service.submit("101", "89161234567", client="crm")
    request = rig.fake.find("POST", "/ari/channels")
    assert request is not None
    assert request.query == {
        "endpoint": "PJSIP/101",
        "app": "crm",
        "appArgs": f"click2call,{record.dial_number}",
        "callerId": f'"Click-to-call {record.dial_number}" <101>',
        "timeout": "30",
        "channelId": record.id,
    }
    assert request.body == {"variables": {"CRM_CALL_ID": record.id}}
    assert record.state is OriginateState.RINGING_AGENT
    assert record.uniqueid == record.id


async def test_the_agent_answering_connects_the_request_and_sends_the_agent_to_dial_the_client(
    rig: Rig,
) -> None:
    record = await rig.service.submit("101", "89161234567", client="crm")
    for message in originate_messages(record.id):
        if message["type"] == "ChannelHangupRequest":
            break  # the lab app hung up here; ours continues into the dialplan instead
        await rig.fake.send(message)
    await rig.until(lambda: record.state is OriginateState.CONNECTED)
    cont = await rig.fake.wait_request("POST", f"/ari/channels/{record.id}/continue")
    assert cont.query == {
        "context": "from-internal",
        "extension": record.dial_number,
        "priority": "1",
    }
    assert record.uniqueid == record.id


async def test_an_agent_who_does_not_answer_fails_the_request_as_over_ami(rig: Rig) -> None:
    record = await rig.service.submit("101", "89161234567", client="crm")
    messages = originate_messages(record.id)
    ringing = [m for m in messages if m["type"] == "Dial" and m["dialstatus"] in ("", "RINGING")]
    no_answer = copy.deepcopy(ringing[-1])
    no_answer["dialstatus"] = "NOANSWER"
    destroyed = copy.deepcopy(next(m for m in messages if m["type"] == "ChannelDestroyed"))
    destroyed.update(cause=19, cause_txt="No user responding")
    for message in [*ringing, no_answer, destroyed]:
        await rig.fake.send(message)
    await rig.until(lambda: record.state is OriginateState.AGENT_NO_ANSWER)
    assert record.reason == "agent did not answer"
    assert rig.fake.find("POST", f"/ari/channels/{record.id}/continue") is None


async def test_a_channel_destroyed_before_the_answer_fails_the_request_by_its_cause(
    rig: Rig,
) -> None:
    record = await rig.service.submit("101", "89161234567", client="crm")
    destroyed = copy.deepcopy(
        next(m for m in originate_messages(record.id) if m["type"] == "ChannelDestroyed")
    )
    destroyed.update(cause=17, cause_txt="User busy")
    await rig.fake.send(destroyed)
    await rig.until(lambda: record.state is OriginateState.AGENT_BUSY)


async def test_ari_refusing_the_originate_fails_the_request_with_aris_message(rig: Rig) -> None:
    rig.fake.fail_paths[("POST", "/ari/channels")] = (400, "Endpoint parameter not provided")
    with pytest.raises(PbxUnavailable, match="Endpoint parameter not provided"):
        await rig.service.submit("101", "89161234567", client="crm")


async def test_a_click2call_channel_nobody_requested_is_hung_up(rig: Rig) -> None:
    stray = next(
        m
        for m in recorded_ari_messages("ari_originate_click_to_call")
        if m["type"] == "StasisStart"
    )
    await rig.fake.send(stray)
    request = await rig.fake.wait_request("DELETE", "/ari/channels/c2c-0001")
    assert request.query == {"reason": "normal"}
