"""pbxcrm_ami_events_total counts every tracked AMI frame by event name.

The pipeline sums a read's frames and adds them to the counter once per loop turn, so the
recorded call is fed frame by frame (as one read would deliver it) and the counter is read
after the loop has turned.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from ari_app.calls.pipeline import Pipeline
from ari_app.calls.rules import CallRules
from crm.metrics import ami_events_total
from crm.store.settings import StoreSettings
from crm.store.sqlite import Store
from tests.recordings import recorded_frames


def counted(name: str) -> float:
    return ami_events_total.labels(name)._value.get()


async def test_every_frame_is_counted_by_name_once_the_loop_turns(tmp_path: Path) -> None:
    store = await Store.open(StoreSettings(path=str(tmp_path / "pbxcrm.sqlite3")))
    try:
        pipeline = Pipeline(CallRules(), store, [], pbx_id="lab")
        frames = [f for f in recorded_frames("inbound_answered_caller_hangs_up") if "Event" in f]
        want = Counter(frame["Event"] for frame in frames)
        before = {name: counted(name) for name in want}
        for frame in frames:
            pipeline.on_ami_frame(frame)
        await asyncio.sleep(0)
        assert {name: counted(name) - before[name] for name in want} == dict(want)
        await pipeline.drain()
    finally:
        await store.close()
