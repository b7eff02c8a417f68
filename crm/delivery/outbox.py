"""Delivers the outbox: every (event, adapter) row that record() wrote, at least once, in order.

Rules, and why:
- Per call and adapter, only the lowest-seq pending row may be in flight: a CRM must see
  "ringing" before "answered" before "hangup". Seq 2 waits while seq 1 is pending (even while
  seq 1 backs off after an error).
- A dead letter does NOT block the later events of its call: once seq 1 is dead, seq 2 goes.
  A poisoned message must never hold everything behind it; `pbxcrm outbox retry` resends it.
- Each adapter has at most `concurrency` deliveries in flight, across different calls.
- Retryable failures back off exponentially with full jitter (a random delay between 0 and
  base * 2**(attempt-1), capped), or wait at least the CRM's Retry-After; after `max_attempts`
  the row is dead. Not retryable -> dead at once, with the CRM's status and answer kept.
- Rows in flight are tracked in memory, not in the database: the row stays `pending` until
  its outcome is committed, so a crash (even kill -9) mid-delivery leaves it pending and it is
  sent again after restart with the same idempotency key. One process owns the SQLite file,
  so no lease is needed; `claimed_until` stays NULL (reserved).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from sqlite3 import Row
from typing import Any

from pydantic import ValidationError

from crm.backoff import exponential_ceiling, jittered
from crm.dialects.base import Adapter, DeliveryError, DeliveryOutcome
from crm.metrics import deliveries_total, outbox_depth
from crm.model import CallEvent
from crm.secrets import redact
from crm.shutdown import cancel_and_wait, finish_within
from crm.store.interface import DeliveryStore, LocalDeliveries, OutboxReader, SharedDeliveries
from crm.store.settings import OutboxSettings

log = logging.getLogger(__name__)

MAX_KEPT_TEXT = 2000  # characters of a CRM answer or error kept on the row

_DEPTH_SQL = (
    "SELECT adapter, state, COUNT(*) FROM outbox WHERE state IN ('pending', 'dead')"
    " GROUP BY adapter, state"
)


@dataclass(frozen=True, slots=True)
class _Row:
    id: int
    adapter: str
    pbx_id: str
    call_id: str
    seq: int
    key: str
    attempts: int
    event_json: str


@dataclass(frozen=True, slots=True)
class _Result:
    state: str  # pending (retry) | done | dead
    outcome: str  # delivered | unmatched | retry | dead (the metric's label)
    attempts: int
    next_attempt_at: float
    error: str | None
    status: int | None
    response: str | None
    delivered_at: float | None


def keep_text(text: str | None) -> str | None:
    """What is stored of a CRM answer or error: trimmed, with any configured secret starred."""
    if text is None:
        return None
    return redact(text[:MAX_KEPT_TEXT])


class Outbox:
    """`await start()`, then `notify()` after writes (the store does it after each commit that
    added outbox rows), `await stop()` before closing the store."""

    def __init__(
        self,
        store: DeliveryStore,
        adapters: Mapping[str, Adapter],
        settings: OutboxSettings,
        *,
        now: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._store = store
        self._adapters = dict(adapters)
        self._settings = settings
        self._now = now
        self._rand = rand
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._busy: dict[str, int] = dict.fromkeys(self._adapters, 0)
        # Rows claimed but not started yet (their adapter had no free slot). They stay pending
        # in the database; keeping them here means a finished delivery starts the next one
        # without a claim query (at saturation that query ran once per delivery).
        self._ready: dict[str, deque[_Row]] = {name: deque() for name in self._adapters}
        self._depth_refreshed_at = 0.0
        self._reader: OutboxReader | None = None
        # A store shared by several pbxcrm instances (PostgreSQL) claims rows in the database
        # with a lease held by this owner id; SQLite's single process tracks them in memory.
        self._shared_store: SharedDeliveries | None = None
        self._local_store: LocalDeliveries | None = None
        if isinstance(store, SharedDeliveries):
            self._shared_store = store
        elif isinstance(store, LocalDeliveries):
            self._local_store = store
        else:
            raise TypeError(f"{type(store).__name__} hands out no deliveries")
        self._shared = self._shared_store is not None
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        store.add_listener(self.notify)

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            return
        # Its own connection: on a shared one, someone else's open cursor would show us an old
        # snapshot, where a delivery just marked done still looks pending and goes out twice.
        self._reader = await self._store.open_reader()
        await self._warn_about_unknown_adapters()
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="pbxcrm-outbox")
        if self._shared:
            self._renewer = asyncio.create_task(self._renew_leases(), name="pbxcrm-leases")

    async def stop(self) -> None:
        """Stop claiming; give deliveries in flight `stop_grace_seconds`, then cancel them.

        A cancelled delivery stays pending and is sent again (same key) on the next start.
        """
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await finish_within(asyncio.shield(self._task), "the outbox loop")
            if not self._task.done():
                await cancel_and_wait([self._task], "the outbox loop")
            self._task = None
        unstarted = [row.id for ready in self._ready.values() for row in ready]
        for ready in self._ready.values():
            ready.clear()  # still pending in the database: claimed again after a restart
        if self._shared and unstarted:
            try:  # so that another instance need not wait for the lease to run out
                assert self._shared_store is not None
                await self._shared_store.release_deliveries(unstarted, owner=self._owner)
            except Exception as exc:
                log.warning("outbox: could not release %d claims at stop: %s", len(unstarted), exc)
        tasks = list(self._inflight.values())
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self._settings.stop_grace_seconds)
            if late:
                log.warning("outbox: %d deliveries cancelled at stop; they stay pending", len(late))
                await cancel_and_wait(late, "outbox deliveries")
        if self._renewer is not None:
            await cancel_and_wait([self._renewer], "outbox lease renewal")
            self._renewer = None
        if self._reader is not None:
            await self._reader.close()
            self._reader = None

    def _held_ids(self) -> list[int]:
        """Rows this instance has claimed: being sent, or waiting for a free slot."""
        return [*self._inflight, *(row.id for ready in self._ready.values() for row in ready)]

    async def _renew_leases(self) -> None:
        """Keep the leases of rows this instance holds while they wait or are being sent, so a
        CRM slower than `lease_seconds` does not hand its delivery to another instance (which
        would send it a second time). An instance that dies stops renewing: its rows are taken
        over once the last renewal runs out."""
        lease = self._settings.lease_seconds
        while True:
            await asyncio.sleep(lease / 3)
            held = self._held_ids()
            if not held:
                continue
            try:
                assert self._shared_store is not None
                await self._shared_store.renew_leases(held, owner=self._owner, lease_seconds=lease)
            except Exception as exc:
                log.warning("outbox: could not renew %d leases: %s", len(held), exc)

    def notify(self) -> None:
        """New rows may be due: look now instead of at the next poll."""
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        settings = self._settings
        ceiling = exponential_ceiling(
            attempt - 1, settings.base_delay_seconds, settings.max_delay_seconds
        )
        delay = jittered(ceiling, rand=self._rand)  # full jitter: 0 .. ceiling
        if retry_after is not None and retry_after > 0:
            delay = max(delay, min(retry_after, settings.max_retry_after_seconds))
        return delay

    # -- the dispatcher -----------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            self._wake.clear()
            full_batch = False
            try:
                full_batch = await self._dispatch()
                if loop.time() - self._depth_refreshed_at >= self._settings.poll_interval_seconds:
                    self._depth_refreshed_at = loop.time()
                    await self._refresh_depth()
            except Exception:
                log.exception("outbox: claiming deliveries failed; trying again at the next poll")
            if full_batch and not self._stopping:
                continue  # more rows are due right now
            timeout = self._settings.poll_interval_seconds
            next_due = None
            if not any(self._ready.values()):  # else a finished delivery wakes us
                try:
                    next_due = await self._next_due()
                except Exception:
                    next_due = None
            if next_due is not None:
                timeout = max(0.0, min(timeout, next_due - self._now()))
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _dispatch(self) -> bool:
        """Start due rows for adapters with free slots, claimed ones first; True if a claim
        query ran and came back full."""
        self._start_ready()
        limit = self._settings.claim_batch
        # Claim ahead while half a batch is still waiting, so that slots never idle while a
        # claim query runs (finished deliveries start waiting rows themselves, see _deliver).
        low = max(1, limit // 2)
        free = [name for name, ready in self._ready.items() if len(ready) < low]
        if not free:
            return False
        if self._shared:
            return await self._claim_shared()
        taken = self._held_ids()
        assert self._local_store is not None and self._reader is not None
        rows = await self._local_store.due_deliveries(self._reader, free, taken, limit, self._now())
        claimed = set(taken)
        for raw in rows:
            row = _Row(*raw)
            if row.id not in claimed and row.adapter in self._ready:
                claimed.add(row.id)
                self._ready[row.adapter].append(row)
        self._start_ready()
        return len(rows) >= limit

    async def _claim_shared(self) -> bool:
        """Lease due rows in the shared database; only as many as there are free slots, so a
        leased row never waits here long enough for its lease to run out."""
        slots = {
            name: self._adapters[name].config.concurrency - self._busy[name] - len(ready)
            for name, ready in self._ready.items()
        }
        wanted = [name for name, free in slots.items() if free > 0]
        limit = min(self._settings.claim_batch, sum(max(0, free) for free in slots.values()))
        if not wanted or limit <= 0:
            return False
        assert self._shared_store is not None
        claimed = await self._shared_store.claim_deliveries(
            wanted, limit, owner=self._owner, lease_seconds=self._settings.lease_seconds
        )
        for item in claimed:
            row = _Row(
                item.id,
                item.adapter,
                item.pbx_id,
                item.call_id,
                item.seq,
                item.key,
                item.attempts,
                item.event_json,
            )
            if row.adapter in self._ready and row.id not in self._inflight:
                self._ready[row.adapter].append(row)
        self._start_ready()
        return len(claimed) >= limit

    def _start_ready(self) -> None:
        for name, ready in self._ready.items():
            adapter = self._adapters[name]
            while ready and self._busy[name] < adapter.config.concurrency:
                row = ready.popleft()
                self._busy[name] += 1
                self._inflight[row.id] = asyncio.create_task(
                    self._deliver(adapter, row), name=f"pbxcrm-deliver-{row.id}"
                )

    async def _read(self, sql: str, params: tuple[Any, ...] = ()) -> Iterable[Row]:
        assert self._reader is not None, "Outbox.start() was not called"
        return await self._reader.execute_fetchall(sql, params)

    async def _next_due(self) -> float | None:
        if self._shared_store is not None:
            return await self._shared_store.next_due()
        assert self._local_store is not None and self._reader is not None
        return await self._local_store.next_due_after(self._reader, self._now())

    async def _refresh_depth(self) -> None:
        rows = await self._read(_DEPTH_SQL)
        seen = {(name, state): 0 for name in self._adapters for state in ("pending", "dead")}
        for adapter, state, count in rows:
            seen[(adapter, state)] = count
        for (adapter, state), count in seen.items():
            outbox_depth.labels(adapter=adapter, state=state).set(count)

    async def _warn_about_unknown_adapters(self) -> None:
        rows = await self._read(
            "SELECT adapter, COUNT(*) FROM outbox WHERE state = 'pending' GROUP BY adapter"
        )
        for adapter, count in rows:
            if adapter not in self._adapters:
                log.warning(
                    "outbox: %d pending deliveries for CRM %r, which is not configured;"
                    " they are kept and go out once a [[crm]] block with that name is back",
                    count,
                    adapter,
                )

    # -- one delivery -------------------------------------------------------------------------

    async def _deliver(self, adapter: Adapter, row: _Row) -> None:
        try:
            result, kind = await self._attempt(adapter, row)
            try:
                if self._shared:
                    await self._finish_shared(row, result)
                else:
                    assert self._local_store is not None
                    await self._local_store.save_delivery_outcome(
                        row.id,
                        state=result.state,
                        attempts=result.attempts,
                        next_attempt_at=result.next_attempt_at,
                        error=result.error,
                        status=result.status,
                        response=result.response,
                        delivered_at=result.delivered_at,
                    )
            except Exception:
                # The row stays pending and goes again: at-least-once, same key.
                log.exception("outbox: could not save the outcome of delivery %d", row.id)
                return
            deliveries_total.labels(adapter=row.adapter, outcome=result.outcome).inc()
            self._log(row, kind, result)
        finally:
            self._inflight.pop(row.id, None)
            self._busy[row.adapter] -= 1
            if not self._stopping:
                self._start_ready()
            self._wake.set()

    async def _finish_shared(self, row: _Row, result: _Result) -> None:
        assert self._shared_store is not None
        kept = await self._shared_store.finish_delivery(
            row.id,
            owner=self._owner,
            state=result.state,
            attempts=result.attempts,
            next_attempt_at=result.next_attempt_at,
            error=result.error,
            status=result.status,
            response=result.response,
            delivered_at=result.delivered_at,
        )
        if not kept:
            # Our lease ran out mid-delivery and another instance took the row over; the CRM
            # got the same idempotency key from both, and the other outcome is the one kept.
            log.warning(
                "outbox: lease on delivery %d (%s) expired before its outcome was saved",
                row.id,
                row.key,
            )

    async def _attempt(self, adapter: Adapter, row: _Row) -> tuple[_Result, str]:
        attempt = row.attempts + 1
        try:
            event = CallEvent.model_validate_json(row.event_json)
        except ValidationError as exc:
            return self._dead(attempt, f"stored event cannot be read: {exc}", None, None), "?"
        kind = event.kind.value
        try:
            async with asyncio.timeout(adapter.config.timeout_seconds):
                outcome = await adapter.deliver(event, row.key)
        except DeliveryError as exc:
            if not exc.retryable:
                return self._dead(attempt, str(exc), exc.status, exc.response), kind
            return self._retry(
                adapter, attempt, str(exc), exc.status, exc.response, exc.retry_after
            ), kind
        except TimeoutError:
            # Worded like the HTTP client's own timeout: whichever of the two fires first (they
            # share the value), the dead letter says the same thing.
            error = f"timed out: no answer within {adapter.config.timeout_seconds:g}s"
            return self._retry(adapter, attempt, error, None, None, None), kind
        except Exception as exc:  # an adapter bug or a raw network error: retry, loudly
            log.warning(
                "outbox: adapter %s raised %r delivering %s",
                row.adapter,
                exc,
                row.key,
                exc_info=not isinstance(exc, OSError | ConnectionError),
            )
            return self._retry(adapter, attempt, repr(exc), None, None, None), kind
        return self._done(attempt, outcome), kind

    def _done(self, attempt: int, outcome: DeliveryOutcome) -> _Result:
        now = self._now()
        label = "unmatched" if outcome.matched is False else "delivered"
        return _Result(
            "done", label, attempt, now, None, outcome.status, keep_text(outcome.response), now
        )

    def _dead(self, attempt: int, error: str, status: int | None, response: str | None) -> _Result:
        return _Result(
            "dead",
            "dead",
            attempt,
            self._now(),
            keep_text(error),
            status,
            keep_text(response),
            None,
        )

    def _retry(
        self,
        adapter: Adapter,
        attempt: int,
        error: str,
        status: int | None,
        response: str | None,
        retry_after: float | None,
    ) -> _Result:
        if attempt >= adapter.config.max_attempts:
            return self._dead(
                attempt, f"gave up after {attempt} attempts: {error}", status, response
            )
        next_at = self._now() + self.backoff(attempt, retry_after)
        return _Result(
            "pending",
            "retry",
            attempt,
            next_at,
            keep_text(error),
            status,
            keep_text(response),
            None,
        )

    def _log(self, row: _Row, kind: str, result: _Result) -> None:
        fields: dict[str, Any] = {
            "call_id": row.call_id,
            "pbx_id": row.pbx_id,
            "adapter": row.adapter,
            "seq": row.seq,
            "kind": kind,
            "attempt": result.attempts,
            "outcome": result.outcome,
            "status": result.status,
        }
        level = logging.INFO
        text = (
            "outbox: %(outcome)s call=%(call_id)s adapter=%(adapter)s seq=%(seq)s kind=%(kind)s"
            " attempt=%(attempt)s status=%(status)s"
        )
        if result.outcome == "retry":
            fields["retry_in"] = round(result.next_attempt_at - self._now(), 3)
            fields["error"] = result.error
            text += " retry_in=%(retry_in)ss error=%(error)s"
            level = logging.WARNING
        elif result.outcome == "dead":
            fields["error"] = result.error
            text += " error=%(error)s"
            level = logging.ERROR
        log.log(level, text, fields, extra={"delivery": fields})
