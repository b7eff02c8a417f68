"""Reading the recorded AMI captures in tests (format: fixtures/asterisk/README.md)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ari_app.calls.rules import CallRules
from ari_app.calls.tracker import CallTracker
from ari_app.pbx.ami.events import PbxClock, frame_to_event, tracked_frame_filter
from ari_app.pbx.ami.frames import FrameReader
from crm.model import CallEvent

FIXTURES = Path(__file__).parent / "fixtures" / "asterisk"
AMI_DIR = FIXTURES / "ami"
RECONNECT_MARKER = b"# --- connection closed by server; reconnected ---"


def ami_path(scenario: str) -> Path:
    return AMI_DIR / f"{scenario}.ami"


def recorded_frames(scenario: str) -> Iterator[dict[str, str]]:
    """Every frame of a capture as a header dict, first occurrence of a header wins."""
    return frames_of(ami_path(scenario).read_bytes())


def frames_of(data: bytes) -> Iterator[dict[str, str]]:
    """The frames of any AMI byte stream (a capture, the demo's joined captures)."""
    for block in data.replace(RECONNECT_MARKER + b"\r\n", b"").decode().split("\r\n\r\n"):
        headers: dict[str, str] = {}
        for line in block.split("\r\n"):
            key, sep, value = line.partition(":")
            if sep:
                headers.setdefault(key, value.removeprefix(" "))
        if headers:
            yield headers


def tracker_steps(data: bytes) -> list[CallEvent]:
    """What the input says must reach a CRM: the pure tracker run over the same bytes, read
    through the frame filter `pbxcrm run` uses."""
    reader = FrameReader(tracked_frame_filter().including("Shutdown"))
    tracker = CallTracker(CallRules(), pbx_id="lab")
    clock = PbxClock(now=lambda: 0.0)
    steps: list[CallEvent] = []
    for frame in reader.feed(data):
        event = frame_to_event(frame, clock.stamp(frame))
        if event is not None:
            steps.extend(tracker.handle(event))
    return steps
