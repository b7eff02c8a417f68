"""Two `pbxcrm run` processes, each beside its own (fake) PBX, share one PostgreSQL; one is
killed with -9 mid-delivery and the other delivers what it had leased once the lease expires.

The PBX traffic is the shipped demo capture (recorded Asterisk AMI), replayed by each FakePbx
under a different [pbx] id, so the two instances' calls differ by pbx_id only.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path

import asyncpg
from aiohttp import web

from ari_app.app.demo import demo_recording
from tests.fakes.ami_pbx import FakePbx
from tests.fakes.crm_server import FakeCrm
from tests.pg_server import pg_server_url, pg_url  # noqa: F401 - fixtures
from tests.recordings import tracker_steps

# The demo capture's lifecycle steps for one webhook, as the pure tracker reads the same bytes.
STEPS_PER_PBX = len(tracker_steps(demo_recording()))


class SlowWebhookCrm(FakeCrm):
    def __init__(self, delay: float) -> None:
        self.delay = delay
        super().__init__()

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/events", self._event)

    async def _event(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.delay)  # the CRM's own latency, so the kill lands mid-delivery
        return web.json_response({"ok": True})

    def events(self) -> list[dict]:
        return [r.json() for r in self.requests if r.path == "/events"]


def config_text(tmp_path: Path, name: str, pbx_port: int, crm_url: str, url: str) -> str:
    return f"""
[pbx]
id = "{name}"
[pbx.ami]
host = "127.0.0.1"
port = {pbx_port}
username = "crm"
password = "crmsecret"
reconnect_max_seconds = 1
[store]
url = "{url}"
[outbox]
base_delay_seconds = 0.05
max_delay_seconds = 0.2
poll_interval_seconds = 0.2
lease_seconds = 2
[http]
enabled = false
[agi]
enabled = false
survey_spool = "{tmp_path / (name + "-spool.jsonl")}"
[[crm]]
type = "webhook"
name = "hook"
url = "{crm_url}/events"
concurrency = 1
"""


async def wait_for(condition, timeout: float = 60.0, describe=None) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not await condition():
                await asyncio.sleep(0.05)
    except TimeoutError:
        state = await describe() if describe is not None else ""
        raise AssertionError(
            f"timed out after {timeout:g}s waiting for {condition.__name__}: {state}"
        ) from None


async def test_a_pbxcrm_killed_mid_delivery_has_its_calls_delivered_by_the_other_instance(
    tmp_path: Path,
    suite_logs,
    pg_url: str,  # noqa: F811 - the fixture
) -> None:
    crm = SlowWebhookCrm(delay=0.1)
    await crm.start()
    pbxes = [FakePbx(demo_recording(), await_actions=False) for _ in range(2)]
    for pbx in pbxes:
        await pbx.start()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "run.log").open("wb")
    processes = []
    db = await asyncpg.connect(pg_url)

    async def count(sql: str) -> int:
        try:
            return int(await db.fetchval(sql))
        except asyncpg.UndefinedTableError:
            return 0

    try:
        for name, pbx in zip(["pbx-a", "pbx-b"], pbxes, strict=True):
            config = tmp_path / f"{name}.toml"
            config.write_text(config_text(tmp_path, name, pbx.port, crm.url, pg_url))
            command = [sys.executable, "-m", "ari_app.app.cli", "run", "--config", str(config)]
            processes.append(
                await asyncio.create_subprocess_exec(*command, stdout=log, stderr=log, env=env)
            )
        victim, survivor = processes

        async def all_recorded_some_delivered() -> bool:
            rows = await count("SELECT COUNT(*) FROM outbox")
            leased = await count(
                "SELECT COUNT(*) FROM outbox WHERE state = 'pending' AND claimed_by IS NOT NULL"
            )
            return rows == 2 * STEPS_PER_PBX and leased >= 1 and len(crm.events()) >= 4

        async def progress() -> str:
            counts = await db.fetch("SELECT pbx_id, state, COUNT(*) FROM outbox GROUP BY 1, 2")
            return f"outbox {[tuple(row) for row in counts]}, CRM got {len(crm.events())}"

        await wait_for(all_recorded_some_delivered, describe=progress)
        assert len(crm.events()) < 2 * STEPS_PER_PBX
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
        delivered_before = len(crm.events())

        async def everything_done() -> bool:
            done = await count("SELECT COUNT(*) FROM outbox WHERE state = 'done'")
            return done == 2 * STEPS_PER_PBX

        async def unfinished() -> str:
            rows = await db.fetch(
                "SELECT id, state, claimed_by, claimed_until, next_attempt_at, pbx_id, call_id,"
                " seq, attempts, last_error FROM outbox WHERE state <> 'done' ORDER BY id"
            )
            return f"now={time.time()} " + "; ".join(str(dict(row)) for row in rows)

        await wait_for(everything_done, describe=unfinished)
        survivor.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(survivor.wait(), 20) == 0
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
        await db.close()
        for pbx in pbxes:
            await pbx.stop()
        await crm.stop()
        log.close()
        suite_logs.add_text((tmp_path / "run.log").read_text(errors="backslashreplace"))

    events = crm.events()
    keys = [e["idempotency_key"] for e in events]
    assert len(set(keys)) == 2 * STEPS_PER_PBX
    # Only the delivery in flight at the kill (concurrency 1) may reach the CRM twice, and then
    # with the same key, which the CRM drops.
    assert len(keys) - len(set(keys)) <= 1
    first_seen: dict[str, list[int]] = defaultdict(list)
    seen: set[str] = set()
    for event, key in zip(events, keys, strict=True):
        if key in seen:
            continue
        seen.add(key)
        pbx_id = key.split(":")[1]
        first_seen[f"{pbx_id}/{event['call_id']}"].append(event["seq"])
    assert {name.split("/")[0] for name in first_seen} == {"pbx-a", "pbx-b"}
    for call, seqs in first_seen.items():
        assert seqs == list(range(1, len(seqs) + 1)), f"{call} out of order or gapped: {seqs}"
    print(
        f"failover test: {delivered_before} delivered before kill -9,"
        f" {len(keys)} requests for {len(set(keys))} deliveries"
    )
