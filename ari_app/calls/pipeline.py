"""PBX events -> tracker -> store + outbox: the one path every call takes.

The pipeline is fed synchronously (AMI frames or channel events, in arrival order) and hands
what the tracker concludes to the store in the same order; the store's single writer keeps that
order, so each call's lifecycle reaches the outbox ringing-before-answered-before-hangup.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from ari_app.calls.rules import CallRules
from ari_app.calls.tracker import CallTracker
from ari_app.pbx.ami.events import PbxClock, frame_to_event
from ari_app.pbx.channel_events import ChannelEvent, PbxDisconnected, SnapshotComplete
from crm import metrics
from crm.dialects.base import Adapter
from crm.model import Call, CallEvent, EventKind
from crm.store.interface import CallStore

log = logging.getLogger("pbxcrm.calls")

CallEventListener = Callable[[CallEvent], None]
EventCheck = Callable[[list[CallEvent]], list[CallEvent]]
# kv key of the heartbeat: the last moment (PBX clock, epoch seconds) this pbxcrm saw every
# call it held open alive.
ALIVE_KEY = "calls_alive_at:{pbx_id}"
FrameListener = Callable[[dict[str, str]], None]


class KeyedLocks:
    """An asyncio lock per key, forgotten once nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        lock = lock or asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class Pipeline:
    def __init__(
        self,
        rules: CallRules,
        store: CallStore,
        adapters: Sequence[Adapter],
        *,
        pbx_id: str = "default",
        source: str = "ami",
        clock: PbxClock | None = None,
    ) -> None:
        self.store = store
        self.adapters = list(adapters)
        self.pbx_id = pbx_id
        self.tracker = CallTracker(rules, pbx_id=pbx_id, source=source)
        self.clock = clock or PbxClock()
        self._pending: set[asyncio.Future[None]] = set()
        self._call_listeners: list[CallEventListener] = []
        self._frame_listeners: list[FrameListener] = []
        self.events_seen = 0
        self._event_counters: dict[str, Any] = {}
        self._uncounted: dict[str, int] = {}
        self.write_errors = 0
        self._late_steps = KeyedLocks()
        self._event_check: EventCheck | None = None
        # True while the PBX link is up and its channel list has confirmed the open calls: only
        # then does the heartbeat vouch for them.
        self._following = False

    def add_call_listener(self, listener: CallEventListener) -> None:
        """Called with every lifecycle event once it is durable (screen pop, demo printer)."""
        self._call_listeners.append(listener)

    def set_event_check(self, check: EventCheck) -> None:
        """Applied to lifecycle events before they are stored (the recording file check)."""
        self._event_check = check

    def add_frame_listener(self, listener: FrameListener) -> None:
        """Called with every tracked AMI frame (the originate service follows its actions)."""
        self._frame_listeners.append(listener)

    async def restore(self) -> int:
        """Take back the calls that were open when pbxcrm stopped; returns how many."""
        calls = await self.store.open_calls(self.pbx_id)
        alive_at = _float_or_none(await self.store.get_kv(ALIVE_KEY.format(pbx_id=self.pbx_id)))
        for call in calls:
            events = await self.store.events_for(self.pbx_id, call.call_id)
            last_seq = max((event.seq for event in events), default=0)
            # The heartbeat covers the calls open when it was written: those started before.
            started = call.start_time.timestamp() if call.start_time is not None else None
            alive_until = (
                alive_at
                if started is not None and alive_at is not None and (started <= alive_at)
                else None
            )
            self.tracker.restore(
                call, last_seq, {event.kind for event in events}, alive_until=alive_until
            )
        metrics.calls_active.set(self.tracker.active_calls)
        self.tracker.begin_snapshot()
        if calls:
            log.info("restored %d open call(s) from the store", len(calls))
        return len(calls)

    # -- input ----------------------------------------------------------------------------

    def on_ami_frame(self, frame: dict[str, str]) -> None:
        self.events_seen += 1
        self._count_event(frame.get("Event", ""))
        for listener in self._frame_listeners:
            listener(frame)
        event = frame_to_event(frame, self.clock.stamp(frame))
        if event is not None:
            self.on_channel_event(event)

    def _count_event(self, name: str) -> None:
        # Summed per loop turn and added to the Prometheus counter once per name: its inc()
        # takes a lock every time, once per frame of a read that holds a hundred.
        pending = self._uncounted
        if not pending:
            try:
                asyncio.get_running_loop().call_soon(self._flush_event_counts)
            except RuntimeError:  # fed without an event loop (tests): count at once
                pending[name] = 1
                self._flush_event_counts()
                return
        pending[name] = pending.get(name, 0) + 1

    def _flush_event_counts(self) -> None:
        for name, count in self._uncounted.items():
            counter = self._event_counters.get(name)
            if counter is None:
                counter = self._event_counters[name] = metrics.ami_events_total.labels(name)
            counter.inc(count)
        self._uncounted.clear()

    def on_channel_event(self, event: ChannelEvent) -> None:
        if isinstance(event, SnapshotComplete):
            self._following = True
        elif isinstance(event, PbxDisconnected):
            self._following = False
        call_events = self.tracker.handle(event)
        if call_events:
            self._persist(call_events)

    def on_disconnected(self, reason: str) -> None:
        log.warning("PBX connection lost (%s); open calls: %d", reason, self.tracker.active_calls)
        self.on_channel_event(PbxDisconnected(self.clock.stamp({})))

    def sweep(self) -> None:
        """Close calls whose Hangup never came (run now and then)."""
        call_events = self.tracker.sweep(self.clock.stamp({}))
        if call_events:
            self._persist(call_events)

    async def heartbeat(self) -> bool:
        """Store "every open call is alive now" (run now and then): a call that ends while
        pbxcrm is down then ends, after the restart, no earlier than this moment. Written
        through the store's single writer, after every step handed to it before. Returns
        whether a heartbeat was written (not while the PBX link is down or unconfirmed)."""
        if not self._following or not self.tracker.active_calls:
            return False
        now = self.clock.stamp({})
        await self.store.put_kv(ALIVE_KEY.format(pbx_id=self.pbx_id), repr(now))
        return True

    async def add_call_event(
        self,
        channel_or_call_id: str,
        kind: EventKind,
        *,
        data: dict[str, object],
        extension: str | None = None,
        at: datetime | None = None,
        fallback_call: Call | None = None,
    ) -> CallEvent | None:
        """Attach a step from outside the PBX's event stream (survey, note) to its call.

        An open call numbers it in the tracker; a finished one continues from the store.
        An unknown call gets `fallback_call` (seq 1), or None is returned without it.
        """
        ts = at.timestamp() if at is not None else self.clock.stamp({})
        call_id = self.tracker.call_id_of(channel_or_call_id)
        if call_id is not None:
            event = self.tracker.add_event(call_id, kind, ts, extension=extension, data=data)
            if event is not None:
                self._persist([event])
                return event
        # Numbered from the store: two at once for one call (a survey and an agent's note, a
        # double-clicked save) would both take the same next seq and the store would keep
        # only the first, so they go one at a time per call, each committed before the next.
        async with self._late_steps.hold(channel_or_call_id):
            # The tracker may have just closed the call and handed its last steps to the
            # writer: numbered before they commit, this step would take one of their seqs.
            submitted = list(self._pending)
            if submitted:
                await asyncio.wait(submitted)
            call = await self.store.get_call(self.pbx_id, channel_or_call_id)
            seq = 1
            if call is not None:
                seq = await self.store.last_seq(self.pbx_id, call.call_id) + 1
            elif fallback_call is not None:
                call = fallback_call
            else:
                return None
            event = CallEvent(
                call_id=call.call_id,
                seq=seq,
                kind=kind,
                at=datetime.fromtimestamp(ts, UTC),
                call=call,
                extension=extension,
                data=data,
            )
            # Not raising here: a failed write is logged and counted by _recorded.
            await asyncio.wait(self._persist([event]))
        return event

    async def add_call_events(self, call_events: Sequence[CallEvent]) -> None:
        """Record steps another switch reported whole (a 3CX journal entry), in order.

        They take the same path as the PBX's own (store, outbox, listeners); returns once
        committed, raising if the store could not keep them.
        """
        futures = self._persist(list(call_events))
        await asyncio.gather(*futures)

    # -- output ---------------------------------------------------------------------------

    def _persist(self, call_events: list[CallEvent]) -> list[asyncio.Future[None]]:
        # Submitted synchronously, in arrival order: the store's writer commits in that order,
        # so each call's steps reach the outbox in sequence without a task per step.
        if self._event_check is not None:
            call_events = self._event_check(call_events)
        by_call: dict[str, list[CallEvent]] = {}
        for call_event in call_events:
            by_call.setdefault(call_event.call_id, []).append(call_event)
        futures: list[asyncio.Future[None]] = []
        for events in by_call.values():
            future = self.store.submit_record(events[-1].call, events, self.adapters)
            self._pending.add(future)
            future.add_done_callback(functools.partial(self._recorded, events=events))
            futures.append(future)
        metrics.calls_active.set(self.tracker.active_calls)
        return futures

    def _recorded(self, done: asyncio.Future[None], events: list[CallEvent]) -> None:
        self._pending.discard(done)
        if done.cancelled() or done.exception() is not None:
            self.write_errors += 1
            log.error(
                "could not store call %s events %s: %r",
                events[0].call_id,
                [event.kind.value for event in events],
                None if done.cancelled() else done.exception(),
            )
            return
        for event in events:
            call = event.call
            log.info(
                "call %s %s seq=%d direction=%s caller=%s called=%s agent=%s",
                event.call_id,
                event.kind.value,
                event.seq,
                call.direction.value,
                call.caller_number,
                call.called_number,
                event.extension or call.agent_extension,
            )
            for listener in self._call_listeners:
                try:
                    listener(event)
                except Exception:
                    log.exception("call event listener failed for call %s", event.call_id)

    async def drain(self) -> None:
        """Wait until everything handed to the store so far is committed."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)


def _float_or_none(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        log.warning("ignoring a heartbeat that is not a number: %r", text)
        return None
