"""Steps added from outside the PBX's event stream (survey, note) right as the call ends.

The recorded call `inbound_answered_caller_hangs_up` is fed frame by frame; the tracker
closes it and hands its last steps to the store's writer, which commits them a moment later.
A survey rating arriving in that moment must be numbered after them, not over them (the store
keeps one step per seq, so an equal seq would lose one of the two).
"""

from __future__ import annotations

from pathlib import Path

from ari_app.calls.pipeline import Pipeline
from ari_app.calls.rules import CallRules
from crm.model import EventKind
from crm.store.settings import StoreSettings
from crm.store.sqlite import Store
from tests.recordings import recorded_frames

CALL_ID = "1795417965.0"


async def test_a_survey_right_after_the_hang_up_follows_the_calls_last_step(
    tmp_path: Path,
) -> None:
    store = await Store.open(StoreSettings(path=str(tmp_path / "pbxcrm.sqlite3")))
    try:
        pipeline = Pipeline(CallRules(), store, [], pbx_id="lab")
        for frame in recorded_frames("inbound_answered_caller_hangs_up"):
            if "Event" in frame:
                pipeline.on_ami_frame(frame)
        assert pipeline.tracker.call_id_of(CALL_ID) is None  # closed, steps not committed yet
        survey = await pipeline.add_call_event(CALL_ID, EventKind.SURVEY, data={"rating": "9"})
        await pipeline.drain()
        stored = await store.events_for("lab", CALL_ID)
        kinds = [event.kind for event in stored]
        assert survey is not None
        assert kinds[-2:] == [EventKind.COMPLETED, EventKind.SURVEY]
        assert [event.seq for event in stored] == list(range(1, len(stored) + 1))
    finally:
        await store.close()
