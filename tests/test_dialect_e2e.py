"""End to end: recorded AMI traffic over TCP -> pbxcrm -> two CRM dialects at once.

The fake PBX replays the capture over a real socket; pbxcrm runs as `pbxcrm run` would
(ari_app.app.service.Service) with a Salesforce and a Creatio block in its config; both CRMs
are fakes enforcing their vendor documents. The exact requests each received are asserted.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ari_app.app.service import Service
from ari_app.app.settings import Settings
from tests.fakes.ami_pbx import FakePbx
from tests.fakes.crm_creatio import LOGIN, FakeCreatio
from tests.fakes.crm_fixdigital import FakeFixDigital
from tests.fakes.crm_salesforce import DROPPED, EVENT, TOKEN, WRAPUP, FakeSalesforce
from tests.recordings import ami_path

CREATIO_TOKEN = "who-calls-token-42"
REST = f"/0/rest/OmniWhoCallsService/{CREATIO_TOKEN}"


def settings(tmp_path: Path, pbx_port: int, crm: list[dict]) -> Settings:
    return Settings.model_validate(
        {
            "pbx": {
                "id": "lab",
                "ami": {
                    "host": "127.0.0.1",
                    "port": pbx_port,
                    "username": "crm",
                    "password": "crmsecret",
                    "reconnect_max_seconds": 1,
                },
            },
            "calls": {"recording_url_template": "https://pbx.example/rec/{file}"},
            "store": {"path": str(tmp_path / "pbxcrm.sqlite3")},
            "outbox": {
                "base_delay_seconds": 0.05,
                "max_delay_seconds": 0.2,
                "poll_interval_seconds": 0.05,
            },
            "http": {"enabled": False},
            "agi": {"enabled": False},
            "crm": crm,
        }
    )


def salesforce_block(url: str) -> dict:
    return {
        "type": "salesforce",
        "base_url": url,
        "auth": {
            "mode": "oauth2",
            "token_url": f"{url}{TOKEN}",
            "client_id": "3MVG9-client",
            "client_secret": "sf-client-secret",
        },
    }


def creatio_block(url: str) -> dict:
    return {
        "type": "creatio",
        "base_url": url,
        "token": CREATIO_TOKEN,
        "username": "Supervisor",
        "password": "creatio-pass",
    }


async def wait_for(condition, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def run(tmp_path: Path, scenario: str, crm: list[dict], done) -> None:
    pbx = FakePbx(ami_path(scenario), await_actions=True)
    await pbx.start()
    service = Service(settings(tmp_path, pbx.port, crm))
    try:
        await service.start()
        # Not pbx.wait_finished(): the recorded Goodbye only answers our Logoff at stop().
        await wait_for(done)
    finally:
        await service.stop()
        await pbx.stop()


async def test_a_recorded_answered_recorded_call_reaches_salesforce_and_creatio(tmp_path):
    async with FakeSalesforce() as sf, FakeCreatio(token=CREATIO_TOKEN) as creatio:
        await run(
            tmp_path,
            "inbound_answered_recorded",
            [salesforce_block(sf.url), creatio_block(creatio.url)],
            lambda: len(sf.requests) >= 2 and len(creatio.requests_to("PushHistoryData")) >= 1,
        )

    assert sf.rejections == [] and creatio.rejections == []
    assert [r.path for r in sf.requests] == [TOKEN, WRAPUP]
    wrapup = sf.requests[1].json()
    assert wrapup["callType"] == "Inbound"
    assert wrapup["callingNumber"] == "+79037654321"
    assert wrapup["calledNumber"] == "4951112234"
    assert wrapup["agentExtension"] == "7181"
    assert wrapup["terminatingParty"] == "Customer"
    assert wrapup["callRecordingURL"].endswith("1795418967.2.wav")
    assert wrapup["startTime"].startswith("2026-11-23T07:29:2")

    assert [r.method + " " + r.path.rsplit("/", 1)[-1] for r in creatio.requests] == [
        "POST Login",
        "GET RingingEventHandler",
        "GET RingingEventHandler",
        "GET RingingEventHandler",
        "POST PushHistoryData",
    ]
    assert [dict(r.query)["eventName"] for r in creatio.requests[1:4]] == [
        "ringing",
        "answer",
        "hangup",
    ]
    history = creatio.requests[4]
    assert dict(history.query) == {
        "id": "1795418967.2",
        "callerid": "79037654321",
        "user": "7181",
        "event": "incoming",
        "duration": "5",
    }
    assert history.json()["FILES"][0].endswith("1795418967.2.wav")
    assert creatio.requests[0].path == LOGIN


@pytest.mark.parametrize(
    ("scenario", "caller", "path"),
    [
        ("inbound_abandoned_while_ringing", "+79853334455", DROPPED),
        ("inbound_no_answer_voicemail", "+79262223344", EVENT),
    ],
)
async def test_recorded_unanswered_calls_reach_salesforce_as_dropped_or_voicemail(
    tmp_path, scenario, caller, path
):
    async with FakeSalesforce() as sf:
        await run(tmp_path, scenario, [salesforce_block(sf.url)], lambda: len(sf.requests) >= 2)
    assert sf.rejections == []
    assert [r.path for r in sf.requests] == [TOKEN, path]
    body = sf.requests[1].json()
    if path == DROPPED:
        assert (body["callingNumber"], body["creExtension"]) == (caller, "7181")
    else:
        assert caller in body["Subject"]


async def test_a_recorded_inbound_call_reaches_fixdigital(tmp_path):
    async with FakeFixDigital() as fd:
        block = {
            "type": "fixdigital",
            "url": f"{fd.url}/webservice.php",
            "client_id": "10",
            "default_region": "RU",
        }
        await run(
            tmp_path, "inbound_answered_caller_hangs_up", [block], lambda: len(fd.requests) >= 2
        )
    assert [r.raw_path for r in fd.requests] == [
        "/webservice.php?operation=incomingCall&sExt=7181&sNumber=89031234567&ClientId=10",
        "/webservice.php?operation=incomingCallAnswered&sExt=7181&sNumber=89031234567&ClientId=10",
    ]
