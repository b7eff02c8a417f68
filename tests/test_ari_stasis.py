"""The Stasis application runs the AGI package's IVR scripts over ARI (fake ARI on 127.0.0.1).

Every StasisStart here is the recorded one of ari/stasis_crm_inbound.jsonl with its `args`
changed to name a script (the lab dialplan ran `Stasis(crm,inbound,...)`; no recording has
`Stasis(crm,caller_check)` or `Stasis(crm,survey,...)`). DTMF events are hand-built (see
tests/fakes/ari_server.py): no ARI recording holds a ChannelDtmfReceived.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from agi.context import ScriptContext, SurveyResult, build_script_context
from agi.settings import AgiSettings
from ari_app.pbx.ari.client import AriClient
from ari_app.pbx.ari.stasis import StasisApp
from ari_app.pbx.settings import AriSettings
from tests.fakes.ari_server import FakeAri, Request, recorded_ari_messages

TIMEOUT = 5.0
CHANNEL = "1795418059.12"


def stasis_start(*args: str) -> dict[str, Any]:
    start = next(
        m for m in recorded_ari_messages("stasis_crm_inbound") if m["type"] == "StasisStart"
    )
    start = copy.deepcopy(start)
    start["args"] = list(args)
    return start


def recorded(kind: str) -> dict[str, Any]:
    return next(m for m in recorded_ari_messages("stasis_crm_inbound") if m["type"] == kind)


class Harness:
    def __init__(self, fake: FakeAri, context: ScriptContext) -> None:
        self.fake = fake
        settings = AriSettings(
            url=fake.url, username="crm", password=SecretStr("crmsecret"), app="crm"
        )
        self.client = AriClient(settings, on_event=lambda e: None, on_stasis=self._on_stasis)
        self.app = StasisApp(self.client, context)

    def _on_stasis(self, event: Any) -> None:
        self.app.handle(event)

    async def run(self, *args: str) -> str:
        await self.fake.send(stasis_start(*args))
        await self.fake.wait_for(
            lambda: self.app.active_sessions > 0 or CHANNEL in self.app.outcomes
        )
        await self.app.wait_idle(TIMEOUT)
        return self.app.outcomes[CHANNEL]

    def variables_set(self) -> dict[str, str]:
        return {
            r.query["variable"]: r.query["value"]
            for r in self.fake.requests
            if r.method == "POST" and r.path == f"/ari/channels/{CHANNEL}/variable"
        }

    def played(self) -> list[str]:
        return [
            r.query["media"]
            for r in self.fake.requests
            if r.method == "POST" and r.path == f"/ari/channels/{CHANNEL}/play"
        ]

    def did(self, method: str, tail: str) -> bool:
        return self.fake.find(method, f"/ari/channels/{CHANNEL}{tail}") is not None


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def fake() -> AsyncIterator[FakeAri]:
    async with FakeAri() as server:
        yield server


async def harness(fake: FakeAri, context: ScriptContext) -> AsyncIterator[Harness]:
    h = Harness(fake, context)
    await h.client.start()
    await h.client.wait_connected(TIMEOUT)
    try:
        yield h
    finally:
        await h.app.close()
        await h.client.stop()


def local_lookup(http: aiohttp.ClientSession, **agi: Any) -> ScriptContext:
    contacts = [{"number": "+79031234567", "name": "Ivan Petrov", "owner_extension": "7181"}]
    return build_script_context(
        AgiSettings.model_validate(agi), [{"type": "local", "contacts": contacts}], http
    )


async def test_caller_check_in_stasis_sets_the_crm_variables_and_continues_in_the_dialplan(
    fake: FakeAri, http: aiohttp.ClientSession
) -> None:
    async for h in harness(fake, local_lookup(http)):
        outcome = await h.run("caller_check")
        assert outcome == "found"
        assert h.variables_set() == {
            "CRM_FOUND": "1",
            "CRM_LOOKUP_STATUS": "FOUND",
            "CRM_CONTACT_NAME": "Ivan Petrov",
            "CRM_OWNER_EXTENSION": "7181",
        }
        assert h.did("POST", "/continue")
        # A lookup plays nothing, so the caller is not answered (and not billed) for it.
        assert not h.did("POST", "/answer")


async def test_an_unknown_caller_reads_the_number_from_the_stasis_argument(
    fake: FakeAri, http: aiohttp.ClientSession
) -> None:
    async for h in harness(fake, local_lookup(http)):
        assert await h.run("caller_check", "+79160000000") == "notfound"
        assert h.variables_set()["CRM_FOUND"] == "0"
        assert h.did("POST", "/continue")


async def test_survey_in_stasis_answers_plays_reads_the_digit_and_queues_the_rating(
    fake: FakeAri, http: aiohttp.ClientSession
) -> None:
    ratings: list[SurveyResult] = []

    async def sink(result: SurveyResult) -> None:
        ratings.append(result)

    context = local_lookup(http)
    context.survey_sink = sink
    fake.dtmf_on_playback[(CHANNEL, "sound:beep")] = "7"
    fake.variables[(CHANNEL, "CHANNEL(linkedid)")] = CHANNEL
    async for h in harness(fake, context):
        assert await h.run("survey", "+79031234567", "q1", "7181") == "ok"
        assert h.did("POST", "/answer")  # the recorded StasisStart channel is still `Ring`
        assert h.variables_set() == {"SURVEY_RESULT": "7"}
        assert h.played()[-1] == "sound:auth-thankyou"
        assert [(r.rating, r.number, r.question, r.extension, r.linkedid) for r in ratings] == [
            (7, "+79031234567", "q1", "7181", CHANNEL)
        ]
        assert h.did("POST", "/continue")


async def test_a_caller_hanging_up_mid_survey_ends_the_script_without_continuing(
    fake: FakeAri, http: aiohttp.ClientSession
) -> None:
    fake.send_playback_events = False

    async def hang_up_on_play(request: Request) -> None:
        if request.path.endswith("/play"):
            # The recorded end of the Stasis call: hangup request, StasisEnd, destroyed.
            for kind in ("ChannelHangupRequest", "StasisEnd", "ChannelDestroyed"):
                await fake.send(recorded(kind))
            fake.gone_channels.add(CHANNEL)

    fake.on_request = hang_up_on_play
    async for h in harness(fake, local_lookup(http)):
        assert await h.run("survey", "+79031234567", "q1") == "hangup"
        assert h.variables_set() == {}
        assert not h.did("POST", "/continue")


async def test_a_missing_digit_times_out_and_the_survey_reports_no_input(
    fake: FakeAri, http: aiohttp.ClientSession
) -> None:
    context = local_lookup(http, survey={"timeout_ms": 500, "attempts": 1})
    async for h in harness(fake, context):
        assert await h.run("survey", "+79031234567", "q1") == "noinput"
        assert h.variables_set() == {}
        assert h.did("POST", "/continue")


async def test_the_recorded_stasis_call_names_no_known_script_and_is_sent_back_to_the_dialplan(
    fake: FakeAri, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    async for h in harness(fake, local_lookup(http)):
        assert await h.run("inbound", "+79031234567", "4951110002") == "unknown_script"
        assert "unknown script 'inbound'" in caplog.text
        assert h.did("POST", "/continue")


async def test_click_to_call_channels_are_left_to_the_originate_backend(
    fake: FakeAri, http: aiohttp.ClientSession
) -> None:
    started = asyncio.Event()

    class Originate:
        def handle(self, event: Any) -> None:
            if event.type == "StasisStart":
                started.set()

    async for h in harness(fake, local_lookup(http)):
        h.app = StasisApp(h.client, local_lookup(http), originate=Originate())
        await fake.send(stasis_start("click2call", "89161234567"))
        await asyncio.wait_for(started.wait(), TIMEOUT)
        assert h.app.active_sessions == 0
        assert CHANNEL not in h.app.outcomes
        assert not h.did("POST", "/continue")
