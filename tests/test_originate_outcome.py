"""A click-to-call's status ends with how its call went, through `pbxcrm run` (the Service):
HTTP request -> Originate to the fake Asterisk replaying the recording -> the recorded call
-> `GET /api/v1/originate/{id}` answers `ended` with outcome, talk seconds and call id."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ari_app.app.service import Service
from ari_app.app.settings import Settings
from crm.store.sqlite import Store
from tests.fakes.ami_pbx import FakePbx
from tests.recordings import ami_path
from tests.test_http_support import CRM_TOKEN, bearer


def settings_for(tmp_path: Path, pbx_port: int) -> Settings:
    return Settings.model_validate(
        {
            "pbx": {
                "ami": {
                    "host": "127.0.0.1",
                    "port": pbx_port,
                    "username": "crm",
                    "password": "crmsecret",
                }
            },
            "store": {"path": str(tmp_path / "pbxcrm.sqlite3")},
            "http": {
                "host": "127.0.0.1",
                "port": 0,
                "clients": [{"name": "crm", "token": CRM_TOKEN, "routes": ["originate"]}],
            },
            "agi": {"enabled": False, "survey_spool": str(tmp_path / "spool.jsonl")},
        }
    )


async def click_to_call(tmp_path: Path, scenario: str, recorded_id: str) -> dict[str, Any]:
    pbx = FakePbx(ami_path(scenario))  # the stream waits for our Originate
    await pbx.start()
    service = Service(settings_for(tmp_path, pbx.port))
    try:
        await service.start()
        assert service.originate is not None and service.ami is not None
        await service.ami.wait_connected(5)
        # The recording's channel carries CRM_CALL_ID=<recorded id>: the request must have it.
        service.originate._new_id = lambda: recorded_id
        base = f"http://127.0.0.1:{service.http_port}/api/v1/originate"
        async with aiohttp.ClientSession() as http:
            async with http.post(
                base, json={"extension": "101", "number": "89161234567"}, headers=bearer()
            ) as response:
                assert response.status == 202, await response.text()
                assert (await response.json())["id"] == recorded_id
            async with asyncio.timeout(15):
                while True:
                    async with http.get(f"{base}/{recorded_id}", headers=bearer()) as response:
                        status = await response.json()
                    if status["state"] == "ended":
                        break
                    await asyncio.sleep(0.05)
    finally:
        await service.stop()
        await pbx.stop()
    return status


@pytest.mark.parametrize(
    ("scenario", "recorded_id", "call_id", "outcome", "reason"),
    [
        ("click_to_call_originate", "c2c-0001", "1795418031.8", "answered", None),
        (
            "click_to_call_agent_no_answer",
            "c2c-0002",
            "1795420573.2",
            "no-answer",
            "agent did not answer",
        ),
        ("click_to_call_client_busy", "c2c-0003", "1796144714.39", "busy", None),
    ],
)
async def test_the_status_ends_with_the_calls_outcome(
    tmp_path: Path,
    scenario: str,
    recorded_id: str,
    call_id: str,
    outcome: str,
    reason: str | None,
) -> None:
    status = await click_to_call(tmp_path, scenario, recorded_id)
    assert (status["call_id"], status["outcome"], status["reason"]) == (call_id, outcome, reason)
    assert status["ended_at"] is not None
    if outcome == "answered":
        assert status["talk_seconds"] == pytest.approx(6.0, abs=0.05)
    else:
        assert status["talk_seconds"] == 0.0
    # Kept in the store: a restarted pbxcrm answers the same.
    store = await Store.open(settings_for(tmp_path, 1).store)
    try:
        stored = await store.get_originate(recorded_id)
    finally:
        await store.close()
    assert stored is not None and stored.state == "ended"
    assert stored.request is not None
    assert (stored.request["call_id"], stored.request["outcome"]) == (call_id, outcome)
