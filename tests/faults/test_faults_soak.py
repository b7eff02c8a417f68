"""Soak (PBXCRM_SOAK=1 only; PBXCRM_SOAK_SECONDS, default 180): several hundred concurrent calls
for minutes through AMI, FastAGI and the HTTP port at once, with flat memory.

pbxcrm is the real `pbxcrm run` process (its own interpreter and event loop, as in production),
with AMI, FastAGI and HTTP on 127.0.0.1; this test's process plays everything around it. Why a
subprocess: an in-process soak shares one event loop between pbxcrm and its load generators,
so a lagging generator looks like a lagging pbxcrm (a 120 s in-process soak tripped pbxcrm's
AMI ping watchdog that way) and the memory sampled is the generators' too.

Around it: a small AMI server in this file streams waves of the recorded call
`inbound_answered_caller_hangs_up`: each wave is SOAK_CALLS copies (ami_streams.replicate: distinct
Uniqueids, channel names and bridge ids), all set up first (SOAK_CALLS calls up at once), then
all hung up; each wave gets fresh Uniqueids. Meanwhile the recorded `caller_check` and `survey`
FastAGI sessions run in a loop, and HTTP clients ask for call history, metrics and health.

Checked: every call of every wave reaches the CRM and completes, each idempotency key once;
the AMI link is never dropped; every AGI session gets the recorded commands; every HTTP answer
is 200; pbxcrm's resident memory (/proc/<pid>/statm) grows less than SOAK_MEMORY_GROWTH between
the end of the first third (warm-up: SQLite page cache, interpreter arenas) and the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import statistics
import sys
import time
import tomllib
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from ari_app.app.settings import Settings
from tests.fakes.agi_asterisk import fastagi_session, load_recording
from tests.fakes.ami_streams import replicate
from tests.fakes.crm_server import FakeCrm
from tests.faults.support import SOAK, rss_bytes, wait_for
from tests.recordings import ami_path

SOAK_SECONDS = float(os.environ.get("PBXCRM_SOAK_SECONDS", "180"))

pytestmark = [
    pytest.mark.skipif(not SOAK, reason="soak runs with PBXCRM_SOAK=1"),
    pytest.mark.timeout(SOAK_SECONDS + 600),
]
SOAK_CALLS = 300
HOLD_SECONDS = 2.0  # each wave's calls stay up (or gone) this long
AGI_CLIENTS = 8
HTTP_CLIENTS = 2
SOAK_MEMORY_GROWTH = 16 * 1024 * 1024
TOKEN = "soak-token-0123456789abcdef"
AMI_SECRET = "soak-ami-secret-0123"
EPOCH = b"1795417965"


class CountingCrm(FakeCrm):
    """Counts idempotency keys and duplicates, keeps when each call's `completed` arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: set[str] = set()
        self.duplicates = 0
        self.completed_at: dict[str, float] = {}  # call id (its Linkedid) -> arrival
        self.completions = 0

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/events", self._event)

    async def _event(self, request: web.Request) -> web.Response:
        body = await request.json()
        key = body["idempotency_key"]
        if key in self.keys:
            self.duplicates += 1
        self.keys.add(key)
        if body["kind"] == "completed":
            self.completed_at[body["call_id"]] = time.monotonic()
            self.completions += 1
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
    """Banner, any login accepted, Ping and an empty CoreShowChannels answered, waves streamed
    until `stop_waves` is set."""

    def __init__(self) -> None:
        self.setup, self.teardown = wave_halves()
        self.waves = 0
        self.logins = 0
        self.torn_down_at: list[float] = []  # when each wave's last hang-up frame was written
        self.stop_waves = asyncio.Event()
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
                        self.logins += 1
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
        while not self.stop_waves.is_set():
            epoch = str(int(EPOCH) + 10 + self.waves).encode()
            for half in (self.setup, self.teardown):
                # Whole frames per write: answers to Ping go out between writes, never inside
                # a frame.
                for start in range(0, len(half), 200):
                    batch = half[start : start + 200]
                    writer.write(b"".join(b.replace(EPOCH, epoch) + b"\r\n\r\n" for b in batch))
                    await writer.drain()
                if half is self.teardown:
                    self.torn_down_at.append(time.monotonic())
                await asyncio.sleep(HOLD_SECONDS)
            self.waves += 1


def config_text(tmp: Path, pbx_port: int, crm_url: str) -> str:
    return f"""
[pbx]
id = "soak"
[pbx.ami]
host = "127.0.0.1"
port = {pbx_port}
username = "crm"
password = "{AMI_SECRET}"
[store]
path = "{tmp / "pbxcrm.sqlite3"}"
[outbox]
poll_interval_seconds = 0.2
[http]
host = "127.0.0.1"
port = 0
[[http.clients]]
name = "crm"
token = "{TOKEN}"
routes = ["calls", "metrics"]
[agi]
host = "127.0.0.1"
port = 0
survey_spool = "{tmp / "spool.jsonl"}"
[[lookup]]
type = "local"
name = "contacts"
contacts = [{{ number = "+79031234567", name = "Ivan", owner_extension = "7181" }}]
[[crm]]
type = "webhook"
name = "hook"
url = "{crm_url}/events"
concurrency = 16
"""


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def listening_ports(log: Path, timeout: float = 30.0) -> tuple[int, int]:
    """The FastAGI and HTTP ports `pbxcrm run` chose (port 0), read off its start-up log."""
    found: dict[str, int] = {}

    def read() -> bool:
        text = log.read_text(errors="replace") if log.exists() else ""
        for name, pattern in (
            ("agi", r"FastAGI listening on [\d.]+:(\d+)"),
            ("http", r"HTTP port on [\d.]+:(\d+)"),
        ):
            if match := re.search(pattern, text):
                found[name] = int(match.group(1))
        return len(found) == 2

    await wait_for(read, timeout)
    return found["agi"], found["http"]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


async def test_hundreds_of_concurrent_calls_through_ami_fastagi_and_http_for_minutes_with_flat_memory(  # noqa: E501
    tmp_path: Path, suite_logs, fault_report: list[str]
) -> None:
    crm = CountingCrm()
    await crm.start()
    pbx = WavePbx()
    await pbx.start()
    config = tmp_path / "pbxcrm.toml"
    config.write_text(config_text(tmp_path, pbx.port, crm.url))
    # Validated here too, so the suite-wide log check knows these secrets.
    Settings.model_validate(tomllib.loads(config.read_text()))
    log_path = tmp_path / "run.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}
    samples: list[tuple[float, int]] = []
    agi_seconds: list[float] = []
    http_seconds: list[float] = []
    agi_recordings = [load_recording("caller_check"), load_recording("survey")]
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ari_app.app.cli", "run", "--config", str(config),
            stdout=log, stderr=log, env=env,
        )  # fmt: skip
    try:
        agi_port, http_port = await listening_ports(log_path)
        await wait_for(lambda: pbx.logins >= 1)
        http_url = f"http://127.0.0.1:{http_port}"
        started = time.monotonic()
        cpu_start = cpu_seconds(process.pid)
        deadline = started + SOAK_SECONDS

        async def agi_loop() -> None:
            while time.monotonic() < deadline:
                recording = agi_recordings[len(agi_seconds) % 2]
                # Our scripts send a few more SET VARIABLEs than the recorded lab script;
                # Asterisk answers those `200 result=1` (AGI command reference).
                replies = [*recording.replies, *[b"200 result=1\n"] * 8]
                begun = time.monotonic()
                talk = await fastagi_session(agi_port, recording.env, replies)
                agi_seconds.append(time.monotonic() - begun)
                assert talk.commands[: len(recording.sent)] == recording.sent

        async def http_loop() -> None:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with aiohttp.ClientSession(headers=headers) as http:
                while time.monotonic() < deadline:
                    for path in (
                        "/api/v1/calls?number=%2B79031234567&limit=50",
                        "/metrics",
                        "/healthz",
                    ):
                        begun = time.monotonic()
                        async with http.get(http_url + path) as response:
                            assert response.status == 200, (path, await response.text())
                            await response.read()
                        http_seconds.append(time.monotonic() - begun)
                    await asyncio.sleep(0.05)

        async def sampler() -> None:
            while time.monotonic() < deadline:
                samples.append((time.monotonic() - started, rss_bytes(process.pid)))
                await asyncio.sleep(1.0)

        await asyncio.gather(
            *(agi_loop() for _ in range(AGI_CLIENTS)),
            *(http_loop() for _ in range(HTTP_CLIENTS)),
            sampler(),
        )
        cpu_share = (cpu_seconds(process.pid) - cpu_start) / (time.monotonic() - started)
        pbx.stop_waves.set()
        await wait_for(lambda: len(pbx.torn_down_at) == pbx.waves, timeout=30)
        waves = pbx.waves
        expected_calls = waves * SOAK_CALLS
        await wait_for(lambda: crm.completions >= expected_calls, timeout=120)
        samples.append((time.monotonic() - started, rss_bytes(process.pid)))
        assert process.returncode is None, "pbxcrm exited during the soak"
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await pbx.stop()
        await crm.stop()
        suite_logs.add_text(log_path.read_text(errors="backslashreplace"))

    # A call's wave is in its Linkedid (the epoch each wave rewrites); its latency is counted
    # from the moment the wave's last hang-up frame was written, so it is a lower bound.
    latency = [
        arrived - pbx.torn_down_at[int(call_id.split(".")[0]) - int(EPOCH) - 10]
        for call_id, arrived in crm.completed_at.items()
    ]
    warm = [rss for at, rss in samples if at <= SOAK_SECONDS / 3]
    warmed, final = warm[-1], samples[-1][1]
    peak = max(rss for _, rss in samples)
    line = (
        f"soak: {SOAK_SECONDS:.0f} s against the `pbxcrm run` process, {waves} waves of"
        f" {SOAK_CALLS} concurrent calls ({expected_calls:,} calls, {len(crm.keys):,} deliveries,"
        f" {crm.duplicates} duplicates, a wave's hang-ups -> `completed` at the CRM median"
        f" {statistics.median(latency):.2f} s, p99 {percentile(latency, 0.99):.2f} s),"
        f" {len(agi_seconds):,} FastAGI sessions (p99 {percentile(agi_seconds, 0.99) * 1000:.0f}"
        f" ms), {len(http_seconds):,} HTTP requests (p99"
        f" {percentile(http_seconds, 0.99) * 1000:.0f} ms), {pbx.logins} AMI login(s);"
        f" pbxcrm used {cpu_share:.0%} of a core;"
        f" resident memory {warmed / 2**20:.0f} MiB after the first third,"
        f" {final / 2**20:.0f} MiB at the end, peak {peak / 2**20:.0f} MiB"
    )
    print(line)
    fault_report.append(line)
    assert waves >= 2
    assert crm.duplicates == 0
    assert crm.completions == len(crm.completed_at) == expected_calls, "a call completed twice"
    assert pbx.logins == 1, "pbxcrm dropped a healthy AMI link (watchdog) and logged in again"
    assert final - warmed < SOAK_MEMORY_GROWTH, line
