"""What every part of CallTracker may use of the whole: its state and the methods another part
or CallTracker itself defines.

CallTracker (tracker.py) is assembled from parts (transfers.py, reconcile.py, legs.py) that
read one shared state. The declarations here exist only for the type checker: at run time this
class is empty, so nothing in it can shadow the real definitions, which come earlier in
CallTracker's MRO.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from ari_app.calls.rules import CallRules
from ari_app.calls.state import CallState, TrackedChannel
from crm.model import CallEvent, EventKind


class TrackerPart:
    rules: CallRules
    _recording_links: Any
    pbx_id: str
    source: str
    _channels: dict[str, TrackedChannel]
    _calls: dict[str, CallState]
    _by_linkedid: dict[str, CallState]
    _closed_linkedids: OrderedDict[str, None]
    _snapshot_seen: set[str]
    _snapshot_mark: int | None
    _tick: int
    _gone: OrderedDict[str, None]
    _by_name: dict[str, TrackedChannel]

    if TYPE_CHECKING:
        # tracker.py
        def _chan(self, uniqueid: str | None, ts: float) -> TrackedChannel | None: ...

        def _device_behind(self, chan: TrackedChannel | None) -> TrackedChannel | None: ...

        def _add_channel(
            self,
            ts: float,
            uniqueid: str,
            linkedid: str,
            channel: str,
            context: str,
            exten: str,
            caller_num: str,
            caller_name: str,
        ) -> TrackedChannel: ...

        def _emit(
            self,
            state: CallState,
            kind: EventKind,
            ts: float,
            *,
            extension: str | None = None,
            data: dict[str, object] | None = None,
            ended: bool = False,
        ) -> CallEvent: ...

        # transfers.py
        def _join_dialled(
            self, caller_uniqueid: str | None, dest: TrackedChannel, ts: float
        ) -> list[CallEvent]: ...

        # legs.py
        def _end_leg(self, chan: TrackedChannel, ts: float, cause: int | None) -> CallEvent: ...

        def _end_open_legs(self, state: CallState, ts: float) -> list[CallEvent]: ...

        def _complete(self, state: CallState, ts: float) -> list[CallEvent]: ...
