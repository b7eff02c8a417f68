"""Recording URLs in CRM records open that one recording, for a while, and nothing else.

The slot of `https://pbx/<slot>/recording/<file>` (Creatio's shape) is pbxcrm's signature over
the file and an expiry, never a client token that could dial.
"""

from __future__ import annotations

import shutil
import time
from importlib import resources
from pathlib import Path

import aiohttp
import pytest

from ari_app.app.service import Service
from ari_app.app.settings import Settings
from ari_app.calls.recording_links import LINK_KEY_KV, RecordingLinkSigner, load_or_create_key
from ari_app.calls.rules import CallRules
from ari_app.calls.tracker import CallTracker
from ari_app.pbx.ami.events import PbxClock, frame_to_event
from ari_app.web.deps import HttpDeps
from crm.store.sqlite import Store
from tests.fakes.ami_pbx import FakePbx
from tests.recordings import ami_path, recorded_frames
from tests.test_e2e_ami_to_crm import WebhookCrm, make_settings, wait_for
from tests.test_http_support import (
    CREATIO_TOKEN,
    CRM_TOKEN,
    bearer,
    running,
)
from tests.test_http_support import make_settings as http_settings

RECORDING = "1795418967.2.wav"
TEMPLATE = "https://pbx.example/{signature}/recording/{file}"


def _demo_recording() -> Path:
    return Path(str(resources.files("ari_app.app") / "demo_data" / "recordings" / RECORDING))


def _final_call(rules: CallRules) -> dict:
    tracker = CallTracker(rules, pbx_id="lab")
    clock = PbxClock(now=lambda: 1_000_000.0)
    final = None
    for frame in recorded_frames("inbound_answered_recorded"):
        event = frame_to_event(frame, clock.stamp(frame))
        if event is not None:
            for step in tracker.handle(event):
                final = step.call
    assert final is not None
    return final.model_dump(mode="json")


def test_the_same_call_always_gets_the_same_link_and_it_expires_days_after_the_call_ended():
    rules = CallRules(recording_url_template=TEMPLATE, recording_link_days=3)
    key = b"k" * 32
    first = _final_call(rules.with_recording_key(key))
    again = _final_call(rules.with_recording_key(key))
    assert first["recording_url"] == again["recording_url"]  # a retry carries the same bytes
    other_key = _final_call(rules.with_recording_key(b"o" * 32))["recording_url"]
    assert other_key != first["recording_url"]
    slot = first["recording_url"].split("/")[3]
    ended = first["end_time"]
    from datetime import datetime

    end_ts = datetime.fromisoformat(ended).timestamp()
    assert int(slot.split(".")[0]) == int(end_ts + 3 * 86400)
    signer = RecordingLinkSigner(key, 3 * 86400)
    assert signer.opens(slot, RECORDING, now=end_ts + 2 * 86400)
    assert not signer.opens(slot, RECORDING, now=end_ts + 3 * 86400 + 1)
    assert not signer.opens(slot, "1795418967.3.wav", now=end_ts)


def test_without_pbxcrms_key_a_signed_template_gives_no_url_rather_than_a_guessable_one():
    call = _final_call(CallRules(recording_url_template=TEMPLATE))
    assert call["recording_file"] == RECORDING
    assert call["recording_url"] is None


def _service_settings(tmp_path: Path, pbx_port: int, crm_url: str, folder: Path) -> Settings:
    raw = make_settings(tmp_path, pbx_port, crm_url).model_dump(mode="json")
    raw["pbx"]["ami"]["password"] = "crmsecret"  # model_dump stars secrets
    raw["crm"][0]["url"] = f"{crm_url}/events"
    # The capture's call ended in 2026-11: links counted from then must still be alive today.
    raw["calls"].update(
        recording_url_template=TEMPLATE, recording_dir=str(folder), recording_link_days=3650
    )
    raw["http"] = {
        "host": "127.0.0.1",
        "port": 0,
        "clients": [
            {"name": "crm", "token": CRM_TOKEN, "routes": ["calls", "originate"]},
            {"name": "creatio", "token": CREATIO_TOKEN, "routes": ["creatio", "recordings"]},
        ],
        "routes": {"recordings": {"methods": ["header_token", "signed_link", "path_token"]}},
    }
    return Settings.model_validate(raw)


async def test_the_link_a_crm_receives_opens_its_recording_and_nothing_else(tmp_path: Path):
    folder = tmp_path / "monitor"
    folder.mkdir()
    shutil.copy(_demo_recording(), folder / RECORDING)
    (folder / "1795418967.9.wav").write_bytes(b"RIFF another call")
    crm = WebhookCrm()
    await crm.start()
    pbx = FakePbx(ami_path("inbound_answered_recorded"))
    await pbx.start()
    service = Service(_service_settings(tmp_path, pbx.port, crm.url, folder))
    try:
        await service.start()
        await wait_for(lambda: any(e["kind"] == "completed" for e in crm.events()), timeout=60)
        (completed,) = [e for e in crm.events() if e["kind"] == "completed"]
        url = completed["call"]["recording_url"]
        assert url.startswith("https://pbx.example/") and url.endswith("/recording/" + RECORDING)
        slot = url.split("/")[3]
        for token in (CRM_TOKEN, CREATIO_TOKEN):
            assert token not in url
        local = f"http://127.0.0.1:{service.http_port}"
        async with aiohttp.ClientSession() as session:
            async with session.get(local + url.removeprefix("https://pbx.example")) as resp:
                assert resp.status == 200
                assert await resp.read() == _demo_recording().read_bytes()
            # The same slot for another file, as a token, as a bearer: nothing opens.
            async with session.get(f"{local}/{slot}/recording/1795418967.9.wav") as resp:
                assert resp.status == 401
            async with session.get(
                f"{local}/webapi/{slot}/makecall?first=101&second=89161234567"
            ) as resp:
                assert resp.status == 401
            async with session.get(f"{local}/api/v1/calls", headers=bearer(slot)) as resp:
                assert resp.status == 401
        assert service.store is not None
        key_hex = await service.store.get_kv(LINK_KEY_KV)
    finally:
        await service.stop()
        await pbx.stop()
        await crm.stop()
    # The key is pbxcrm's own, made once and kept in the store: what the next start loads.
    store = await Store.open(service.settings.store)
    try:
        assert key_hex and len(bytes.fromhex(key_hex)) == 32
        assert await load_or_create_key(store) == bytes.fromhex(key_hex)
        assert await store.get_kv(LINK_KEY_KV) == key_hex
    finally:
        await store.close()


async def test_a_token_that_can_dial_never_opens_a_recording_from_a_url(tmp_path: Path):
    recordings_only = "recordings-only-token-0123456789"
    settings = http_settings(
        tmp_path,
        clients=[
            {"name": "creatio", "token": CREATIO_TOKEN, "routes": ["creatio", "recordings"]},
            {"name": "archive", "token": recordings_only, "routes": ["recordings"]},
        ],
        routes={"recordings": {"methods": ["header_token", "signed_link", "path_token"]}},
    )
    (Path(settings.calls.recording_dir) / RECORDING).write_bytes(b"RIFF")
    async with running(HttpDeps(settings=settings)) as server:
        async with server.session.get(server.url(f"/{CREATIO_TOKEN}/recording/{RECORDING}")) as r:
            assert r.status == 401  # the same answer as a wrong token: no oracle
            assert await r.json() == {"error": "unauthorized"}
        async with server.session.get(
            server.url(f"/{recordings_only}/recording/{RECORDING}")
        ) as resp:
            assert resp.status == 200
        # In a header (not written into CRM records) the creatio token still opens it.
        async with server.session.get(
            server.url(f"/api/v1/recordings/{RECORDING}"), headers=bearer(CREATIO_TOKEN)
        ) as resp:
            assert resp.status == 200


async def test_a_client_token_does_not_open_recordings_by_default(tmp_path: Path):
    # No path_token in the default rule: even a recordings-only client's token is no slot.
    settings = http_settings(
        tmp_path, clients=[{"name": "archive", "token": CRM_TOKEN, "routes": ["recordings"]}]
    )
    (Path(settings.calls.recording_dir) / RECORDING).write_bytes(b"RIFF")
    async with running(HttpDeps(settings=settings)) as server:
        async with server.session.get(server.url(f"/{CRM_TOKEN}/recording/{RECORDING}")) as resp:
            assert resp.status == 401


async def test_a_client_gets_no_route_family_it_was_not_given(tmp_path: Path):
    settings = http_settings(tmp_path, clients=[{"name": "bare", "token": CRM_TOKEN}])
    assert settings.http.clients[0].routes == []
    (Path(settings.calls.recording_dir) / RECORDING).write_bytes(b"RIFF")
    async with running(HttpDeps(settings=settings)) as server:
        for path in ("/api/v1/calls", "/metrics", f"/api/v1/recordings/{RECORDING}"):
            async with server.session.get(server.url(path), headers=bearer()) as resp:
                assert resp.status == 403, path
        async with server.session.post(
            server.url("/api/v1/originate"),
            json={"extension": "101", "number": "89161234567"},
            headers=bearer(),
        ) as resp:
            assert resp.status == 403


def test_a_client_token_written_into_the_recording_url_template_is_a_config_error(tmp_path):
    with pytest.raises(ValueError, match=r"holds the token of \[\[http.clients\]\] 'crm'"):
        Settings.model_validate(
            {
                "calls": {"recording_url_template": f"https://pbx/{CRM_TOKEN}/recording/{{file}}"},
                "http": {"clients": [{"name": "crm", "token": CRM_TOKEN, "routes": ["calls"]}]},
            }
        )
    with pytest.raises(ValueError, match=r"unknown field \{token\}"):
        CallRules(recording_url_template="https://pbx/{token}/recording/{file}")


def test_a_signature_from_another_key_or_with_a_changed_expiry_opens_nothing():
    signer = RecordingLinkSigner(b"a" * 32, 3600)
    now = time.time()
    slot = signer.slot(RECORDING, now)
    assert signer.opens(slot, RECORDING, now)
    expires, signature = slot.split(".")
    assert not signer.opens(f"{int(expires) + 86400}.{signature}", RECORDING, now)
    assert not RecordingLinkSigner(b"b" * 32, 3600).opens(slot, RECORDING, now)
    assert not signer.opens(CRM_TOKEN, RECORDING, now)
