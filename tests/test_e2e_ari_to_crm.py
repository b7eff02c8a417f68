"""`pbxcrm run` with `pbx.source = "ari"`: the recorded ARI events give the CRM the same call,
step for step, as the AMI capture of the same call."""

from __future__ import annotations

from pathlib import Path

import pytest

from ari_app.app.service import Service
from ari_app.app.settings import Settings
from tests.fakes.ami_pbx import FakePbx
from tests.fakes.ari_server import FakeAri
from tests.recordings import ami_path
from tests.test_e2e_ami_to_crm import WebhookCrm, wait_for

COMPARED = (
    "call_id",
    "direction",
    "caller_number",
    "called_number",
    "agent_extension",
    "rang_extensions",
    "disposition",
    "terminating_party",
    "voicemail",
    "recording_url",
    "queue",
)


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
    service = Service(
        settings_for(
            tmp_path / "ari",
            crm.url,
            source="ari",
            ari={"url": ari.url, "username": "crm", "password": "crmsecret", "app": "crm"},
        )
    )
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
    service = Service(
        settings_for(
            tmp_path / "ami",
            crm.url,
            ami={"port": pbx.port, "username": "crm", "password": "crmsecret"},
        )
    )
    try:
        await service.start()
        await wait_for(lambda: len(crm.events()) >= count)
    finally:
        await service.stop()
        await pbx.stop()
        await crm.stop()
    return crm.events()


@pytest.mark.parametrize(
    ("scenario", "steps"),
    [
        ("inbound_answered_caller_hangs_up", 5),
        ("inbound_answered_agent_hangs_up", 5),
        ("attended_transfer_target_hangs_up", 8),
        ("queue_local_members_answered", 7),
        ("ring_group_three_agents", 9),
        ("ari_burst_ten_inbound", 50),
    ],
)
async def test_ari_source_gives_the_crm_what_the_ami_source_gives(
    tmp_path: Path, scenario: str, steps: int
) -> None:
    (tmp_path / "ari").mkdir()
    (tmp_path / "ami").mkdir()
    from_ari = await crm_steps_from_ari(tmp_path, scenario, steps)
    from_ami = await crm_steps_from_ami(tmp_path, scenario, steps)

    def order(events: list[dict]) -> list[tuple]:
        return sorted((e["call_id"], e["seq"], e["kind"], e["extension"]) for e in events)

    assert len(from_ari) == len(from_ami) == steps
    assert order(from_ari) == order(from_ami)
    finals = {e["call_id"]: e["call"] for e in from_ami if e["kind"] == "completed"}
    for event in (e for e in from_ari if e["kind"] == "completed"):
        ari_call, ami_call = event["call"], finals[event["call_id"]]
        assert ari_call["source"] == "ari" and ami_call["source"] == "ami"
        for name in COMPARED:
            assert ari_call[name] == ami_call[name], name
        assert ari_call["talk_seconds"] == pytest.approx(ami_call["talk_seconds"], abs=0.01)
        assert ari_call["ring_seconds"] == pytest.approx(ami_call["ring_seconds"], abs=0.01)
