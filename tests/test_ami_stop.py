"""AmiClient.stop() ends the connection task whenever it is called, even while connecting.

On Python 3.11 `asyncio.wait_for` drops a cancel that lands as the awaited connection
completes, so a cancel alone cannot be trusted to stop a session that is still connecting
or logging in: these tests stop the client at each of its first loop steps.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from ari_app.pbx.ami.client import AmiClient
from tests.fakes.ami_pbx import FakePbx
from tests.test_ami_support import Collector, recording, settings_for

EARLY_STEPS = 40


def _ami_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("ami ") and not t.done()]


async def test_stop_at_every_early_loop_step_ends_the_connection_task(caplog):
    caplog.set_level(logging.WARNING, logger="ari_app.pbx.ami.client")
    async with FakePbx(recording("inbound_busy_agent")) as pbx:
        for step in range(EARLY_STEPS):
            seen = Collector()
            client = AmiClient(
                settings_for(pbx.port),
                on_frame=seen.on_frame,
                on_connected=seen.on_connected,
            )
            await client.start()
            for _ in range(step):
                await asyncio.sleep(0)
            # Bounded here too, so that a regression fails this test instead of hanging it.
            stopping = asyncio.create_task(client.stop())
            done, _ = await asyncio.wait({stopping}, timeout=10)
            assert stopping in done, f"stop() called {step} loop steps after start() hung"
            stopping.result()
            assert _ami_tasks() == [], f"stop() at step {step} left the AMI task running"
            assert not client.connected
    assert "did not end" not in caplog.text


@pytest.mark.parametrize("step", [0, 3, 6])
async def test_a_stopped_client_never_logs_in_afterwards(step: int):
    async with FakePbx(recording("inbound_busy_agent")) as pbx:
        seen = Collector()
        client = AmiClient(
            settings_for(pbx.port), on_frame=seen.on_frame, on_connected=seen.on_connected
        )
        await client.start()
        for _ in range(step):
            await asyncio.sleep(0)
        await asyncio.wait_for(client.stop(), 10)
        connects = client.connects
        await asyncio.sleep(0.2)
        assert client.connects == connects
