"""What `pbxcrm outbox list|retry|purge` does: plain functions over the store.

They are safe while `pbxcrm run` is running on the same store: writes go through this
process's own store writer (SQLite serialises the two processes; PostgreSQL's rows are
claimed with leases), and the running outbox sees retried rows at its next poll. Both
backends answer the same calls (crm.store.interface.CallStore).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from crm.store.interface import CallStore

STATES = ("pending", "done", "dead")
_PURGEABLE = ("done", "dead")
_LIST_COLUMNS = (
    "o.id, o.adapter, o.pbx_id, o.call_id, o.seq, e.kind, o.idempotency_key, o.state,"
    " o.attempts, o.next_attempt_at, o.last_status, o.last_error, o.last_response,"
    " o.created_at, o.delivered_at"
)


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _check_state(state: str | None) -> None:
    if state is not None and state not in STATES:
        raise ValueError(f"unknown outbox state {state!r}; use one of {', '.join(STATES)}")


async def list_deliveries(
    store: CallStore,
    state: str | None = None,
    adapter: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Newest first; times as ISO 8601 UTC strings, so every value prints as it is."""
    _check_state(state)
    if limit < 1:
        raise ValueError("limit must be at least 1")
    where = ["1 = 1"]
    params: list[Any] = []
    if state is not None:
        where.append("o.state = ?")
        params.append(state)
    if adapter is not None:
        where.append("o.adapter = ?")
        params.append(adapter)
    params.append(limit)
    rows = await store.reader.execute_fetchall(
        f"SELECT {_LIST_COLUMNS} FROM outbox o JOIN call_events e ON e.id = o.event_row"
        f" WHERE {' AND '.join(where)} ORDER BY o.id DESC LIMIT ?",
        params,
    )
    result = []
    for row in rows:
        (id_, adapter_, pbx_id, call_id, seq, kind, key, state_, attempts, next_at, status,
         error, response, created_at, delivered_at) = row  # fmt: skip
        result.append(
            {
                "id": id_,
                "adapter": adapter_,
                "pbx_id": pbx_id,
                "call_id": call_id,
                "seq": seq,
                "kind": kind,
                "idempotency_key": key,
                "state": state_,
                "attempts": attempts,
                "next_attempt_at": _iso(next_at) if state_ == "pending" else None,
                "last_status": status,
                "last_error": error,
                "last_response": response,
                "created_at": _iso(created_at),
                "delivered_at": _iso(delivered_at),
            }
        )
    return result


async def retry(store: CallStore, ids: Sequence[int] | None = None) -> int:
    """Send dead deliveries again with a fresh set of attempts: the given ids, or all dead.

    Returns how many rows were re-queued. Done and pending rows are left alone.
    """
    for value in ids or ():
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"outbox ids are integers, not {value!r}")
    return await store.requeue_dead(ids)


async def purge(
    store: CallStore, state: str = "done", older_than_seconds: float = 7 * 86400
) -> int:
    """Delete done (or dead) deliveries finished more than `older_than_seconds` ago.

    Pending rows are never purged: they are deliveries still owed to a CRM. The calls and
    their events stay (they are the call history).
    """
    _check_state(state)
    if state not in _PURGEABLE:
        raise ValueError(
            f"{state} deliveries cannot be purged (only {' or '.join(_PURGEABLE)}):"
            " pending rows are still owed to a CRM"
        )
    if older_than_seconds < 0:
        raise ValueError("older_than_seconds cannot be negative")
    return await store.purge_deliveries(state, store.now() - older_than_seconds)
