"""A call open when pbxcrm stopped: followed on if the PBX still has it, closed at the last
moment pbxcrm saw it alive (and marked `end_estimated`) if it ended meanwhile.

The tracker tests feed recorded frames; the last test runs the real `pbxcrm run` process,
kills it with -9 mid-call and restarts it after the call ended on the PBX.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from ari_app.calls.rules import CallRules
from ari_app.calls.tracker import CallTracker
from ari_app.pbx.ami.events import PbxClock, frame_to_event
from ari_app.pbx.channel_events import SnapshotComplete
from crm.model import CallEvent, EventKind, Party
from tests.fakes.ami_pbx import FakePbx
from tests.recordings import ami_path, recorded_frames
from tests.test_e2e_crash_and_outage import SlowWebhookCrm, config_text, wait_for

RULES = CallRules(trunk_endpoints=["trunk"], trunk_contexts=["from-trunk"])


def _frames_until_answered(scenario: str) -> tuple[list[CallEvent], list[dict[str, str]]]:
    tracker = CallTracker(RULES, pbx_id="lab")
    clock = PbxClock(now=lambda: 0.0)
    frames = list(recorded_frames(scenario))
    events: list[CallEvent] = []
    for index, frame in enumerate(frames):
        event = frame_to_event(frame, clock.stamp(frame))
        if event is not None:
            events.extend(tracker.handle(event))
        if events and events[-1].kind is EventKind.ANSWERED:
            return events, frames[index + 1 :]
    raise AssertionError(f"{scenario}: never answered")


def test_a_restored_call_followed_to_its_real_hangup_is_not_reconciled() -> None:
    frames = list(recorded_frames("mid_call_connect_reconcile"))
    clock = PbxClock(now=lambda: 0.0)
    first = CallTracker(RULES, pbx_id="lab")
    before: list[CallEvent] = []
    for frame in frames:
        event = frame_to_event(frame, clock.stamp(frame))
        if event is not None:
            before.extend(first.handle(event))
        if frame.get("Event") == "CoreShowChannelsComplete":
            break
    # Killed here, restarted: the recorded channel list shows the call, then its hangup. This
    # capture starts mid-call (the first run reconciled it); as stored by a run that saw the
    # call from its start, it is not reconciled.
    stored = before[-1].call.model_copy(update={"reconciled": False})
    second = CallTracker(RULES, pbx_id="lab")
    second.restore(stored, last_seq=before[-1].seq, sent={EventKind.ANSWERED})
    after: list[CallEvent] = []
    for frame in frames:
        event = frame_to_event(frame, clock.stamp(frame))
        if event is not None:
            after.extend(second.handle(event))
    assert [e.kind.value for e in after if e.kind.value != "leg_ended"] == ["hangup", "completed"]
    final = after[-1].call
    assert final.terminating_party is Party.CALLER
    assert final.reconciled is False
    assert final.end_estimated is False


def test_a_call_that_ended_while_pbxcrm_was_down_ends_at_its_last_heartbeat() -> None:
    before, rest = _frames_until_answered("inbound_answered_caller_hangs_up")
    answered = before[-1].call
    assert answered.answer_time is not None
    hangup_ts = next(float(f["Timestamp"]) for f in rest if f.get("Event") == "Hangup")
    heartbeat = answered.answer_time.timestamp() + 4.0
    assert heartbeat < hangup_ts  # the call was still up at the last heartbeat
    second = CallTracker(RULES, pbx_id="lab")
    second.restore(
        answered, last_seq=before[-1].seq, sent={e.kind for e in before}, alive_until=heartbeat
    )
    closing = second.handle(SnapshotComplete(ts=hangup_ts + 60))
    assert [e.kind.value for e in closing if e.kind.value != "leg_ended"] == ["hangup", "completed"]
    final = closing[-1].call
    assert final.end_time is not None
    assert final.end_time.timestamp() == pytest.approx(heartbeat)
    assert final.talk_seconds == pytest.approx(4.0, abs=0.01)
    assert final.end_estimated is True
    assert final.reconciled is True


def test_a_call_whose_hangup_was_seen_is_not_estimated() -> None:
    tracker = CallTracker(RULES, pbx_id="lab")
    clock = PbxClock(now=lambda: 0.0)
    events: list[CallEvent] = []
    for frame in recorded_frames("inbound_answered_caller_hangs_up"):
        event = frame_to_event(frame, clock.stamp(frame))
        if event is not None:
            events.extend(tracker.handle(event))
    assert events[-1].kind is EventKind.COMPLETED
    assert events[-1].call.end_estimated is False


def _heartbeat_in(db: Path) -> float | None:
    if not db.exists():
        return None
    with contextlib.closing(sqlite3.connect(db, timeout=5)) as conn:
        try:
            row = conn.execute("SELECT value FROM kv WHERE key = 'calls_alive_at:lab'").fetchone()
        except sqlite3.OperationalError:
            return None
    return None if row is None else float(row[0])


async def test_pbxcrm_killed_mid_call_and_restarted_after_it_ended_ends_it_at_the_heartbeat(
    tmp_path: Path,
    suite_logs,
) -> None:
    path = ami_path("inbound_answered_caller_hangs_up")
    frames = list(recorded_frames("inbound_answered_caller_hangs_up"))
    answer_ts = next(float(f["Timestamp"]) for f in frames if f.get("Event") == "BridgeEnter")
    hangup_ts = max(float(f["Timestamp"]) for f in frames if f.get("Event") == "Hangup")
    crm = SlowWebhookCrm()
    await crm.start()
    # Recorded pace: the call is up for ~6 s; pbxcrm is killed in the middle of it.
    pbx = FakePbx(path, await_actions=False, pace=1.0)
    await pbx.start()
    config = tmp_path / "pbxcrm.toml"
    config.write_text(
        config_text(tmp_path, pbx.port, crm.url).replace(
            "[store]", "[calls]\nheartbeat_seconds = 0.2\n[store]"
        )
    )
    db = tmp_path / "pbxcrm.sqlite3"
    command = [sys.executable, "-m", "ari_app.app.cli", "run", "--config", str(config)]
    log = (tmp_path / "run.log").open("wb")
    first = await asyncio.create_subprocess_exec(*command, stdout=log, stderr=log)
    try:
        await wait_for(lambda: [e["kind"] for e in crm.events()][:2] == ["ringing", "answered"])
        # Killed once a heartbeat after the answer is stored (this only picks the moment).
        await wait_for(lambda: (_heartbeat_in(db) or 0.0) > answer_ts + 1.0)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        # The fake PBX's next connection is the PBX after the call ended: no channels.
        second = await asyncio.create_subprocess_exec(*command, stdout=log, stderr=log)
        try:
            await wait_for(lambda: "completed" in [e["kind"] for e in crm.events()])
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
    final = [e for e in crm.events() if e["kind"] == "completed"][-1]["call"]
    assert final["end_estimated"] is True
    assert final["reconciled"] is True
    # Not at the answer (talk 0 s): at least the time up to the kill, never past the real end.
    assert final["talk_seconds"] >= 1.0
    from datetime import datetime

    end = datetime.fromisoformat(final["end_time"]).timestamp()
    assert answer_ts + 1.0 <= end <= hangup_ts
