"""End to end: recorded AMI bytes over TCP in, CRM HTTP requests out, for every recorded call.

The fake PBX replays the capture over a real socket (banner, login, events, the recorded answers
to our actions); pbxcrm runs exactly as `pbxcrm run` would; the CRM is a real aiohttp server.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path

import pytest
from aiohttp import web

from ari_app.app.service import Service
from ari_app.app.settings import Settings
from tests.fakes.ami_pbx import FakePbx
from tests.fakes.crm_server import FakeCrm
from tests.recordings import RECONNECT_MARKER, ami_path, frames_of


class WebhookCrm(FakeCrm):
    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/events", self._event)

    async def _event(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    def events(self) -> list[dict]:
        return [r.json() for r in self.requests if r.path == "/events"]


def make_settings(tmp_path: Path, pbx_port: int, crm_url: str, **calls: object) -> Settings:
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
            "calls": {"recording_url_template": "https://pbx.example/rec/{file}", **calls},
            "store": {"path": str(tmp_path / "pbxcrm.sqlite3")},
            "outbox": {
                "base_delay_seconds": 0.05,
                "max_delay_seconds": 0.2,
                "poll_interval_seconds": 0.05,
            },
            "http": {"enabled": False},
            "agi": {"enabled": False},
            "crm": [{"type": "webhook", "name": "hook", "url": f"{crm_url}/events"}],
        }
    )


async def wait_for(condition, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def replay(tmp_path: Path, scenario: str, *, expected_requests: int) -> list[dict]:
    # Recorded answers to Originate were asked for by another client: don't wait for them.
    await_actions = not scenario.startswith("click_to_call")
    crm = WebhookCrm()
    await crm.start()
    pbx = FakePbx(ami_path(scenario), await_actions=await_actions)
    await pbx.start()
    service = Service(make_settings(tmp_path, pbx.port, crm.url))
    try:
        await service.start()
        if scenario == "mid_call_connect_reconcile":
            # The recording's client asked for Status after CoreShowChannels, and the replay
            # waits for it there; pbxcrm itself needs only the channel list.
            await wait_for(lambda: len(crm.events()) >= 1)
            assert service.ami is not None
            await service.ami.send_action({"Action": "Status"}, timeout=5)
        # (The recorded Goodbye answers our Logoff at stop(), so the stream never "finishes".)
        await wait_for(lambda: len(crm.events()) >= expected_requests)
        # Nothing more may follow: every stored step has been delivered, none is left to send.
        assert service.pipeline is not None and service.store is not None
        await service.pipeline.drain()
        async with asyncio.timeout(15):
            while (
                await service.store.reader.execute_fetchall(
                    "SELECT count(*) FROM outbox WHERE state != 'done'"
                )
            )[0][0]:
                await asyncio.sleep(0.02)
    finally:
        await service.stop()
        await pbx.stop()
        await crm.stop()
    return crm.events()


def summary(events: list[dict]) -> list[tuple[str, int, str]]:
    return [(e["call_id"], e["seq"], e["kind"]) for e in events]


ANSWERED_INBOUND = ["ringing", "answered", "leg_ended", "hangup", "completed"]
EXPECTED = {
    "inbound_answered_caller_hangs_up": ("1795417965.0", ANSWERED_INBOUND),
    "inbound_answered_agent_hangs_up": (None, ANSWERED_INBOUND),
    "inbound_no_answer_voicemail": (
        None,
        ["ringing", "leg_ended", "voicemail", "hangup", "completed"],
    ),
    "inbound_abandoned_while_ringing": (
        None,
        ["ringing", "leg_ended", "hangup", "dropped", "completed"],
    ),
    "inbound_busy_agent": (None, ["ringing", "leg_ended", "hangup", "dropped", "completed"]),
    "inbound_answered_recorded": (None, ANSWERED_INBOUND),
    "inbound_queue_answered": (None, ["ringing", "answered", "hangup", "leg_ended", "completed"]),
    "outbound_agent_dials": (None, ["answered", "leg_ended", "hangup", "completed"]),
    "click_to_call_originate": (None, ANSWERED_INBOUND),
    "click_to_call_agent_no_answer": (None, ["ringing", "leg_ended", "hangup", "completed"]),
    "ivr_agi_survey": (None, ["hangup", "completed"]),
    "ivr_agi_caller_hangs_up": (None, ["hangup", "dropped", "completed"]),
    "mid_call_connect_reconcile": (
        "1795420539.0",
        ["answered", "hangup", "leg_ended", "completed"],
    ),
    "asterisk_restart_mid_call": ("1795420599.3", ANSWERED_INBOUND),
    "asterisk_killed_mid_call": (
        "1795420633.0",
        ["ringing", "answered", "leg_ended", "hangup", "completed"],
    ),
    # The multi-party day (the tracker tests assert their fields; here: the whole path).
    "attended_transfer_target_hangs_up": (
        "1796144610.9",
        [
            "ringing",
            "answered",
            "ringing",
            "answered",
            "leg_ended",
            "leg_ended",
            "hangup",
            "completed",
        ],
    ),
    "call_pickup": (
        "1796144686.34",
        ["ringing", "answered", "leg_ended", "hangup", "leg_ended", "completed"],
    ),
    "queue_local_members_answered": (
        "1796144659.20",
        ["ringing", "ringing", "answered", "leg_ended", "hangup", "leg_ended", "completed"],
    ),
    "click_to_call_client_busy": ("1796144714.39", ["ringing", "leg_ended", "hangup", "completed"]),
}


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
async def test_every_recorded_call_reaches_the_crm_in_order(tmp_path: Path, scenario: str) -> None:
    call_id, kinds = EXPECTED[scenario]
    events = await replay(tmp_path, scenario, expected_requests=len(kinds))
    assert [e["kind"] for e in events] == kinds
    assert [e["seq"] for e in events] == list(range(1, len(kinds) + 1))
    assert len({e["call_id"] for e in events}) == 1
    if call_id is not None:
        assert events[0]["call_id"] == call_id
    keys = [e["idempotency_key"] for e in events]
    assert len(set(keys)) == len(keys)
    final = events[-1]["call"]
    assert final["ended"] is True
    assert final["pbx_id"] == "lab"


async def test_answered_call_fields_as_the_crm_receives_them(tmp_path: Path) -> None:
    events = await replay(tmp_path, "inbound_answered_recorded", expected_requests=5)
    call = events[-1]["call"]
    assert call["direction"] == "inbound"
    assert call["caller_number"] == "+79037654321"
    assert call["called_number"] == "4951112234"
    assert call["agent_extension"] == "7181"
    assert call["disposition"] == "answered"
    assert call["terminating_party"] == "caller"
    assert call["recording_url"] == "https://pbx.example/rec/1795418967.2.wav"
    assert call["ring_seconds"] == pytest.approx(1.5, abs=0.01)
    assert call["talk_seconds"] == pytest.approx(5.0, abs=0.01)
    assert call["start_time"].endswith("Z") or call["start_time"].endswith("+00:00")


async def test_killed_asterisk_call_is_closed_after_the_reconnect(tmp_path: Path) -> None:
    events = await replay(tmp_path, "asterisk_killed_mid_call", expected_requests=5)
    call = events[-1]["call"]
    assert call["reconciled"] is True
    assert call["disposition"] == "answered"
    assert call["terminating_party"] == "system"
    # The call lasted at least until the socket dropped: past the last event Asterisk sent
    # before it was killed (the replay streams at full speed, so no upper bound is known).
    recorded = ami_path("asterisk_killed_mid_call").read_bytes()
    before_kill = recorded.split(RECONNECT_MARKER)[0]
    stamps = [float(f["Timestamp"]) for f in frames_of(before_kill) if "Timestamp" in f]
    answered = datetime.fromisoformat(call["answer_time"]).timestamp()
    ended = datetime.fromisoformat(call["end_time"]).timestamp()
    assert ended >= stamps[-1] - 0.001
    assert call["talk_seconds"] == pytest.approx(ended - answered, abs=0.002)
    assert call["end_estimated"] is True


async def test_a_click_to_call_left_ringing_by_a_killed_run_gets_its_ending_at_start(
    tmp_path: Path,
) -> None:
    """pbxcrm killed while an agent's phone rang for a click-to-call: its watchdog died with it.
    The next start fails that request (its last change is older than ring + grace), so a CRM
    polling GET /api/v1/originate/{id} sees an end; a request that just started is left alone."""
    from crm.store.sqlite import Store

    settings = make_settings(tmp_path, 9, "http://127.0.0.1:9")
    hour_ago = await Store.open(settings.store, now=lambda: time.time() - 3600)
    await hour_ago.save_originate(
        "c2c-old", agent_extension="7181", number="+79161234567", state="ringing_agent"
    )
    await hour_ago.close()
    recent = await Store.open(settings.store)
    await recent.save_originate(
        "c2c-new", agent_extension="7181", number="+79161234567", state="pending"
    )
    await recent.close()

    pbx = FakePbx(ami_path("inbound_answered_caller_hangs_up"))
    await pbx.start()
    service = Service(make_settings(tmp_path, pbx.port, "http://127.0.0.1:9"))
    try:
        await service.start()
        assert service.store is not None
        old = await service.store.get_originate("c2c-old")
        new = await service.store.get_originate("c2c-new")
    finally:
        await service.stop()
        await pbx.stop()
    assert old is not None and old.state == "failed"
    assert old.reason == "no outcome: the pbxcrm instance following it stopped"
    assert new is not None and new.state == "pending"


async def test_a_click_to_call_nobody_answered_carries_the_number_pbxcrm_dialled(
    tmp_path: Path,
) -> None:
    """pbxcrm sends the Originate itself (the fake PBX waits for it before streaming the
    recorded answer); the agent never picks up, so no PBX event names the client's number:
    every step still carries it."""
    crm = WebhookCrm()
    await crm.start()
    pbx = FakePbx(ami_path("click_to_call_agent_no_answer"), await_actions=True)
    await pbx.start()
    service = Service(make_settings(tmp_path, pbx.port, crm.url))
    try:
        await service.start()
        assert service.originate is not None and service.ami is not None
        await service.ami.wait_connected(5)
        service.originate._new_id = lambda: "c2c-0002"  # the recording's request id
        await service.originate.submit("101", "+7 916 123-45-67", client="crm")
        await wait_for(lambda: len(crm.events()) >= 4)
    finally:
        await service.stop()
        await pbx.stop()
        await crm.stop()
    events = crm.events()
    assert [e["kind"] for e in events] == ["ringing", "leg_ended", "hangup", "completed"]
    assert {e["call"]["called_number"] for e in events} == {"89161234567"}
    assert events[-1]["call"]["originate_id"] == "c2c-0002"
    assert events[-1]["call"]["disposition"] == "no-answer"
