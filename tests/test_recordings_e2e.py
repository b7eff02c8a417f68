"""End to end: the recorded call with MixMonitor -> pbxcrm -> a CRM that takes files.

The fake PBX replays `inbound_answered_recorded.ami` over TCP; the MixMonitor file it names
(`1795418967.2.wav`) is the espeak-ng speech fixture. pbxcrm runs as `pbxcrm run` would, with
`[recordings] format = "mp3"` and three declarative blocks: one sends the link, one uploads the
file as multipart/form-data, one PUTs it as the raw body. The CRM is a real aiohttp server.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import aiohttp

from ari_app.app.service import Service
from ari_app.app.settings import Settings
from tests.fakes.ami_pbx import FakePbx
from tests.fakes.crm_files import FilesCrm, multipart_parts, read_mp3, sha256
from tests.recordings import ami_path
from tests.test_store_support import outbox_rows

SPEECH = Path(__file__).parent / "fixtures" / "audio" / "speech_8k_mono.wav"
RECORDING = "1795418967.2.wav"
TOKEN = "recordings-token-0123456789"


def settings(tmp_path: Path, pbx_port: int, crm: list[dict[str, Any]]) -> Settings:
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
            "calls": {
                "recording_url_template": "https://pbx.example/rec/{file}",
                "recording_dir": str(tmp_path / "monitor"),
            },
            "recordings": {
                "format": "mp3",
                "bitrate_kbps": 32,
                "folder": str(tmp_path / "converted"),
                "settle_seconds": 0,
            },
            "store": {"path": str(tmp_path / "pbxcrm.sqlite3")},
            "outbox": {
                "base_delay_seconds": 0.05,
                "max_delay_seconds": 0.2,
                "poll_interval_seconds": 0.05,
            },
            "http": {
                "host": "127.0.0.1",
                "port": 0,
                "clients": [{"name": "crm", "token": TOKEN, "routes": ["recordings"]}],
            },
            "agi": {"enabled": False},
            "crm": crm,
        }
    )


def link_block(url: str) -> dict[str, Any]:
    return {
        "type": "declarative",
        "name": "crm-link",
        "events": ["completed"],
        "requests": {
            "completed": {
                "url": f"{url}/calls",
                "json_body": {
                    "call": "{call_id}",
                    "recording": "{recording_url}",
                    "recording_error": "{recording_error}",
                },
            }
        },
    }


def upload_block(url: str) -> dict[str, Any]:
    return {
        "type": "declarative",
        "name": "crm-upload",
        "events": ["completed"],
        "requests": {
            "completed": {
                "url": f"{url}/upload",
                "form": {"call_id": "{call_id}", "phone": "{caller_number}"},
                "headers": {"Idempotency-Key": "{idempotency_key}"},
                "upload": {"mode": "multipart", "file_field": "audio"},
            }
        },
    }


def raw_block(url: str) -> dict[str, Any]:
    return {
        "type": "declarative",
        "name": "crm-raw",
        "events": ["completed"],
        "requests": {
            "completed": {
                "method": "PUT",
                "url": f"{url}/raw/{{call_id}}.mp3",
                "upload": {"mode": "raw"},
            }
        },
    }


async def wait_for(condition: Any, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.02)


async def replay(
    tmp_path: Path, crm: list[dict[str, Any]], done: Any, *, with_file: bool, then: Any = None
) -> None:
    (tmp_path / "monitor").mkdir()
    if with_file:
        shutil.copy(SPEECH, tmp_path / "monitor" / RECORDING)
    pbx = FakePbx(ami_path("inbound_answered_recorded"), await_actions=True)
    await pbx.start()
    service = Service(settings(tmp_path, pbx.port, crm))
    try:
        await service.start()
        await wait_for(lambda: done(service))
        if then is not None:
            await then(service)
    finally:
        await service.stop()
        await pbx.stop()


async def test_the_crm_gets_an_mp3_link_and_the_same_mp3_bytes_uploaded_both_ways(tmp_path):
    fetched: dict[str, bytes] = {}

    async def download(service: Service) -> None:
        url = f"http://127.0.0.1:{service.http_port}/api/v1/recordings/1795418967.2.mp3"
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as response,
        ):
            assert response.status == 200
            assert response.headers["Content-Type"] == "audio/mpeg"
            fetched["served"] = await response.read()

    async with FilesCrm() as crm:

        async def everything_arrived(service: Service) -> bool:
            return {r.path for r in crm.requests} == {"/calls", "/upload", "/raw/1795418967.2.mp3"}

        await replay(
            tmp_path,
            [link_block(crm.url), upload_block(crm.url), raw_block(crm.url)],
            everything_arrived,
            with_file=True,
            then=download,
        )

    assert crm.rejections == []
    record = crm.requests_to("/calls")[0].json()
    assert record == {
        "call": "1795418967.2",
        "recording": "https://pbx.example/rec/1795418967.2.mp3",
        "recording_error": "",
    }
    parts = multipart_parts(crm.requests_to("/upload")[0])
    assert list(parts) == ["call_id", "phone", "audio"]
    assert parts["call_id"].get_payload(decode=True) == b"1795418967.2"
    assert parts["phone"].get_payload(decode=True) == b"+79037654321"
    audio = parts["audio"]
    assert audio.get_filename() == "1795418967.2.mp3"
    assert audio.get_content_type() == "audio/mpeg"
    uploaded = audio.get_payload(decode=True)
    raw = crm.requests_to("/raw/1795418967.2.mp3")[0]
    assert raw.headers["Content-Type"] == "audio/mpeg"

    # The same file by every path: served over HTTP, uploaded as a part, uploaded as a body.
    assert sha256(uploaded) == sha256(raw.body) == sha256(fetched["served"])
    stream = read_mp3(uploaded)  # and it is the 12 s of speech, as MP3
    assert (stream.sample_rate, stream.channels, stream.bitrate_kbps) == (8000, 1, 32)
    assert abs(stream.seconds - 12.0) < 0.3
    # The MixMonitor original is untouched (keep_original defaults to true).
    assert sha256((tmp_path / "monitor" / RECORDING).read_bytes()) == sha256(SPEECH.read_bytes())


async def test_an_upload_the_crm_refused_is_sent_again_with_the_same_bytes_and_key(tmp_path):
    async with FilesCrm() as crm:
        crm.fail_next(503, '{"error": "busy"}')

        async def delivered(service: Service) -> bool:
            assert service.store is not None
            rows = await outbox_rows(service.store, "adapter = 'crm-upload'")
            return bool(rows) and rows[0]["state"] == "done"

        await replay(tmp_path, [upload_block(crm.url)], delivered, with_file=True)

    uploads = crm.requests_to("/upload")
    assert len(uploads) == 2
    keys = [r.headers["Idempotency-Key"] for r in uploads]
    assert keys[0] == keys[1]
    assert re.fullmatch(r"crm-upload:lab:1795418967\.2:\d+:completed", keys[0])
    files = [multipart_parts(r)["audio"].get_payload(decode=True) for r in uploads]
    assert sha256(files[0]) == sha256(files[1])
    assert read_mp3(files[1]).frames > 0


async def test_a_missing_recording_gets_no_link_a_reason_and_a_dead_letter_that_says_so(
    tmp_path, caplog
):
    caplog.set_level(logging.WARNING)
    async with FilesCrm() as crm:

        async def settled(service: Service) -> bool:
            assert service.store is not None
            rows = await outbox_rows(service.store, "adapter = 'crm-upload'")
            return bool(crm.requests_to("/calls")) and bool(rows) and rows[0]["state"] == "dead"

        await replay(
            tmp_path, [link_block(crm.url), upload_block(crm.url)], settled, with_file=False
        )
        store_path = tmp_path / "pbxcrm.sqlite3"

    record = crm.requests_to("/calls")[0].json()
    assert record["recording"] == ""
    assert record["recording_error"].startswith(f"recording {RECORDING} is missing")
    assert crm.requests_to("/upload") == []
    assert any(
        "call 1795418967.2: recording 1795418967.2.wav is missing" in r.getMessage()
        and "no recording link" in r.getMessage()
        for r in caplog.records
    )
    # The dead letter names the reason, for `pbxcrm outbox list`.
    import aiosqlite

    async with aiosqlite.connect(store_path) as db:
        rows = await db.execute_fetchall(
            "SELECT last_error, attempts FROM outbox WHERE adapter = 'crm-upload'"
        )
    ((error, attempts),) = rows
    assert "crm-upload: no file to upload: recording 1795418967.2.wav is missing" in error
    assert attempts == 1
