"""An agent's note (status + comments) on a call: kept in the store and sent as a NOTE step.

The screen pop and the 3CX DBN route both save notes; this is the one way it is done, so a
note is durable (store and outbox) before either answers.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from ari_app.calls.pipeline import Pipeline
from crm.model import Call, CallEvent, EventKind


async def record_note(
    pipeline: Pipeline,
    *,
    call_id: str | None,
    number: str | None,
    extension: str | None,
    status: str,
    comments: str,
    fallback_call: Callable[[int], Call],
) -> tuple[int, CallEvent]:
    """Keep the note, then its NOTE step on `call_id` (or, with none, on the call
    `fallback_call(note_id)` builds); returns once both are committed."""
    note_id = await pipeline.store.save_note(
        pbx_id=pipeline.pbx_id,
        number=number,
        extension=extension,
        status=status,
        comments=comments,
        call_id=call_id,
    )
    own_call = fallback_call(note_id)
    event = await pipeline.add_call_event(
        call_id or own_call.call_id,
        EventKind.NOTE,
        data={
            "status": status,
            "comments": comments,
            "number": number,
            "extension": extension,
            "note_id": note_id,
        },
        extension=extension,
        at=datetime.now(UTC),
        fallback_call=own_call,
    )
    await pipeline.drain()  # durable, outbox included, before the caller answers
    assert event is not None  # a fallback call always yields an event
    return note_id, event
