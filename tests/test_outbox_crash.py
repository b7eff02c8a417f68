"""kill -9 in the middle of recording and delivering loses nothing acknowledged.

The child process (this module run with `python -m`) records calls and delivers them to a real
HTTP CRM in the test process; the test kills it with SIGKILL mid-flight, starts it again in
drain mode, and checks at the CRM: every event whose record() returned is delivered, and each
key's first arrival respects its call's order. A key may arrive twice (it was in flight when
the process died); that is at-least-once, and it is the same key, so the CRM can deduplicate.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import aiohttp
from aiohttp import web

from crm.delivery.outbox import Outbox
from crm.store.settings import OutboxSettings, StoreSettings
from crm.store.sqlite import Store
from tests.test_store_support import FakeCrm, Received, call_with_events, make_adapter

REPO = Path(__file__).resolve().parents[1]
CALLS = 30
EVENTS_PER_CALL = 4


async def child(mode: str, db_path: str, url: str) -> None:
    store = await Store.open(StoreSettings(path=db_path, commit_window_ms=1))
    async with aiohttp.ClientSession() as http:
        adapter = make_adapter(http, url, concurrency=4)
        outbox = Outbox(store, {adapter.name: adapter}, OutboxSettings(poll_interval_seconds=0.05))
        await outbox.start()
        print("STARTED", flush=True)
        if mode == "record":

            async def one_call(i: int) -> None:
                await asyncio.sleep(i * 0.005)  # calls start one after another, like a switch
                call, events = call_with_events(f"call{i}", EVENTS_PER_CALL)
                for event in events:
                    await store.record(call, [event], [adapter])
                    print(f"ACK {adapter.name}:{event.event_id}", flush=True)
                    await asyncio.sleep(0.005)

            await asyncio.gather(*(one_call(i) for i in range(CALLS)))
            print("RECORDED", flush=True)
            await asyncio.Event().wait()  # keep delivering until killed
        else:
            while await store.reader.execute_fetchall(
                "SELECT 1 FROM outbox WHERE state = 'pending' LIMIT 1"
            ):
                await asyncio.sleep(0.02)
            await outbox.stop()
            await store.close()
            print("DRAINED", flush=True)


@asynccontextmanager
async def child_process(
    mode: str, db_path: Path, url: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.test_outbox_crash",
        mode,
        str(db_path),
        url,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            with suppress(ProcessLookupError):
                process.kill()
            await process.wait()


async def read_lines(process: asyncio.subprocess.Process, lines: list[str]) -> None:
    assert process.stdout is not None
    async for raw in process.stdout:
        lines.append(raw.decode().strip())


async def test_kill_9_mid_delivery_then_restart_delivers_every_acknowledged_event(tmp_path) -> None:
    rng = random.Random(11)

    async def jittery(received: Received, count: int) -> web.StreamResponse:
        await asyncio.sleep(rng.uniform(0.001, 0.01))  # the CRM's own think time
        return web.json_response({"status": "ok"})

    crm = await FakeCrm(behaviour=jittery).start()
    db_path = tmp_path / "crash.sqlite3"
    lines: list[str] = []
    try:
        async with child_process("record", db_path, crm.url) as first:
            reader = asyncio.create_task(read_lines(first, lines))
            await crm.wait_for(lambda: len(crm.accepted) >= 25, timeout=30)
            first.send_signal(signal.SIGKILL)
            assert await first.wait() == -signal.SIGKILL
            await reader
        acked = [line.split(" ", 1)[1] for line in lines if line.startswith("ACK ")]
        assert "RECORDED" not in lines, "the kill came too late to test a crash mid-recording"
        assert 25 <= len(acked) < CALLS * EVENTS_PER_CALL

        drain_lines: list[str] = []
        async with child_process("drain", db_path, crm.url) as second:
            await read_lines(second, drain_lines)
            assert await second.wait() == 0
        assert drain_lines[-1] == "DRAINED"
    finally:
        await crm.stop()

    arrived = [r.key for r in crm.arrivals]
    missing = set(acked) - set(arrived)
    assert not missing, f"acknowledged but never delivered: {sorted(missing)}"

    first_arrivals: dict[str, list[int]] = defaultdict(list)
    seen: set[str] = set()
    for received in crm.arrivals:
        if received.key not in seen:
            seen.add(received.key)
            first_arrivals[received.call_id].append(received.seq)
    for call_id, seqs in first_arrivals.items():
        assert seqs == sorted(seqs), f"{call_id} first arrived in order {seqs}"
        assert seqs == list(range(1, len(seqs) + 1)), f"{call_id} skipped an event: {seqs}"

    duplicates = len(arrived) - len(seen)
    assert duplicates <= 4, "only deliveries in flight at the kill (concurrency 4) may repeat"


if __name__ == "__main__":
    asyncio.run(child(*sys.argv[1:4]))
