"""An agent's screen-pop note (status + comments) from 3CX: kept against the caller's most recent
call and sent as a NOTE step to every dialect that takes notes (dbn, webhooks...).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ari_app.calls.notes import record_note
from ari_app.calls.pipeline import Pipeline
from ari_app.threecx.journal import threecx_lock
from ari_app.threecx.lookup import region_of
from ari_app.web.deps import HttpDeps
from crm.model import Call, Direction
from crm.store.history import HistoryQuery, query_calls

log = logging.getLogger("pbxcrm.3cx")


@dataclass(frozen=True, slots=True)
class SavedNote:
    note_id: int
    call_id: str  # the call the NOTE step belongs to (the caller's, or one made for the note)
    attached: bool  # True: the caller's most recent call; False: a call of its own


async def recent_call_id(deps: HttpDeps, pipeline: Pipeline, number: str) -> str | None:
    """The caller's most recent call within the note window, or None."""
    window = timedelta(hours=deps.settings.http.threecx.note_call_window_hours)
    query = HistoryQuery(
        number=number,
        pbx_id=pipeline.pbx_id,
        start=datetime.now(UTC) - window,
        limit=1,
    )
    page = await query_calls(pipeline.store.reader, query, region=region_of(deps))
    return page.calls[0].call_id if page.calls else None


async def save_note(
    deps: HttpDeps,
    pipeline: Pipeline,
    *,
    number: str,
    status: str,
    comments: str,
    extension: str | None,
) -> SavedNote:
    """Keep the note, then queue its NOTE step; returns once both are committed.

    Raises crm.store.history.HistoryError for a number without digits.
    """
    async with threecx_lock(pipeline):
        call_id = await recent_call_id(deps, pipeline, number)

        def own_call(note_id: int) -> Call:
            # No call of this caller to attach to (e.g. 3CX journaling is off): the note
            # still reaches the CRMs, as the only step of a call of its own.
            return Call(
                call_id=f"3cx-note-{note_id}",
                pbx_id=pipeline.pbx_id,
                source="3cx",
                direction=Direction.INBOUND,
                caller_number=number,
                agent_extension=extension,
                start_time=datetime.now(UTC),
                ended=True,
            )

        note_id, event = await record_note(
            pipeline,
            call_id=call_id,
            number=number,
            extension=extension,
            status=status,
            comments=comments,
            fallback_call=own_call,
        )
    log.info(
        "3cx note %d (%s) for call %s%s",
        note_id,
        status,
        event.call_id,
        "" if call_id else " (no recent call of this number)",
    )
    return SavedNote(note_id, event.call_id, call_id is not None)
