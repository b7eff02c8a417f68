"""Survey ratings written by classic AGI processes (one JSON line each) taken into the store.

A classic AGI script is a separate process and cannot reach the outbox; it appends to the spool
file. This reader keeps its byte offset in the store, so a restart resumes where it stopped;
a line recorded just before a crash is recognised by its call, time and rating and not sent twice.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from pydantic import ValidationError

from agi.context import SurveyResult
from crm.model import EventKind
from crm.store.interface import CallStore

log = logging.getLogger("pbxcrm.survey")

_OFFSET_KEY = "survey_spool_offset"
_MAX_BYTES_PER_POLL = 1 << 20


class SurveySpoolReader:
    def __init__(
        self,
        path: Path,
        store: CallStore,
        record: Callable[[SurveyResult], Awaitable[None]],
        pbx_id: str = "default",
    ) -> None:
        self.path = Path(path)
        self.store = store
        self.record = record
        self.pbx_id = pbx_id
        # Per PBX: several pbxcrm instances may share one (PostgreSQL) store.
        self._offset_key = f"{_OFFSET_KEY}:{pbx_id}"

    async def poll(self) -> int:
        """Take every complete new line; returns how many ratings were recorded."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return 0
        offset = int(await self.store.get_kv(self._offset_key) or 0)
        if size < offset:  # rotated or truncated by the admin: start again
            offset = 0
        if size == offset:
            return 0
        with self.path.open("rb") as spool:
            spool.seek(offset)
            chunk = spool.read(_MAX_BYTES_PER_POLL)
        end = chunk.rfind(b"\n")
        if end < 0:
            return 0  # a line still being written
        recorded = 0
        for line in chunk[: end + 1].splitlines():
            if not line.strip():
                continue
            try:
                result = SurveyResult.model_validate_json(line)
            except ValidationError as exc:
                log.error(
                    "survey spool %s: skipping a bad line (%s)", self.path, exc.errors()[0]["msg"]
                )
                continue
            if await self._already_recorded(result):
                continue
            await self.record(result)
            recorded += 1
        await self.store.put_kv(self._offset_key, str(offset + end + 1))
        return recorded

    async def _already_recorded(self, result: SurveyResult) -> bool:
        call_id = result.linkedid or result.uniqueid
        for event in await self.store.events_for(self.pbx_id, call_id):
            if (
                event.kind is EventKind.SURVEY
                and event.data.get("at") == result.at.isoformat()
                and event.data.get("rating") == result.rating
            ):
                return True
        return False
