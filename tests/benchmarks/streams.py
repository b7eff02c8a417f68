"""AMI byte streams for the benchmarks, made from the recorded calls, and what they must yield.

`tests.fakes.ami_streams.replicate()` gives every copy of the recordings its own Uniqueids,
Linkedids and channel names; the copies are then interleaved frame by frame in groups, so that a
group's calls are all in progress at once (a busy PBX), while each call's own frames keep their
order.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ari_app.calls.rules import CallRules
from ari_app.calls.tracker import CallTracker
from ari_app.pbx.ami.events import PbxClock, frame_to_event, tracked_frame_filter
from ari_app.pbx.ami.frames import parse_frames
from crm.model import EventKind
from tests.fakes.ami_streams import replicate
from tests.recordings import ami_path

SEP = b"\r\n\r\n"

# Every recorded scenario that is one whole call seen from its start (the restart/kill and
# mid-call captures end or begin mid-call by design and would leave calls open or unknown).
CALL_SCENARIOS: tuple[str, ...] = (
    "inbound_answered_caller_hangs_up",
    "inbound_answered_agent_hangs_up",
    "inbound_no_answer_voicemail",
    "inbound_abandoned_while_ringing",
    "inbound_busy_agent",
    "inbound_answered_recorded",
    "inbound_queue_answered",
    "outbound_agent_dials",
    "click_to_call_originate",
    "click_to_call_agent_no_answer",
    "ivr_agi_survey",
    "ivr_agi_caller_hangs_up",
)

# The first frame of these ends a call's "open" phase (memory benchmark: calls kept open).
_HANGUP_EVENTS = (b"Event: HangupRequest\r", b"Event: SoftHangupRequest\r", b"Event: Hangup\r")


@dataclass(slots=True)
class Stream:
    banner: bytes
    login: bytes  # the recorded Login response block (no trailing blank line)
    frames: list[bytes]  # event frames, CRLF lines, no trailing blank line
    copies: int
    per_copy: int  # frames per copy

    @property
    def body(self) -> bytes:
        return SEP.join(self.frames) + SEP if self.frames else b""

    @property
    def bytes_per_event(self) -> float:
        return sum(len(f) + 4 for f in self.frames) / max(1, len(self.frames))

    @property
    def headers_per_event(self) -> float:
        return sum(f.count(b"\r\n") + 1 for f in self.frames) / max(1, len(self.frames))


def _split(raw: bytes) -> tuple[bytes, bytes, list[bytes]]:
    banner_line, _, rest = raw.partition(b"\r\n")
    blocks = [b for b in rest.split(SEP) if b]
    login, *events = blocks
    if events and events[-1].startswith(b"Response: Goodbye"):
        events.pop()
    return banner_line, login, events


def build_stream(
    copies: int,
    *,
    interleave: int = 1,
    scenarios: tuple[str, ...] = CALL_SCENARIOS,
    open_calls_only: bool = False,
) -> Stream:
    """`copies` copies of the scenarios' events, interleaved in groups of `interleave` copies.

    `open_calls_only` keeps each scenario's frames only up to its first hangup frame, so every
    call is left in progress (one scenario = one call; used with single-call scenarios).
    """
    per_scenario: list[list[list[bytes]]] = []
    banner = login = b""
    for scenario in scenarios:
        banner, login, frames = _split(replicate(ami_path(scenario), max(1, copies)))
        if copies == 0:
            frames = []
        per = len(frames) // max(1, copies)
        assert per * copies == len(frames), f"{scenario}: copies differ in length"
        copy_frames = [frames[i * per : (i + 1) * per] for i in range(copies)]
        if open_calls_only:
            copy_frames = [_until_hangup(c) for c in copy_frames]
        per_scenario.append(copy_frames)
    # One copy = every scenario's frames of that copy, in scenario order.
    copies_frames: list[list[bytes]] = [
        [f for scenario_copies in per_scenario for f in scenario_copies[c]] for c in range(copies)
    ]
    per_copy = len(copies_frames[0]) if copies_frames else 0
    frames: list[bytes] = []
    for start in range(0, copies, max(1, interleave)):
        group = copies_frames[start : start + interleave]
        frames.extend(_round_robin(group))
    return Stream(banner, login, frames, copies, per_copy)


def _until_hangup(frames: list[bytes]) -> list[bytes]:
    for i, frame in enumerate(frames):
        if frame.startswith(_HANGUP_EVENTS):
            return frames[:i]
    return frames


def _round_robin(group: list[list[bytes]]) -> list[bytes]:
    out: list[bytes] = []
    longest = max((len(g) for g in group), default=0)
    for i in range(longest):
        for frames in group:
            if i < len(frames):
                out.append(frames[i])
    return out


@dataclass(slots=True)
class Expected:
    """What one copy of the scenarios must produce, from the pure call tracker."""

    call_events: int = 0
    calls: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    # Index (within one copy's frames) of the frame that makes the tracker emit each HANGUP.
    hangup_frames: list[int] = field(default_factory=list)


def expected_per_copy(
    scenarios: tuple[str, ...] = CALL_SCENARIOS, rules: CallRules | None = None
) -> Expected:
    """One copy of the scenarios, frame by frame, through the tracker the pipeline uses."""
    single = build_stream(1, scenarios=scenarios)
    tracker = CallTracker(rules or CallRules(), pbx_id="bench", source="ami")
    clock = PbxClock()
    frame_filter = tracked_frame_filter()
    expected = Expected()
    calls: set[str] = set()
    for index, raw in enumerate(single.frames):
        for frame in parse_frames(raw + SEP, frame_filter):
            event = frame_to_event(frame, clock.stamp(frame))
            if event is None:
                continue
            for call_event in tracker.handle(event):
                expected.call_events += 1
                expected.kinds[call_event.kind.value] += 1
                calls.add(call_event.call_id)
                if call_event.kind is EventKind.HANGUP:
                    expected.hangup_frames.append(index)
    expected.calls = len(calls)
    return expected


def wanted_frames(stream: Stream) -> int:
    """How many of the stream's frames the pipeline's frame filter lets through."""
    return len(parse_frames(stream.body, tracked_frame_filter()))
