"""`pbxcrm replay` gives the calls `pbxcrm run` gives, from AMI and ARI captures, and tells
what it sent or would send."""

from __future__ import annotations

import io
import json
import re
import socket
from pathlib import Path
from typing import Any

from ari_app.app.replay import ReplayOptions, replay
from ari_app.app.service import Service
from ari_app.app.settings import Settings
from crm.model import CallEvent, EventKind
from tests.fakes.ami_pbx import FakePbx
from tests.fakes.crm_fixdigital import FakeFixDigital
from tests.recordings import FIXTURES, ami_path
from tests.test_cli_commands import pbxcrm
from tests.test_e2e_ami_to_crm import WebhookCrm, wait_for

# What a CRM is told about a call; start_time of a call first seen in a channel list is the
# moment pbxcrm saw it, so it differs between any two runs.
COMPARED = (
    "call_id",
    "direction",
    "caller_number",
    "called_number",
    "agent_extension",
    "answer_time",
    "end_time",
    "talk_seconds",
    "disposition",
    "terminating_party",
    "hangup_cause",
    "reconciled",
    "ended",
)


# The steps these tests follow; a webhook's default set grows with the call model.
STEPS = ["ringing", "answered", "hangup", "dropped", "completed"]


def settings_for(tmp_path: Path, crm: list[dict[str, Any]], **pbx: Any) -> Settings:
    return Settings.model_validate(
        {
            "pbx": {"ami": {"username": "crm", "password": "crmsecret"}, **pbx},
            "store": {"path": str(tmp_path / "run.sqlite3")},
            "outbox": {"base_delay_seconds": 0.05, "poll_interval_seconds": 0.05},
            "http": {"enabled": False},
            "agi": {"enabled": False, "survey_spool": str(tmp_path / "spool.jsonl")},
            "crm": crm,
        }
    )


async def run_replay(
    tmp_path: Path, capture: Path, crm: list[dict[str, Any]], **options: Any
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await replay(
        ReplayOptions(capture=capture, **options), settings_for(tmp_path, crm), out, err
    )
    return code, out.getvalue(), err.getvalue()


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


async def call_from_run(tmp_path: Path, scenario: str) -> dict[str, Any]:
    """The call `pbxcrm run` (the Service) makes of a capture served by the fake PBX, waiting
    at each recorded answer until asked, as the end-to-end tests do."""
    completed: list[CallEvent] = []
    pbx = FakePbx(ami_path(scenario))
    await pbx.start()
    settings = settings_for(
        tmp_path,
        [],
        ami={"username": "crm", "password": "crmsecret", "host": "127.0.0.1", "port": pbx.port},
    )
    service = Service(settings, send=False)
    try:
        await service.start()
        assert service.pipeline is not None and service.ami is not None
        service.pipeline.add_call_listener(
            lambda event: completed.append(event) if event.kind is EventKind.COMPLETED else None
        )
        # The recording's client also asked for Status; the stream waits for it there.
        await wait_for(
            lambda: any(a.get("Action") == "CoreShowChannels" for a in pbx.received_actions)
        )
        await service.ami.send_action({"Action": "Status"}, timeout=5)
        await wait_for(lambda: bool(completed))
    finally:
        await service.stop()
        await pbx.stop()
    return completed[0].call.model_dump(mode="json")


async def test_a_capture_starting_mid_call_gives_the_call_run_gives(tmp_path: Path) -> None:
    from_run = await call_from_run(tmp_path / "run", "mid_call_connect_reconcile")
    code, out, _ = await run_replay(
        tmp_path, ami_path("mid_call_connect_reconcile"), [], json_lines=True
    )
    assert code == 0
    [call_line] = [line for line in json_lines(out) if line["type"] == "call"]
    from_replay = call_line["call"]
    assert {key: from_replay[key] for key in COMPARED} == {key: from_run[key] for key in COMPARED}
    assert from_replay["call_id"] == "1795420539.0" and from_replay["talk_seconds"] > 10


async def test_the_channel_list_answer_comes_from_the_capture(tmp_path: Path) -> None:
    # With the recorded CoreShowChannels answer, the call is known; without it (an empty
    # channel list) the events after it would belong to no call.
    code, out, _ = await run_replay(
        tmp_path,
        ami_path("mid_call_connect_reconcile"),
        [{"type": "webhook", "name": "hook", "events": STEPS, "url": "http://127.0.0.1:9/events"}],
        json_lines=True,
    )
    kinds = [line["kind"] for line in json_lines(out) if line["type"] == "request"]
    assert code == 0 and kinds == ["answered", "hangup", "completed"]


async def test_an_ari_capture_gives_the_call_its_ami_capture_gives(tmp_path: Path) -> None:
    scenario = "inbound_answered_caller_hangs_up"
    _, ami_out, _ = await run_replay(tmp_path / "ami", ami_path(scenario), [], json_lines=True)
    code, ari_out, _ = await run_replay(
        tmp_path / "ari", FIXTURES / "ari" / f"{scenario}.jsonl", [], json_lines=True
    )
    [ami_call] = [line["call"] for line in json_lines(ami_out) if line["type"] == "call"]
    [ari_call] = [line["call"] for line in json_lines(ari_out) if line["type"] == "call"]
    assert code == 0 and ari_call["source"] == "ari" and ami_call["source"] == "ami"
    for key in (
        "call_id",
        "direction",
        "caller_number",
        "called_number",
        "agent_extension",
        "disposition",
        "terminating_party",
    ):
        assert ari_call[key] == ami_call[key], key
    assert abs(ari_call["talk_seconds"] - ami_call["talk_seconds"]) < 0.1


async def test_json_lists_each_call_then_the_requests_each_dialect_would_send(
    tmp_path: Path,
) -> None:
    async with FakeFixDigital() as fixdigital:
        code, out, err = await run_replay(
            tmp_path,
            ami_path("inbound_answered_caller_hangs_up"),
            [
                {
                    "type": "webhook",
                    "name": "hook",
                    "url": f"{fixdigital.url}/events",
                    "bearer_token": "s3cret-bearer-token",
                    "events": STEPS,
                },
                {
                    "type": "fixdigital",
                    "name": "fd",
                    "url": f"{fixdigital.url}/webservice.php",
                    "client_id": "10",
                    "default_region": "RU",
                },
            ],
            json_lines=True,
        )
        assert fixdigital.requests == []  # a dry run sends nothing
    lines = json_lines(out)
    assert code == 0 and [line["type"] for line in lines[:1]] == ["call"]
    requests = lines[1:]
    assert {line["type"] for line in requests} == {"request"}
    fd = [(line["kind"], line["method"], line["url"]) for line in requests if line["crm"] == "fd"]
    assert fd == [
        (
            "ringing",
            "GET",
            f"{fixdigital.url}/webservice.php?operation=incomingCall&sExt=7181"
            "&sNumber=89031234567&ClientId=10",
        ),
        (
            "answered",
            "GET",
            f"{fixdigital.url}/webservice.php?operation=incomingCallAnswered"
            "&sExt=7181&sNumber=89031234567&ClientId=10",
        ),
    ]
    hook = [line for line in requests if line["crm"] == "hook"]
    assert [line["kind"] for line in hook] == ["ringing", "answered", "hangup", "completed"]
    assert hook[0]["headers"]["Authorization"] == "Bearer ***"
    assert hook[3]["body"]["call"]["talk_seconds"] > 5
    assert "s3cret-bearer-token" not in out + err
    assert "throwaway" in err  # said on stderr: stdout is JSON only


async def test_send_uses_a_throwaway_store_so_a_second_run_delivers_again(tmp_path) -> None:
    crm = WebhookCrm()
    await crm.start()
    config = tmp_path / "pbxcrm.toml"
    config.write_text(
        f'[pbx.ami]\nusername = "crm"\npassword = "crmsecret"\n'
        f'[store]\npath = "{tmp_path / "real.sqlite3"}"\n'
        f'[[crm]]\ntype = "webhook"\nname = "hook"\nurl = "{crm.url}/events"\n'
        f"events = {json.dumps(STEPS)}\n"
    )
    capture = str(ami_path("inbound_abandoned_while_ringing"))
    try:
        for _ in range(2):
            code, out, err = await pbxcrm("replay", capture, "--config", str(config), "--send")
            assert code == 0, err
            assert "store: throwaway" in out and "Delivered 4, dead 0, pending 0." in out
        assert len(crm.events()) == 8
        assert not (tmp_path / "real.sqlite3").exists()  # the config's store is never touched
        kept = tmp_path / "kept.sqlite3"
        for expected in (12, 12):  # the chosen store remembers: the second run sends nothing
            code, out, _ = await pbxcrm(
                "replay", capture, "--config", str(config), "--send", "--store", str(kept)
            )
            assert code == 0 and f"store: {kept}" in out
            assert len(crm.events()) == expected
    finally:
        await crm.stop()


async def test_send_waits_for_every_delivery_of_a_killed_pbx_capture(tmp_path: Path) -> None:
    async with WebhookCrm() as crm:
        code, out, _ = await run_replay(
            tmp_path,
            ami_path("asterisk_killed_mid_call"),
            [{"type": "webhook", "name": "hook", "url": f"{crm.url}/events", "events": STEPS}],
            send=True,
        )
        assert [e["kind"] for e in crm.events()] == ["ringing", "answered", "hangup", "completed"]
    assert code == 0 and "Delivered 4, dead 0, pending 0." in out


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_send_reports_what_is_left_when_the_crm_does_not_take_it(tmp_path: Path) -> None:
    code, out, _ = await run_replay(
        tmp_path,
        ami_path("inbound_abandoned_while_ringing"),
        [
            {
                "type": "webhook",
                "name": "down",
                "url": f"http://127.0.0.1:{_closed_port()}/e",
                "events": STEPS,
            }
        ],
        send=True,
        wait_seconds=0.5,
    )
    assert code == 1
    assert "Delivered 0, dead 0, pending 4." in out
    assert "  pending down  ringing   call " in out and "failed" in out
    assert "did not drain within 0.5 s" in out and "--store PATH" in out


async def test_the_example_config_replays_from_a_shell_that_has_none_of_its_secrets(
    tmp_path: Path, monkeypatch
) -> None:
    # The README's walk: copy the example, switch a block on, check it, replay a capture.
    example = (Path(__file__).parents[1] / "config" / "pbxcrm.example.toml").read_text()
    for name in re.findall(r'"env:([A-Z_]+)"', example):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "pbxcrm.toml"
    config.write_text(
        example.replace('name = "webhook"\nenabled = false', 'name = "webhook"\nenabled = true', 1)
    )
    code, out, err = await pbxcrm("check-config", "--config", str(config))
    assert code == 0, err
    assert 'crm[0] "webhook"' in out and "(disabled)" not in out.splitlines()[1]
    code, out, err = await pbxcrm(
        "replay", str(ami_path("inbound_answered_caller_hangs_up")), "--config", str(config)
    )
    assert code == 0, err
    sent = [line.split() for line in out.splitlines() if line.startswith("  webhook ")]
    assert {"ringing", "answered", "hangup", "completed"} <= {words[1] for words in sent}
    assert all(words[-1] == "https://middleware.example.com/pbx-events" for words in sent)
