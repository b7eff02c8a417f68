"""Where click-to-call records live: the store's `originates` table, or memory (tests)."""

from __future__ import annotations

from typing import Protocol

from ari_app.originate.model import OriginateRecord, OriginateState
from crm.store.interface import CallStore
from crm.store.rows import OriginateRecord as OriginateRow


class OriginateLog(Protocol):
    """Where originate records live (the store's `originates` table, or memory in tests)."""

    async def save(self, record: OriginateRecord) -> None: ...

    async def load(self, originate_id: str) -> OriginateRecord | None: ...

    def forget(self, originate_id: str) -> None:
        """The service let go of a finished record: drop what is kept in memory for it."""


class MemoryOriginateLog:
    def __init__(self) -> None:
        self.records: dict[str, OriginateRecord] = {}

    async def save(self, record: OriginateRecord) -> None:
        self.records[record.id] = record

    async def load(self, originate_id: str) -> OriginateRecord | None:
        return self.records.get(originate_id)

    def forget(self, originate_id: str) -> None:
        self.records.pop(originate_id, None)  # memory is all it has: bounded like the service


class StoreOriginateLog:
    """OriginateLog over the store's `originates` table (any backend).

    The first save inserts the row (with the whole record as request_json); later saves move
    its state. A pbxcrm restart keeps answering `GET /api/v1/originate/{id}` from here.
    """

    def __init__(self, store: CallStore) -> None:
        self._store = store
        self._saved: set[str] = set()

    async def save(self, record: OriginateRecord) -> None:
        if record.id not in self._saved:
            self._saved.add(record.id)
            await self._store.save_originate(
                record.id,
                agent_extension=record.agent_extension,
                number=record.number,
                state=record.state.value,
                reason=record.reason,
                request=record.public(),
                target_pbx_id=record.target_pbx_id,
            )
        elif record.state is OriginateState.ENDED:
            # The outcome lives in request_json with the rest of the record.
            await self._store.update_originate(
                record.id,
                state=record.state.value,
                reason=record.reason,
                request=record.public(),
            )
        else:
            await self._store.update_originate(
                record.id, state=record.state.value, reason=record.reason
            )

    def forget(self, originate_id: str) -> None:
        self._saved.discard(originate_id)  # the row stays in the store; GET reads it there

    async def load(self, originate_id: str) -> OriginateRecord | None:
        row = await self._store.get_originate(originate_id)
        if row is None:
            return None
        # The row exists: a later save of this record must update it, not insert it again.
        self._saved.add(row.id)
        return _record_from_row(row)

    async def claim_queued(
        self, pbx_id: str, *, max_age_seconds: float, limit: int = 20
    ) -> list[OriginateRecord]:
        """Requests other instances queued for `pbx_id`, now claimed by this instance only."""
        rows = await self._store.claim_originates(
            pbx_id, max_age_seconds=max_age_seconds, limit=limit
        )
        records = []
        for row in rows:
            self._saved.add(row.id)
            records.append(_record_from_row(row))
        return records


def _record_from_row(row: OriginateRow) -> OriginateRecord:
    """An OriginateRecord from the store's row of it (request_json holds the rest)."""
    data = dict(row.request or {})
    return OriginateRecord(
        id=row.id,
        agent_extension=row.agent_extension or "",
        number=row.number or "",
        dial_number=str(data.get("dial_number", "")),
        client=str(data.get("client", "")),
        state=OriginateState(row.state),
        reason=row.reason,
        uniqueid=data.get("uniqueid"),
        created_at=row.created_at,
        updated_at=row.updated_at,
        source=str(data.get("source", "native")),
        client_ref=data.get("client_ref"),
        target_pbx_id=row.target_pbx_id,
        call_id=data.get("call_id"),
        outcome=data.get("outcome"),
        talk_seconds=data.get("talk_seconds"),
        ended_at=data.get("ended_at"),
    )
