"""Click-to-call: turn a CRM's "ring agent X, then dial number Y" into exactly one AMI Originate.

The request is checked against the fraud rules (agent pattern, destination country, premium
ranges), the number normalised with phonenumbers, and one Async Originate sent whose ActionID and
`CRM_CALL_ID` channel variable are the originate id. The outcome arrives later as AMI frames that
the caller of `on_frame` feeds in: `VarSet CRM_CALL_ID` ties the agent channel to the request and
`OriginateResponse` (matched by ActionID) says whether the agent answered. When the agent does
not answer the recorded OriginateResponse carries `Uniqueid: <unknown>`, so the variable is the
only link to the channel.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping

from ari_app.originate.model import (
    FINAL_STATES,
    OriginateBackend,
    OriginateRecord,
    OriginateRejected,
    OriginateState,
    OutcomeUnknown,
    PbxUnavailable,
)
from ari_app.originate.record_log import MemoryOriginateLog, OriginateLog
from ari_app.originate.rules import CheckedNumber, RateLimiter, check_destination
from ari_app.originate.settings import OriginateSettings
from ari_app.pbx.extension_owner import ExtensionOwners
from crm.model import Call, CallEvent, EventKind
from crm.shutdown import finish_within

log = logging.getLogger(__name__)
audit = logging.getLogger("pbxcrm.audit")

CALL_ID_VARIABLE = "CRM_CALL_ID"
_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

# OriginateResponse `Reason` is the last control frame seen on the outgoing channel
# (AST_CONTROL_* in Asterisk's frame.h); 0 means the channel could not be created at all.
_REASONS: dict[str, tuple[OriginateState, str]] = {
    "0": (OriginateState.FAILED, "agent phone unreachable or extension unknown"),
    "1": (OriginateState.FAILED, "agent rejected the call"),
    "3": (OriginateState.AGENT_NO_ANSWER, "agent did not answer"),
    "5": (OriginateState.AGENT_BUSY, "agent busy"),
    "8": (OriginateState.FAILED, "congestion"),
}


class OriginateService:
    """Validates, sends and tracks click-to-call requests."""

    def __init__(
        self,
        settings: OriginateSettings,
        backend: OriginateBackend,
        *,
        agent_pattern: str,
        log_store: OriginateLog | None = None,
        action_timeout: float = 10.0,
        new_id: Callable[[], str] = lambda: f"c2c-{secrets.token_hex(8)}",
        owners: ExtensionOwners | None = None,
        keep_finished: int = 10_000,
    ) -> None:
        self._new_id = new_id
        # Several instances sharing a store: an extension of another PBX is queued for it.
        self._owners = owners
        self.settings = settings
        self.backend = backend
        # ASCII: `\d` must not take Arabic-Indic or mathematical digits into a channel name.
        self._agent_re = re.compile(settings.fraud.agent_pattern or agent_pattern, re.ASCII)
        self._log = log_store or MemoryOriginateLog()
        self._action_timeout = action_timeout
        self._records: dict[str, OriginateRecord] = {}
        self._by_idempotency: dict[tuple[str, str], str] = {}
        self._idempotency_of: dict[str, tuple[str, str]] = {}
        # Finished (or handed to another PBX) records, oldest first: the newest
        # `keep_finished` stay for idempotent retries and status reads, older ones are read
        # from the store, so memory does not grow with every click-to-call ever made.
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._keep_finished = keep_finished
        self._idempotency_lock = asyncio.Lock()
        self._rate = RateLimiter()
        self._watchdogs: dict[str, asyncio.TimerHandle] = {}
        self._listeners: list[Callable[[OriginateRecord], Awaitable[None] | None]] = []
        self._send_listeners: list[Callable[[OriginateRecord], None]] = []
        self._pending_saves: set[asyncio.Task[None]] = set()
        # Saves not yet written, per record: a record let go of meanwhile is forgotten by the
        # log only after them, or its next save would insert it again instead of updating it.
        self._saves_in_flight: dict[str, int] = {}
        self._forget_when_saved: set[str] = set()

    # -- request side ------------------------------------------------------------------------

    def check(self, agent_extension: str, number: str) -> tuple[str, CheckedNumber]:
        extension = agent_extension.strip()
        if not extension.isascii() or not self._agent_re.fullmatch(extension):
            raise OriginateRejected("extension", "not an agent extension", status=403)
        return extension, check_destination(number, self.settings.fraud)

    async def submit(
        self,
        agent_extension: str,
        number: str,
        *,
        client: str,
        per_minute: int = 10,
        idempotency_key: str | None = None,
        source: str = "native",
        client_ref: str | None = None,
    ) -> OriginateRecord:
        """Send one Originate; returns once Asterisk queued it (or refused it).

        The same `idempotency_key` from the same client returns the first request's record
        instead of ringing the agent again (a CRM retrying a timed-out HTTP call).
        """
        extension, checked = self.check(agent_extension, number)
        target = await self._remote_owner(extension)
        async with self._idempotency_lock:
            if idempotency_key is not None:
                known = self._by_idempotency.get((client, idempotency_key))
                if known is not None:
                    return await self._fresh(self._records[known])
            if not self._rate.allow(client, per_minute):
                raise OriginateRejected("client", "too many click-to-call requests", status=429)
            record = OriginateRecord(
                id=self._new_id(),
                agent_extension=extension,
                number=checked.e164,
                dial_number=checked.dial,
                client=client,
                source=source,
                client_ref=client_ref,
            )
            if target is not None:
                record.state = OriginateState.QUEUED
                record.target_pbx_id = target
            self._records[record.id] = record
            if idempotency_key is not None:
                self._by_idempotency[(client, idempotency_key)] = record.id
                self._idempotency_of[record.id] = (client, idempotency_key)
        await self._log.save(record)
        if target is not None:
            self._retire(record.id)  # another instance sends and follows it
        audit.info(
            "originate id=%s client=%s source=%s extension=%s number=%s%s",
            record.id,
            client,
            source,
            extension,
            checked.e164,
            f" queued_for_pbx={target}" if target is not None else "",
        )
        if target is None:
            await self._send(record)
        return record

    async def _remote_owner(self, extension: str) -> str | None:
        """The pbx_id of another PBX owning `extension`; None sends it through ours."""
        if self._owners is None:
            return None
        try:
            owner = await self._owners.owner_of(extension)
        except Exception:
            log.exception("extension owner lookup failed for %s; sending on this PBX", extension)
            return None
        return owner if owner is not None and owner != self._owners.pbx_id else None

    async def send_claimed(self, record: OriginateRecord) -> None:
        """Send a request another instance queued for this PBX, once claimed here (relay)."""
        self._records[record.id] = record
        audit.info(
            "originate id=%s client=%s source=%s extension=%s number=%s relayed",
            record.id,
            record.client,
            record.source,
            record.agent_extension,
            record.number,
        )
        try:
            await self._send(record)
        except PbxUnavailable as exc:
            # Already FAILED in the shared table, where the requesting instance reads it.
            log.warning("relayed originate %s: PBX unavailable (%s)", record.id, exc)

    async def _fresh(self, record: OriginateRecord) -> OriginateRecord:
        # A queued request is sent and advanced by another instance: the shared table knows.
        if record.state is OriginateState.QUEUED:
            return await self._log.load(record.id) or record
        return record

    def _action(self, record: OriginateRecord) -> dict[str, str]:
        s = self.settings
        values = {"extension": record.agent_extension, "number": record.dial_number}
        return {
            "Action": "Originate",
            "ActionID": record.id,
            "Channel": s.channel_template.format(**values),
            "Context": s.context,
            "Exten": record.dial_number,
            "Priority": str(s.priority),
            "CallerID": s.caller_id_template.format(**values),
            "Timeout": str(int(s.ring_seconds * 1000)),
            "Async": "true",
            "Variable": f"{CALL_ID_VARIABLE}={record.id}",
        }

    async def _send(self, record: OriginateRecord) -> None:
        for listener in self._send_listeners:
            listener(record)
        try:
            response = await self.backend.originate(
                self._action(record), timeout=self._action_timeout
            )
        except (TimeoutError, OutcomeUnknown):
            # The action may have reached Asterisk: never resend; the outcome frames (if any)
            # still advance the record, the watchdog closes it otherwise.
            await self._update(record, OriginateState.PENDING, "no answer from the PBX yet")
            self._arm_watchdog(record)
            return
        except Exception as exc:
            await self._update(record, OriginateState.FAILED, f"PBX unavailable: {exc}")
            raise PbxUnavailable(str(exc)) from exc
        if str(response.get("Response", "")).lower() != "success":
            message = str(response.get("Message", "")) or "refused"
            await self._update(record, OriginateState.FAILED, f"PBX refused: {message}")
            raise PbxUnavailable(message)
        if record.state is OriginateState.PENDING:
            await self._update(record, OriginateState.RINGING_AGENT, None)
        self._arm_watchdog(record)

    def _arm_watchdog(self, record: OriginateRecord) -> None:
        if record.state in FINAL_STATES:
            return
        delay = self.settings.ring_seconds + self.settings.outcome_grace_seconds
        loop = asyncio.get_running_loop()
        self._watchdogs[record.id] = loop.call_later(delay, self._expire, record.id)

    def _expire(self, originate_id: str) -> None:
        self._watchdogs.pop(originate_id, None)
        record = self._records.get(originate_id)
        if record is not None and record.state not in FINAL_STATES:
            self._set(record, OriginateState.FAILED, "no outcome from the PBX (connection lost?)")

    # -- outcome side ------------------------------------------------------------------------

    async def get(self, originate_id: str) -> OriginateRecord | None:
        if not _ID_RE.fullmatch(originate_id):
            return None
        record = self._records.get(originate_id)
        if record is not None:
            return await self._fresh(record)
        return await self._log.load(originate_id)

    def on_frame(self, frame: Mapping[str, str]) -> None:
        """Feed every AMI event here; only OriginateResponse and VarSet CRM_CALL_ID matter."""
        event = frame.get("Event")
        if event == "OriginateResponse":
            self.on_originate_response(
                frame.get("ActionID", ""),
                frame.get("Response", ""),
                frame.get("Reason", ""),
                frame.get("Uniqueid"),
            )
        elif event == "VarSet" and frame.get("Variable", "").lstrip("_") == CALL_ID_VARIABLE:
            self.on_channel_var(frame.get("Uniqueid", ""), CALL_ID_VARIABLE, frame.get("Value", ""))

    def on_channel_var(self, uniqueid: str, name: str, value: str) -> None:
        record = self._records.get(value) if name == CALL_ID_VARIABLE else None
        if record is None or record.uniqueid is not None:
            return
        record.uniqueid = uniqueid or None
        if record.state is OriginateState.PENDING:
            self._set(record, OriginateState.RINGING_AGENT, None)
        else:
            self._persist(record)

    def on_originate_response(
        self, action_id: str, response: str, reason: str, uniqueid: str | None
    ) -> None:
        record = self._records.get(action_id)
        if record is None:
            return
        if uniqueid and uniqueid != "<unknown>" and record.uniqueid is None:
            record.uniqueid = uniqueid
        if response.lower() == "success":
            state, text = OriginateState.CONNECTED, None
        else:
            state, text = _REASONS.get(
                reason.strip(), (OriginateState.FAILED, f"originate failed (reason {reason})")
            )
        self._set(record, state, text)

    def on_call_event(self, event: CallEvent) -> None:
        """Feed every call lifecycle event here: a completed call a click-to-call made ends it."""
        if event.kind is EventKind.COMPLETED and event.call.originate_id:
            self._spawn(self.on_call_completed(event.call))

    async def on_call_completed(self, call: Call) -> None:
        """The request's final answer: the call's outcome, talk time and id (state ENDED)."""
        originate_id = call.originate_id or ""
        record = self._records.get(originate_id)
        if record is None and _ID_RE.fullmatch(originate_id):
            record = await self._log.load(originate_id)  # an older one, or sent by a peer
        if record is None or record.state is OriginateState.ENDED:
            return
        handle = self._watchdogs.pop(record.id, None)
        if handle is not None:
            handle.cancel()
        record.state = OriginateState.ENDED
        record.call_id = call.call_id
        record.outcome = call.disposition.value if call.disposition else None
        record.talk_seconds = round(call.talk_seconds, 3)
        record.ended_at = call.end_time.timestamp() if call.end_time else time.time()
        record.updated_at = time.time()
        self._retire(record.id)
        log.info(
            "originate %s: call %s ended, %s, talk %.1f s",
            record.id,
            call.call_id,
            record.outcome,
            record.talk_seconds,
        )
        await self._persist(record)
        for listener in self._listeners:
            result = listener(record)
            if asyncio.iscoroutine(result):
                await result

    def add_listener(self, listener: Callable[[OriginateRecord], Awaitable[None] | None]) -> None:
        self._listeners.append(listener)

    def add_send_listener(self, listener: Callable[[OriginateRecord], None]) -> None:
        """Told of each request just before its Originate goes out (the call tracker learns
        the number it dials, which the PBX's events name only once the client's leg starts)."""
        self._send_listeners.append(listener)

    def _set(
        self, record: OriginateRecord, state: OriginateState, reason: str | None
    ) -> list[asyncio.Task[None]]:
        """The new state, and the tasks saving it and telling the listeners."""
        if record.state in FINAL_STATES:
            # First final outcome wins; a late watchdog or duplicate frame changes nothing.
            return []
        record.state = state
        record.reason = reason
        record.updated_at = time.time()
        if state in FINAL_STATES:
            handle = self._watchdogs.pop(record.id, None)
            if handle is not None:
                handle.cancel()
            self._retire(record.id)
            log.info("originate %s: %s%s", record.id, state.value, f" ({reason})" if reason else "")
        tasks = [self._persist(record)]
        for listener in self._listeners:
            result = listener(record)
            if asyncio.iscoroutine(result):
                tasks.append(self._spawn(result))
        return tasks

    def _retire(self, originate_id: str) -> None:
        self._finished[originate_id] = None
        while len(self._finished) > self._keep_finished:
            oldest, _ = self._finished.popitem(last=False)
            self._records.pop(oldest, None)
            key = self._idempotency_of.pop(oldest, None)
            if key is not None:
                self._by_idempotency.pop(key, None)
            if oldest in self._saves_in_flight:
                self._forget_when_saved.add(oldest)
            else:
                self._log.forget(oldest)

    @property
    def records_in_memory(self) -> int:
        return len(self._records)

    async def _update(
        self, record: OriginateRecord, state: OriginateState, reason: str | None
    ) -> None:
        # Only this record's writes: waiting for every request's (flush) made each request
        # wait for all others in flight, 11% of click-to-call's CPU at saturation.
        tasks = self._set(record, state, reason)
        if tasks:
            await asyncio.gather(*tasks)

    def _persist(self, record: OriginateRecord) -> asyncio.Task[None]:
        originate_id = record.id
        self._saves_in_flight[originate_id] = self._saves_in_flight.get(originate_id, 0) + 1
        task = self._spawn(self._log.save(record))
        task.add_done_callback(lambda _: self._saved(originate_id))
        return task

    def _saved(self, originate_id: str) -> None:
        left = self._saves_in_flight.pop(originate_id) - 1
        if left:
            self._saves_in_flight[originate_id] = left
        elif originate_id in self._forget_when_saved:
            self._forget_when_saved.discard(originate_id)
            self._log.forget(originate_id)

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        async def run() -> None:
            try:
                await coro
            except Exception:
                log.exception("could not save originate state")

        task = asyncio.get_running_loop().create_task(run())
        self._pending_saves.add(task)
        task.add_done_callback(self._pending_saves.discard)
        return task

    async def flush(self) -> None:
        """Wait for state writes in flight (tests, shutdown)."""
        while self._pending_saves:
            await asyncio.gather(*list(self._pending_saves))

    async def close(self) -> None:
        for handle in self._watchdogs.values():
            handle.cancel()
        self._watchdogs.clear()
        await finish_within(self.flush(), "click-to-call state writes")
