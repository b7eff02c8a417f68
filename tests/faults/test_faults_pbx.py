"""PBX faults with the tracker in the loop: the AMI socket cut mid-frame at any byte, Asterisk
restarting (or killed) with calls up and new calls reusing the old channel names, events for
calls pbxcrm never saw start, lost events, a half-open connection. Calls are closed (reconciled
where the PBX went quiet) and nothing reaches the CRM twice.

The restart scenarios join recordings: connection 1 and the reconnect of
`asterisk_{killed,restart}_mid_call.ami` as recorded, then, after the new Asterisk's
`FullyBooted`, every event of `inbound_answered_caller_hangs_up.ami` (an earlier instance's
call: same channel name `PJSIP/trunk-00000000`, other Uniqueids). No single capture holds a
call starting right after a restart; the bytes are all recorded, only their order is ours.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from pathlib import Path

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ari_app.app.fake_pbx import RECONNECT_MARKER, split_connections
from ari_app.app.service import Service
from ari_app.app.settings import Settings
from ari_app.calls.rules import CallRules
from ari_app.calls.tracker import CallTracker
from ari_app.pbx.ami.events import PbxClock, frame_to_event
from ari_app.pbx.channel_events import PbxDisconnected
from crm.model import CallEvent, EventKind
from tests.fakes.ami_pbx import FakePbx
from tests.fakes.crm_server import FakeCrm
from tests.faults.support import query, wait_for
from tests.recordings import AMI_DIR, ami_path, recorded_frames

SCENARIOS = sorted(
    p.name.removesuffix(".ami") for p in AMI_DIR.glob("*.ami") if not p.name.endswith(".sent.ami")
)
EMPTY_CHANNEL_LIST = {
    "Event": "CoreShowChannelsComplete",
    "EventList": "Complete",
    "ListItems": "0",
    "ActionID": "reconcile-x",
}


class HookCrm(FakeCrm):
    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/events", self._event)

    async def _event(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    def events(self) -> list[dict]:
        return [r.json() for r in self.requests if r.path == "/events"]


def make_settings(tmp_path: Path, pbx_port: int, crm_url: str, **ami: object) -> Settings:
    return Settings.model_validate(
        {
            "pbx": {
                "id": "lab",
                "ami": {
                    "port": pbx_port,
                    "username": "crm",
                    "password": "crmsecret",
                    "reconnect_initial_seconds": 0.05,
                    "reconnect_max_seconds": 0.2,
                    **ami,
                },
            },
            "store": {"path": str(tmp_path / "pbxcrm.sqlite3")},
            "outbox": {"base_delay_seconds": 0.05, "poll_interval_seconds": 0.05},
            "http": {"enabled": False},
            "agi": {"enabled": False, "survey_spool": str(tmp_path / "spool.jsonl")},
            "crm": [{"type": "webhook", "name": "hook", "url": f"{crm_url}/events"}],
        }
    )


def by_call(events: list[dict]) -> dict[str, list[tuple[int, str]]]:
    calls: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for event in events:
        calls[event["call_id"]].append((event["seq"], event["kind"]))
    return calls


def assert_clean_lifecycles(events: list[dict]) -> dict[str, list[tuple[int, str]]]:
    keys = [e["idempotency_key"] for e in events]
    assert len(keys) == len(set(keys)), "a delivery reached the CRM twice"
    calls = by_call(events)
    for call_id, steps in calls.items():
        assert [s for s, _ in steps] == list(range(1, len(steps) + 1)), (call_id, steps)
        kinds = [k for _, k in steps]
        assert kinds.count("completed") == 1 and kinds[-1] == "completed", (call_id, kinds)
    return calls


async def settle(service: Service, crm: HookCrm, tmp_path: Path, timeout: float = 15) -> None:
    assert service.pipeline is not None
    async with asyncio.timeout(timeout):
        while True:
            await service.pipeline.drain()  # what the tracker concluded is in the store
            if drained(service, crm, tmp_path):
                return
            await asyncio.sleep(0.02)


def drained(service: Service, crm: HookCrm, tmp_path: Path) -> bool:
    """No call open, every outbox row done and at the CRM."""
    assert service.pipeline is not None
    if service.pipeline.tracker.active_calls:
        return False
    db = tmp_path / "pbxcrm.sqlite3"
    rows = query(db, "SELECT count(*), coalesce(sum(state = 'done'), 0) FROM outbox")
    return bool(rows) and rows[0][0] == rows[0][1] == len(crm.events())


# -- the socket cut at any byte ---------------------------------------------------------------


def cut_points(recording: bytes, count: int, seed: int) -> list[int]:
    """Offsets spread over the stream, half of them inside a frame (not on a frame boundary)."""
    rand = random.Random(seed)
    boundaries = [i for i in range(len(recording)) if recording.startswith(b"\r\n\r\n", i)]
    inside = [rand.randrange(1, len(recording)) for _ in range(count // 2)]
    on_edges = [rand.choice(boundaries) + 4 for _ in range(count - len(inside))]
    return sorted(set(inside + on_edges))


CUT_SCENARIO = "inbound_answered_recorded"
CUTS = cut_points(ami_path(CUT_SCENARIO).read_bytes(), 16, seed=7)


@pytest.mark.parametrize("cut", CUTS)
async def test_the_ami_socket_cut_at_any_byte_leaves_every_call_closed_once(
    tmp_path: Path, cut: int
) -> None:
    crm = HookCrm()
    await crm.start()
    pbx = FakePbx(ami_path(CUT_SCENARIO), cut_after_bytes=cut)
    await pbx.start()
    service = Service(make_settings(tmp_path, pbx.port, crm.url))
    try:
        await service.start()
        await wait_for(lambda: service.ami is not None and service.ami.connects >= 2)
        await settle(service, crm, tmp_path)
    finally:
        await service.stop()
        await pbx.stop()
        await crm.stop()
    calls = assert_clean_lifecycles(crm.events())
    assert len(calls) <= 1
    recording = ami_path(CUT_SCENARIO).read_bytes()
    first_hangup = recording.index(b"Event: Hangup\r\n")
    last_hangup_end = recording.index(b"\r\n\r\n", recording.rindex(b"Event: Hangup\r\n"))
    for event in crm.events():
        if event["kind"] == "completed":
            call = event["call"]
            assert call["caller_number"] == "+79037654321"
            if cut < first_hangup:  # the PBX went quiet before any Hangup: pbxcrm closed it
                assert call["reconciled"] is True
            elif cut > last_hangup_end + 100:  # (+100: our ActionIDs differ in length)
                assert call["reconciled"] is False
                assert [k for _, k in calls[event["call_id"]]] == [
                    "ringing",
                    "answered",
                    "hangup",
                    "completed",
                ]


# -- Asterisk restarted or killed with a call up, a new call reusing the channel names ---------


def restart_then_new_call(scenario: str) -> tuple[bytes, bytes]:
    recording = ami_path(scenario).read_bytes()
    first, second = split_connections(recording)
    new_call = ami_path("inbound_answered_caller_hangs_up").read_bytes()
    blocks = [b for b in new_call.split(b"\r\n\r\n") if b.startswith(b"Event:")]
    head, goodbye = second.split(b"Response: Goodbye")
    joined = (
        first
        + RECONNECT_MARKER
        + b"\r\n"
        + head
        + b"".join(block + b"\r\n\r\n" for block in blocks)
        + b"Response: Goodbye"
        + goodbye
    )
    sent = ami_path(scenario).with_name(f"{scenario}.sent.ami").read_bytes()
    return joined, sent


@pytest.mark.parametrize("scenario", ["asterisk_killed_mid_call", "asterisk_restart_mid_call"])
async def test_a_restarted_asterisk_reusing_channel_names_gives_two_separate_clean_calls(
    tmp_path: Path, scenario: str
) -> None:
    recording, sent = restart_then_new_call(scenario)
    old_call = {"asterisk_killed_mid_call": "1795420633.0"}.get(scenario, "1795420599.3")
    crm = HookCrm()
    await crm.start()
    pbx = FakePbx(recording, sent=sent)
    await pbx.start()
    service = Service(make_settings(tmp_path, pbx.port, crm.url))
    try:
        await service.start()
        await wait_for(
            lambda: (
                {c for c, s in by_call(crm.events()).items() if s[-1][1] == "completed"}
                == {old_call, "1795417965.0"}
            )
        )
    finally:
        await service.stop()
        await pbx.stop()
        await crm.stop()
    calls = assert_clean_lifecycles(crm.events())
    assert set(calls) == {old_call, "1795417965.0"}
    finals = {e["call_id"]: e["call"] for e in crm.events() if e["kind"] == "completed"}
    assert finals[old_call]["caller_number"] != finals["1795417965.0"]["caller_number"]
    assert finals["1795417965.0"]["caller_number"] == "+79031234567"
    assert finals["1795417965.0"]["reconciled"] is False
    assert finals["1795417965.0"]["terminating_party"] == "caller"
    assert [k for _, k in calls["1795417965.0"]] == [
        "ringing",
        "answered",
        "leg_ended",
        "hangup",
        "completed",
    ]
    if scenario == "asterisk_killed_mid_call":
        assert finals[old_call]["reconciled"] is True


# -- a half-open connection -------------------------------------------------------------------


async def test_a_half_open_connection_is_dropped_and_the_call_on_it_closed(
    tmp_path: Path,
) -> None:
    """The killed-Asterisk capture, but the first connection never closes and stops answering
    Ping (hold_open): only the ping watchdog can notice."""
    crm = HookCrm()
    await crm.start()
    pbx = FakePbx(ami_path("asterisk_killed_mid_call"), hold_open=True)
    await pbx.start()
    settings = make_settings(
        tmp_path, pbx.port, crm.url, ping_interval_seconds=0.2, ping_timeout_seconds=0.3
    )
    service = Service(settings)
    try:
        await service.start()
        await wait_for(lambda: [e["kind"] for e in crm.events()][-1:] == ["completed"], 15)
        assert service.ami is not None and service.ami.connects >= 2
    finally:
        await service.stop()
        await pbx.stop()
        await crm.stop()
    calls = assert_clean_lifecycles(crm.events())
    final = crm.events()[-1]["call"]
    assert list(calls) == ["1795420633.0"]
    assert final["reconciled"] is True and final["disposition"] == "answered"


# -- events for calls never seen starting, events lost: the tracker alone, every recording ----


def replay_through_tracker(frames: list[dict[str, str]]) -> tuple[CallTracker, list[CallEvent]]:
    tracker = CallTracker(CallRules(), pbx_id="lab")
    clock = PbxClock(now=iter(float(2_000_000_000 + i) for i in range(10**6)).__next__)
    out: list[CallEvent] = []
    for frame in frames:
        event = frame_to_event(frame, clock.stamp(frame))
        if event is not None:
            out.extend(tracker.handle(event))
    # pbxcrm lost the connection, came back, and the PBX has no channels any more.
    out.extend(tracker.handle(PbxDisconnected(clock.stamp({}))))
    tracker.begin_snapshot()
    event = frame_to_event(EMPTY_CHANNEL_LIST, clock.stamp({}))
    assert event is not None
    out.extend(tracker.handle(event))
    return tracker, out


def assert_tracker_lifecycles(tracker: CallTracker, events: list[CallEvent]) -> None:
    assert tracker.active_calls == 0, "a call was left open after the PBX said it had none"
    per_call: dict[str, list[CallEvent]] = defaultdict(list)
    for event in events:
        per_call[event.call_id].append(event)
    for call_id, steps in per_call.items():
        assert [e.seq for e in steps] == list(range(1, len(steps) + 1)), call_id
        kinds = [e.kind for e in steps]
        assert kinds.count(EventKind.COMPLETED) == 1, (call_id, kinds)
        assert kinds[-1] is EventKind.COMPLETED, (call_id, kinds)
        assert steps[-1].call.ended


FRAMES = {name: list(recorded_frames(name)) for name in SCENARIOS}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_joining_a_recording_at_every_frame_closes_each_call_it_saw_exactly_once(
    scenario: str,
) -> None:
    frames = FRAMES[scenario]
    for start in range(len(frames)):
        tracker, events = replay_through_tracker(frames[start:])
        assert_tracker_lifecycles(tracker, events)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    scenario=st.sampled_from(SCENARIOS),
    seed=st.integers(0, 2**32 - 1),
    loss=st.floats(0.0, 0.5),
)
def test_losing_any_events_never_duplicates_or_leaves_a_call_open(
    scenario: str, seed: int, loss: float
) -> None:
    rand = random.Random(seed)
    frames = [f for f in FRAMES[scenario] if rand.random() >= loss]
    tracker, events = replay_through_tracker(frames)
    assert_tracker_lifecycles(tracker, events)


@settings(max_examples=200, deadline=None)
@given(
    scenarios=st.lists(st.sampled_from(SCENARIOS), min_size=2, max_size=5, unique=True),
    seed=st.integers(0, 2**32 - 1),
)
def test_interleaved_recordings_with_frames_duplicated_stay_separate_and_clean(
    scenarios: list[str], seed: int
) -> None:
    """Several captures' events merged in random order, as if their calls ran at once
    (Uniqueids differ, channel names repeat), some frames delivered twice."""
    rand = random.Random(seed)
    # Answers to a connection's own actions (login, channel lists) are left out: a channel list
    # describes the moment it was asked for, not a merged stream.
    streams = [[f for f in FRAMES[name] if "ActionID" not in f] for name in scenarios]
    merged: list[dict[str, str]] = []
    while any(streams):
        stream = rand.choice([s for s in streams if s])
        frame = stream.pop(0)
        merged.append(frame)
        if rand.random() < 0.05:
            merged.append(frame)
    tracker, events = replay_through_tracker(merged)
    assert_tracker_lifecycles(tracker, events)
