"""What `pbxcrm outbox list|retry|purge` does: plain functions over the store.

They are safe while `pbxcrm run` is running on the same file: writes go through this
process's own store writer (SQLite serialises the two processes), and the running outbox
sees retried rows at its next poll.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import aiosqlite

from crm.store import Store

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
    store: Store,
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


async def retry(store: Store, ids: Sequence[int] | None = None) -> int:
    """Send dead deliveries again with a fresh set of attempts: the given ids, or all dead.

    Returns how many rows were re-queued. Done and pending rows are left alone.
    """
    now = store.now()
    if ids is not None and not ids:
        return 0

    async def requeue(conn: aiosqlite.Connection) -> int:
        sql = (
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?,"
            " claimed_until = NULL WHERE state = 'dead'"
        )
        params: list[Any] = [now]
        if ids is not None:
            sql += " AND id IN (SELECT value FROM json_each(?))"
            params.append(_json_ids(ids))
        cursor = await conn.execute(sql, params)
        return cursor.rowcount

    # adds_outbox_rows: the running outbox in this process (if any) looks at once.
    return await store.write(requeue, adds_outbox_rows=True)


async def purge(store: Store, state: str = "done", older_than_seconds: float = 7 * 86400) -> int:
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
    cutoff = store.now() - older_than_seconds

    async def delete(conn: aiosqlite.Connection) -> int:
        cursor = await conn.execute(
            "DELETE FROM outbox WHERE state = ? AND COALESCE(delivered_at, next_attempt_at) < ?",
            (state, cutoff),
        )
        return cursor.rowcount

    return await store.write(delete)


def _json_ids(ids: Sequence[int]) -> str:
    clean = []
    for value in ids:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"outbox ids are integers, not {value!r}")
        clean.append(value)
    return "[" + ",".join(str(v) for v in clean) + "]"
