"""Soak (PBXCRM_SOAK=1 only; PBXCRM_SOAK_SECONDS, default 180): several hundred concurrent calls
for minutes through AMI, FastAGI and the HTTP port at once, with flat memory.

One `Service` (what `pbxcrm run` starts) with AMI, FastAGI and HTTP on 127.0.0.1. The AMI side
is a small server in this file that streams waves of the recorded call
`inbound_answered_caller_hangs_up`: each wave is SOAK_CALLS copies (fake_pbx.replicate: distinct
Uniqueids, channel names and bridge ids), all set up first (SOAK_CALLS calls up at once), then
all hung up; each wave gets fresh Uniqueids. Meanwhile the recorded `caller_check` and `survey`
FastAGI sessions run in a loop, and an HTTP client asks for call history and metrics.

Checked: every call of every wave reaches the CRM as ringing/answered/hangup/completed, each
key once; every AGI session gets the recorded commands; every HTTP answer is 200; resident
memory in the last third of the run is within SOAK_MEMORY_SLACK of the first third.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from ari_app.fake_pbx import replicate
from ari_app.service import Service
from ari_app.settings import Settings
from tests.fakes.agi_asterisk import fastagi_session, load_recording
from tests.fakes.crm_server import FakeCrm
from tests.faults.support import SOAK
from tests.recordings import ami_path

pytestmark = pytest.mark.skipif(not SOAK, reason="soak runs with PBXCRM_SOAK=1")

SOAK_SECONDS = float(os.environ.get("PBXCRM_SOAK_SECONDS", "180"))
SOAK_CALLS = 300
SOAK_MEMORY_SLACK = 60 * 1024 * 1024
TOKEN = "soak-token-0123456789abcdef"
EPOCH = b"1795417965"


class CountingCrm(FakeCrm):
    def __init__(self) -> None:
        super().__init__()
        self.keys: set[str] = set()
        self.duplicates = 0
        self.completed = 0

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/events", self._event)

    async def _event(self, request: web.Request) -> web.Response:
        body = await request.json()
        key = body["idempotency_key"]
        if key in self.keys:
            self.duplicates += 1
        self.keys.add(key)
        self.completed += body["kind"] == "completed"
        self.requests.clear()  # the base keeps every request; a soak must not
        return web.json_response({"ok": True})


def wave_halves() -> tuple[list[bytes], list[bytes]]:
    """The replicated calls' frames: set-up frames (before the first HangupRequest of each
    copy) and tear-down frames."""
    blob = replicate(ami_path("inbound_answered_caller_hangs_up"), SOAK_CALLS)
    blocks = [b for b in blob.split(b"\r\n\r\n") if b.startswith(b"Event:")]
    per_copy = len(blocks) // SOAK_CALLS
    setup: list[bytes] = []
    teardown: list[bytes] = []
    for copy in range(SOAK_CALLS):
        frames = blocks[copy * per_copy : (copy + 1) * per_copy]
        cut = next(i for i, f in enumerate(frames) if f.startswith(b"Event: HangupRequest"))
        setup += frames[:cut]
        teardown += frames[cut:]
    return setup, teardown


class WavePbx:
    """Banner, any login accepted, Ping and an empty CoreShowChannels answered, waves streamed."""

    def __init__(self) -> None:
        self.setup, self.teardown = wave_halves()
        self.waves = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        streamer: asyncio.Task[None] | None = None
        buffer = b""
        try:
            while chunk := await reader.read(65536):
                buffer += chunk
                while b"\r\n\r\n" in buffer:
                    block, buffer = buffer.split(b"\r\n\r\n", 1)
                    headers = dict(
                        line.split(": ", 1) for line in block.decode().split("\r\n") if ": " in line
                    )
                    action, aid = headers.get("Action", "").lower(), headers.get("ActionID", "")
                    if action == "login":
                        writer.write(
                            f"Response: Success\r\nActionID: {aid}\r\n"
                            "Message: Authentication accepted\r\n\r\n".encode()
                        )
                        streamer = streamer or asyncio.create_task(self._stream(writer))
                    elif action == "coreshowchannels":
                        writer.write(
                            f"Response: Success\r\nActionID: {aid}\r\nEventList: start\r\n"
                            "Message: Channels will follow\r\n\r\n"
                            f"Event: CoreShowChannelsComplete\r\nActionID: {aid}\r\n"
                            "EventList: Complete\r\nListItems: 0\r\n\r\n".encode()
                        )
                    elif action == "ping":
                        writer.write(
                            f"Response: Success\r\nActionID: {aid}\r\nPing: Pong\r\n"
                            f"Timestamp: {time.time():.6f}\r\n\r\n".encode()
                        )
                    elif action == "logoff":
                        writer.write(f"Response: Goodbye\r\nActionID: {aid}\r\n\r\n".encode())
                        return
        finally:
            if streamer is not None:
                streamer.cancel()
            writer.close()

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        while True:
            epoch = str(int(EPOCH) + 10 + self.waves).encode()
            for half in (self.setup, self.teardown):
                # Whole frames per write: answers to Ping go out between writes, never inside
                # a frame.
                for start in range(0, len(half), 200):
                    batch = half[start : start + 200]
                    writer.write(b"".join(b.replace(EPOCH, epoch) + b"\r\n\r\n" for b in batch))
                    await writer.drain()
                await asyncio.sleep(2.0)  # SOAK_CALLS calls up (or gone) for a while
            self.waves += 1


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_hundreds_of_concurrent_calls_through_ami_fastagi_and_http_for_minutes_with_flat_memory(  # noqa: E501
    tmp_path: Path, fault_report: list[str]
) -> None:
    crm = CountingCrm()
    await crm.start()
    pbx = WavePbx()
    await pbx.start()
    settings = Settings.model_validate(
        {
            "pbx": {
                "id": "soak",
                "ami": {"port": pbx.port, "username": "crm", "password": "soak-ami-secret"},
            },
            "store": {"path": str(tmp_path / "pbxcrm.sqlite3")},
            "outbox": {"poll_interval_seconds": 0.2},
            "http": {"host": "127.0.0.1", "port": 0, "clients": [{"name": "crm", "token": TOKEN}]},
            "agi": {"port": 0, "survey_spool": str(tmp_path / "spool.jsonl")},
            "lookup": [
                {
                    "type": "local",
                    "name": "contacts",
                    "contacts": [
                        {"number": "+79031234567", "name": "Ivan", "owner_extension": "7181"}
                    ],
                }
            ],
            "crm": [
                {"type": "webhook", "name": "hook", "url": f"{crm.url}/events", "concurrency": 16}
            ],
        }
    )
    service = Service(settings)
    samples: list[tuple[float, int]] = []
    agi_sessions = http_requests = 0
    agi_recordings = [load_recording("caller_check"), load_recording("survey")]
    try:
        await service.start()
        assert service.fastagi is not None
        agi_port = service.fastagi.port
        http_url = f"http://127.0.0.1:{service.http_port}"
        deadline = time.monotonic() + SOAK_SECONDS

        async def agi_loop() -> None:
            nonlocal agi_sessions
            while time.monotonic() < deadline:
                recording = agi_recordings[agi_sessions % 2]
                # Our scripts send a few more SET VARIABLEs than the recorded lab script;
                # Asterisk answers those `200 result=1` (AGI command reference).
                replies = [*recording.replies, *[b"200 result=1\n"] * 8]
                talk = await fastagi_session(agi_port, recording.env, replies)
                assert talk.commands[: len(recording.sent)] == recording.sent
                agi_sessions += 1

        async def http_loop() -> None:
            nonlocal http_requests
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with aiohttp.ClientSession(headers=headers) as http:
                while time.monotonic() < deadline:
                    for path in (
                        "/api/v1/calls?number=%2B79031234567&limit=50",
                        "/metrics",
                        "/healthz",
                    ):
                        async with http.get(http_url + path) as response:
                            assert response.status == 200, (path, await response.text())
                            await response.read()
                        http_requests += 1
                    await asyncio.sleep(0.05)

        async def sampler() -> None:
            while time.monotonic() < deadline:
                samples.append((time.monotonic(), rss_bytes()))
                await asyncio.sleep(1.0)

        await asyncio.gather(*(agi_loop() for _ in range(8)), http_loop(), http_loop(), sampler())
        waves = pbx.waves
        expected_calls = waves * SOAK_CALLS
        async with asyncio.timeout(120):
            while crm.completed < expected_calls:
                await asyncio.sleep(0.2)
    finally:
        await service.stop()
        await pbx.stop()
        await crm.stop()

    third = max(1, len(samples) // 3)
    early = sum(rss for _, rss in samples[:third]) / third
    late = sum(rss for _, rss in samples[-third:]) / third
    line = (
        f"soak: {SOAK_SECONDS:.0f} s, {waves} waves of {SOAK_CALLS} concurrent calls"
        f" ({expected_calls:,} calls, {len(crm.keys):,} deliveries, {crm.duplicates} duplicates),"
        f" {agi_sessions:,} FastAGI sessions, {http_requests:,} HTTP requests; resident memory"
        f" {early / 2**20:.0f} MiB in the first third, {late / 2**20:.0f} MiB in the last"
    )
    fault_report.append(line)
    assert waves >= 2
    assert crm.duplicates == 0
    assert re.search(r"\d", line)
    assert late - early < SOAK_MEMORY_SLACK, line
