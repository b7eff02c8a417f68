"""Helpers for the AMI tests: the recordings, a frame collector that can be waited on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from ari_app.app.fake_pbx import RECONNECT_MARKER
from ari_app.pbx.ami.frames import Frame, FrameFilter, parse_frames
from ari_app.pbx.settings import AmiSettings

AMI_DIR = Path(__file__).parent / "fixtures" / "asterisk" / "ami"
RECORDINGS = sorted(p for p in AMI_DIR.glob("*.ami") if not p.name.endswith(".sent.ami"))


def recording(scenario: str) -> Path:
    return AMI_DIR / f"{scenario}.ami"


def file_frames(path: Path, frame_filter: FrameFilter | None = None) -> list[Frame]:
    """What a client should see from a recording: the events, in order, parsed straight from
    the file (marker removed). List events answering the client's own actions are left out,
    and ActionIDs dropped, since the client's ids differ from the recorded ones."""
    data = path.read_bytes().replace(RECONNECT_MARKER + b"\r\n", b"")
    out = []
    for frame in parse_frames(data, frame_filter):
        if "Event" not in frame:
            continue
        if "ActionID" in frame and frame["Event"] != "OriginateResponse":
            continue
        out.append(without_action_id(frame))
    return out


def without_action_id(frame: Frame) -> Frame:
    return {k: v for k, v in frame.items() if k != "ActionID"}


def sent_actions(path: Path) -> list[dict[str, str]]:
    """The actions (other than Login/Logoff) the recording client sent, ActionID removed."""
    sent = path.with_name(path.name.removesuffix(".ami") + ".sent.ami")
    if not sent.exists():
        return []
    actions = []
    data = sent.read_bytes().replace(RECONNECT_MARKER + b"\r\n", b"").decode()
    for block in data.split("\r\n\r\n"):
        headers = dict(line.split(": ", 1) for line in block.split("\r\n") if ": " in line)
        if headers.get("Action", "").lower() not in ("", "login", "logoff"):
            headers.pop("ActionID", None)
            actions.append(headers)
    return actions


def settings_for(port: int, **overrides: object) -> AmiSettings:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "username": "crm",
        "password": "crmsecret",
        "reconnect_initial_seconds": 0.05,
        "reconnect_max_seconds": 0.2,
        "action_timeout_seconds": 2.0,
        "connect_timeout_seconds": 2.0,
    }
    values.update(overrides)
    return AmiSettings.model_validate(values)


class Collector:
    """on_frame / on_connected / on_disconnected recorder whose state can be awaited."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.connected = 0
        self.disconnects: list[str] = []
        self._changed = asyncio.Event()

    def on_frame(self, frame: Frame) -> None:
        self.frames.append(frame)
        self._changed.set()

    async def on_connected(self) -> None:
        self.connected += 1
        self._changed.set()

    def on_disconnected(self, reason: str) -> None:
        self.disconnects.append(reason)
        self._changed.set()

    def changed(self) -> None:
        self._changed.set()

    async def until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        async def wait() -> None:
            while not condition():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout)
