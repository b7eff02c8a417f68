"""Nothing lost: pbxcrm killed with -9 mid-delivery, and a CRM that is down then back.

The pbxcrm under test is the real `pbxcrm run` process (crash test) or the real Service (outage
test), fed by the fake PBX over TCP, delivering to a real aiohttp CRM on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import sys
from collections import defaultdict
from pathlib import Path

from aiohttp import web

from ari_app.app.demo import demo_recording
from ari_app.app.service import Service
from ari_app.app.settings import Settings
from tests.fakes.ami_pbx import FakePbx
from tests.fakes.crm_server import FakeCrm
from tests.recordings import tracker_steps

# The demo capture's lifecycle steps for one webhook, as the pure tracker reads the same bytes.
EXPECTED_DELIVERIES = len(tracker_steps(demo_recording()))


class SlowWebhookCrm(FakeCrm):
    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        super().__init__()

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/events", self._event)

    async def _event(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.delay)
        return web.json_response({"ok": True})

    def events(self) -> list[dict]:
        return [r.json() for r in self.requests if r.path == "/events"]


def config_text(tmp_path: Path, pbx_port: int, crm_url: str) -> str:
    return f"""
[pbx]
id = "lab"
[pbx.ami]
host = "127.0.0.1"
port = {pbx_port}
username = "crm"
password = "crmsecret"
reconnect_max_seconds = 1
[store]
path = "{tmp_path / "pbxcrm.sqlite3"}"
[outbox]
base_delay_seconds = 0.05
max_delay_seconds = 0.2
poll_interval_seconds = 0.05
[http]
enabled = false
[agi]
enabled = false
survey_spool = "{tmp_path / "spool.jsonl"}"
[[crm]]
type = "webhook"
name = "hook"
url = "{crm_url}/events"
concurrency = 1
"""


def outbox_rows(db: Path) -> int:
    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(db, timeout=5)) as conn:
        try:
            return conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


async def wait_for(condition, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


def assert_each_call_in_order(events: list[dict]) -> None:
    first_seen: dict[str, list[int]] = defaultdict(list)
    seen_keys: set[str] = set()
    for event in events:
        if event["idempotency_key"] in seen_keys:
            continue  # a redelivery after the crash: same key, the CRM drops it
        seen_keys.add(event["idempotency_key"])
        first_seen[event["call_id"]].append(event["seq"])
    for call_id, seqs in first_seen.items():
        assert seqs == sorted(seqs), f"call {call_id} arrived out of order: {seqs}"
        assert seqs == list(range(1, len(seqs) + 1)), f"call {call_id} has gaps: {seqs}"


async def test_pbxcrm_killed_mid_delivery_delivers_everything_after_restart(
    tmp_path: Path, suite_logs
) -> None:
    crm = SlowWebhookCrm(delay=0.08)
    await crm.start()
    pbx = FakePbx(demo_recording(), await_actions=False)
    await pbx.start()
    config = tmp_path / "pbxcrm.toml"
    config.write_text(config_text(tmp_path, pbx.port, crm.url))
    command = [sys.executable, "-m", "ari_app.app.cli", "run", "--config", str(config)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "run.log").open("wb")
    first = await asyncio.create_subprocess_exec(*command, stdout=log, stderr=log, env=env)
    try:
        # Everything recorded and queued, some of it delivered: now kill it.
        await wait_for(lambda: outbox_rows(tmp_path / "pbxcrm.sqlite3") == EXPECTED_DELIVERIES)
        await wait_for(lambda: len(crm.events()) >= 5)
        assert len(crm.events()) < EXPECTED_DELIVERIES
        first.send_signal(signal.SIGKILL)
        await first.wait()
        delivered_before = len(crm.events())

        second = await asyncio.create_subprocess_exec(*command, stdout=log, stderr=log, env=env)
        try:
            await wait_for(
                lambda: len({e["idempotency_key"] for e in crm.events()}) == EXPECTED_DELIVERIES
            )
        finally:
            second.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(second.wait(), 20) == 0
    finally:
        if first.returncode is None:
            first.kill()
        await pbx.stop()
        await crm.stop()
        log.close()
        suite_logs.add_text((tmp_path / "run.log").read_text(errors="backslashreplace"))
    events = crm.events()
    keys = [e["idempotency_key"] for e in events]
    assert len(set(keys)) == EXPECTED_DELIVERIES
    # At most the one delivery in flight at the kill (concurrency 1) is sent twice.
    assert len(keys) - len(set(keys)) <= 1
    assert delivered_before < EXPECTED_DELIVERIES
    assert_each_call_in_order(events)
    print(
        f"crash test: {delivered_before} delivered before kill -9, "
        f"{len(keys)} requests for {len(set(keys))} deliveries after restart"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_crm_down_then_up_drains_everything_in_order(tmp_path: Path) -> None:
    port = free_port()
    pbx = FakePbx(demo_recording(), await_actions=False)
    await pbx.start()
    settings = Settings.model_validate(
        {
            "pbx": {
                "id": "lab",
                "ami": {"port": pbx.port, "username": "crm", "password": "crmsecret"},
            },
            "store": {"path": str(tmp_path / "pbxcrm.sqlite3")},
            "outbox": {
                "base_delay_seconds": 0.05,
                "max_delay_seconds": 0.3,
                "poll_interval_seconds": 0.05,
            },
            "http": {"enabled": False},
            "agi": {"enabled": False, "survey_spool": str(tmp_path / "spool.jsonl")},
            "crm": [
                {
                    "type": "webhook",
                    "name": "hook",
                    "url": f"http://127.0.0.1:{port}/events",
                    "max_attempts": 1000,
                }
            ],
        }
    )
    service = Service(settings)
    crm = SlowWebhookCrm()
    try:
        await service.start()
        await wait_for(lambda: outbox_rows(tmp_path / "pbxcrm.sqlite3") == EXPECTED_DELIVERIES)

        def retried() -> bool:
            with contextlib.closing(sqlite3.connect(tmp_path / "pbxcrm.sqlite3")) as conn:
                row = conn.execute("SELECT count(*) FROM outbox WHERE attempts >= 2").fetchone()
            return row[0] > 0

        await wait_for(retried)  # the CRM refused connections and pbxcrm kept trying
        runner_app = crm.app
        runner = web.AppRunner(runner_app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        try:
            await wait_for(lambda: len(crm.events()) >= EXPECTED_DELIVERIES)
        finally:
            await runner.cleanup()
    finally:
        await service.stop()
        await pbx.stop()
    events = crm.events()
    assert len({e["idempotency_key"] for e in events}) == EXPECTED_DELIVERIES
    assert_each_call_in_order(events)


async def test_pbxcrm_killed_mid_call_closes_the_call_after_restart(
    tmp_path: Path, suite_logs
) -> None:
    """Killed while the call is up; by the restart the PBX has no channel for it any more."""
    from tests.recordings import ami_path

    crm = SlowWebhookCrm()
    await crm.start()
    # Recorded pace: the call is up for ~6 s, long enough to kill pbxcrm in the middle.
    pbx = FakePbx(ami_path("inbound_answered_caller_hangs_up"), await_actions=False, pace=1.0)
    await pbx.start()
    config = tmp_path / "pbxcrm.toml"
    config.write_text(config_text(tmp_path, pbx.port, crm.url))
    command = [sys.executable, "-m", "ari_app.app.cli", "run", "--config", str(config)]
    log = (tmp_path / "run.log").open("wb")
    first = await asyncio.create_subprocess_exec(*command, stdout=log, stderr=log)
    try:
        await wait_for(lambda: [e["kind"] for e in crm.events()][:2] == ["ringing", "answered"])
        first.send_signal(signal.SIGKILL)
        await first.wait()
        second = await asyncio.create_subprocess_exec(*command, stdout=log, stderr=log)
        try:
            await wait_for(lambda: len({e["idempotency_key"] for e in crm.events()}) >= 4)
        finally:
            second.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(second.wait(), 20) == 0
    finally:
        if first.returncode is None:
            first.kill()
        await pbx.stop()
        await crm.stop()
        log.close()
        suite_logs.add_text((tmp_path / "run.log").read_text(errors="backslashreplace"))
    # The step in flight at the kill may arrive twice, with the same key (at-least-once).
    first_arrivals: dict[str, dict] = {}
    for event in crm.events():
        first_arrivals.setdefault(event["idempotency_key"], event)
    events = list(first_arrivals.values())
    assert len(crm.events()) - len(events) <= 1
    assert [(e["seq"], e["kind"]) for e in events] == [
        (1, "ringing"),
        (2, "answered"),
        (3, "hangup"),
        (4, "completed"),
    ]
    final = events[-1]["call"]
    assert final["reconciled"] is True
    assert final["agent_extension"] == "7181"
    assert final["caller_number"] == "+79031234567"
    assert final["disposition"] == "answered"
