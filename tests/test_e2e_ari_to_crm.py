"""`pbxcrm run` with `pbx.source = "ari"`: the recorded ARI events give the CRM the same call,
step for step, as the AMI capture of the same call."""

from __future__ import annotations

from pathlib import Path

import pytest

from ari_app.fake_pbx import FakePbx
from ari_app.service import Service
from ari_app.settings import Settings
from tests.fakes.ari_server import FakeAri
from tests.recordings import ami_path
from tests.test_e2e_ami_to_crm import WebhookCrm, wait_for

COMPARED = ("call_id", "direction", "caller_number", "called_number", "agent_extension",
            "disposition", "terminating_party", "voicemail", "recording_url")


def settings_for(tmp_path: Path, crm_url: str, **pbx: object) -> Settings:
    return Settings.model_validate(
        {
            "pbx": {"id": "lab", **pbx},
            "store": {"path": str(tmp_path / "pbxcrm.sqlite3")},
            "outbox": {"base_delay_seconds": 0.05, "poll_interval_seconds": 0.05},
            "http": {"enabled": False},
            "agi": {"enabled": False, "survey_spool": str(tmp_path / "spool.jsonl")},
            "crm": [{"type": "webhook", "name": "hook", "url": f"{crm_url}/events"}],
        }
    )


async def crm_steps_from_ari(tmp_path: Path, scenario: str, count: int) -> list[dict]:
    crm = WebhookCrm()
    await crm.start()
    ari = FakeAri()
    await ari.start()
    service = Service(settings_for(
        tmp_path / "ari", crm.url, source="ari",
        ari={"url": ari.url, "username": "crm", "password": "crmsecret", "app": "crm"},
    ))
    try:
        await service.start()
        await ari.wait_for(lambda: ari.open_websockets > 0, timeout=10)
        await ari.wait_request("GET", "/ari/channels", timeout=10)
        await ari.replay(scenario)
        await wait_for(lambda: len(crm.events()) >= count)
    finally:
        await service.stop()
        await ari.stop()
        await crm.stop()
    return crm.events()


async def crm_steps_from_ami(tmp_path: Path, scenario: str, count: int) -> list[dict]:
    crm = WebhookCrm()
    await crm.start()
    pbx = FakePbx(ami_path(scenario))
    await pbx.start()
    service = Service(settings_for(
        tmp_path / "ami", crm.url,
        ami={"port": pbx.port, "username": "crm", "password": "crmsecret"},
    ))
    try:
        await service.start()
        await wait_for(lambda: len(crm.events()) >= count)
    finally:
        await service.stop()
        await pbx.stop()
        await crm.stop()
    return crm.events()


@pytest.mark.parametrize(
    "scenario", ["inbound_answered_caller_hangs_up", "inbound_answered_agent_hangs_up"]
)
async def test_ari_source_gives_the_crm_what_the_ami_source_gives(
    tmp_path: Path, scenario: str
) -> None:
    (tmp_path / "ari").mkdir()
    (tmp_path / "ami").mkdir()
    from_ari = await crm_steps_from_ari(tmp_path, scenario, 4)
    from_ami = await crm_steps_from_ami(tmp_path, scenario, 4)
    assert [(e["seq"], e["kind"]) for e in from_ari] == [(e["seq"], e["kind"]) for e in from_ami]
    ari_call, ami_call = from_ari[-1]["call"], from_ami[-1]["call"]
    assert ari_call["source"] == "ari" and ami_call["source"] == "ami"
    for name in COMPARED:
        assert ari_call[name] == ami_call[name], name
    assert ari_call["talk_seconds"] == pytest.approx(ami_call["talk_seconds"], abs=0.01)
    assert ari_call["ring_seconds"] == pytest.approx(ami_call["ring_seconds"], abs=0.01)
