"""What a card shows: the board's call plus who is calling (lookup), earlier calls with the
number (call history) and the agent's saved note, as the JSON the page renders.

The caller lookup may take seconds (a CRM over HTTP): the card goes out at once with the
caller `pending`, and again when the answer is in. Lookup and history are asked once per call.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import phonenumbers

from ari_app.agent.board import AgentBoard, Card
from ari_app.agent.settings import AgentSettings
from ari_app.web.deps import HttpDeps
from ari_app.web.safe_links import safe_web_link
from crm.lookup.base import LookupRequest, LookupResult, LookupStatus
from crm.numbers import digits_only, format_number, normalize, number_variants
from crm.shutdown import cancel_and_wait
from crm.store.history import HistoryError, HistoryQuery, query_calls
from crm.store.sqlite import Note, remote_number_of

log = logging.getLogger("pbxcrm.agent")

CallerStatus = Literal["pending", "found", "unknown", "error"]


@dataclass(frozen=True, slots=True)
class CallerInfo:
    status: CallerStatus
    name: str | None = None
    company: str | None = None
    url: str | None = None
    source: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "name": self.name,
            "company": self.company,
            "url": self.url,
            "source": self.source,
        }


_PENDING = CallerInfo("pending")


def display_number(number: str | None, region: str) -> str:
    """For people: `+7 903 123-45-67`; extensions and garbage as received."""
    if not number:
        return ""
    parsed = normalize(number, region)
    if parsed is None:
        return number
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def safe_url(url: object) -> str | None:
    # A CRM's record may hold anything; only web links become clickable (no javascript:,
    # nothing that leads to another site while looking like a path).
    return safe_web_link(url)


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment is not None else None


def note_json(note: Note | None) -> dict[str, Any] | None:
    if note is None:
        return None
    return {
        "id": note.id,
        "status": note.status,
        "comments": note.comments,
        "extension": note.extension,
        "saved_at": datetime.fromtimestamp(note.created_at, UTC).isoformat(),
    }


class CardRenderer:
    def __init__(self, deps: HttpDeps, board: AgentBoard) -> None:
        self.deps = deps
        self.board = board
        self._callers: dict[str, CallerInfo] = {}
        self._histories: dict[str, list[dict[str, Any]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def settings(self) -> AgentSettings:
        return self.deps.settings.http.agent

    @property
    def region(self) -> str:
        return (
            self.settings.default_region or self.deps.settings.http.originate.fraud.default_region
        )

    @property
    def pbx_id(self) -> str:
        return self.deps.settings.pbx.id

    async def render(self, extension: str) -> list[dict[str, Any]]:
        cards = [await self.render_card(card) for card in self.board.cards_for(extension)]
        self._forget_gone_calls()
        return cards

    async def render_card(self, card: Card) -> dict[str, Any]:
        call = card.call
        number = remote_number_of(call)
        if number is None and call.direction.value == "internal":
            # Internal calls (if shown at all): the colleague on the other end.
            number = call.caller_number if call.caller_number != card.extension else None
            number = number or call.called_number
        return {
            "call_id": card.call_id,
            "state": card.state,
            "direction": call.direction.value,
            "number": number,
            "number_display": display_number(number, self.region),
            "caller_name": call.caller_name,
            "called_number": call.called_number,
            "queue": call.queue,
            "started_at": _iso(call.start_time),
            "answered_at": _iso(call.answer_time),
            "ended_at": _iso(call.end_time),
            "disposition": call.disposition.value if call.disposition else None,
            "talk_seconds": call.talk_seconds,
            "caller": self._caller(card.call_id, number, call.called_number).as_json(),
            "history": await self._history(card.call_id, number),
            "note": note_json(await self.latest_note(card.call_id, card.extension)),
        }

    async def latest_note(self, call_id: str, extension: str) -> Note | None:
        store = self.deps.store
        if store is None:
            return None
        notes = [n for n in await store.notes_for(self.pbx_id, call_id) if n.extension == extension]
        return notes[-1] if notes else None

    # -- who is calling -------------------------------------------------------------------

    def _caller(self, call_id: str, number: str | None, service_number: str | None) -> CallerInfo:
        known = self._callers.get(call_id)
        if known is not None:
            return known
        if not number or not digits_only(number):
            info = CallerInfo("unknown")
            self._callers[call_id] = info
            return info
        self._callers[call_id] = _PENDING
        task = asyncio.create_task(self._look_up(call_id, number, service_number))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return _PENDING

    async def _look_up(self, call_id: str, number: str, service_number: str | None) -> None:
        try:
            info = await self.find_caller(number, service_number)
        except Exception:  # a broken source must not leave the card pending forever
            log.exception("screen pop: caller lookup failed for call %s", call_id)
            info = CallerInfo("error")
        self._callers[call_id] = info
        self.board.touch(call_id)

    async def find_caller(self, number: str, service_number: str | None = None) -> CallerInfo:
        """The `[[lookup]]` chain first, then the local contacts table."""
        failed = False
        lookup = self.deps.lookup
        if lookup is not None:
            result: LookupResult = await lookup.lookup(
                LookupRequest(number=number, service_number=service_number)
            )
            if result.status in (LookupStatus.FOUND, LookupStatus.MULTIPLE):
                return self._from_result(result, number)
            if result.status == LookupStatus.ERROR:
                log.warning("screen pop: lookup sources answered with errors: %s", result.error)
                failed = True
        store = self.deps.store
        if store is not None:
            for variant in number_variants(number, self.region):
                contact = await store.get_contact(variant)
                if contact is not None:
                    return CallerInfo(
                        "found",
                        name=contact.name,
                        company=contact.company,
                        url=safe_url(contact.url) or self._template_url(number),
                        source="contacts",
                    )
        return CallerInfo("error" if failed else "unknown", url=self._template_url(number))

    def _from_result(self, result: LookupResult, number: str) -> CallerInfo:
        record: Any = result.record
        if result.status == LookupStatus.MULTIPLE and isinstance(record, list) and record:
            record = record[0]  # several contacts share the number: show the first, say so
        fields = record if isinstance(record, dict) else {}
        name = result.contact_name or _text(fields, "name", "contact_name", "Name")
        company = result.company or _text(fields, "company", "Company")
        url = safe_url(result.contact_url or _text(fields, "url", "contact_url"))
        if result.status == LookupStatus.MULTIPLE:
            name = f"{name or 'Several contacts'} (+ others)"
        return CallerInfo(
            "found",
            name=name,
            company=company,
            url=url or self._template_url(number),
            source=result.source,
        )

    def _template_url(self, number: str) -> str | None:
        template = self.settings.crm_url_template
        if not template:
            return None
        e164 = format_number(number, "e164", self.region)
        return template.format(number=e164, digits=digits_only(e164))

    # -- earlier calls --------------------------------------------------------------------

    async def _history(self, call_id: str, number: str | None) -> list[dict[str, Any]]:
        known = self._histories.get(call_id)
        if known is not None:
            return known
        rows = await self.history_of(number, exclude_call_id=call_id)
        self._histories[call_id] = rows
        return rows

    async def history_of(
        self, number: str | None, *, exclude_call_id: str | None = None
    ) -> list[dict[str, Any]]:
        limit = self.settings.history_limit
        store = self.deps.store
        if store is None or not number or limit == 0:
            return []
        query = HistoryQuery(number=number, pbx_id=self.pbx_id, limit=limit + 1)
        try:
            page = await query_calls(store.reader, query, region=self.region)
        except HistoryError:
            return []  # a number without digits has no history
        out: list[dict[str, Any]] = []
        for row in page.calls:
            if row.call_id == exclude_call_id:
                continue
            notes = await store.notes_for(self.pbx_id, row.call_id)
            out.append(
                {
                    "call_id": row.call_id,
                    "time": row.time,
                    "direction": row.direction,
                    "disposition": row.disposition,
                    "extension": row.extension,
                    "talk_seconds": row.duration,
                    "note": note_json(notes[-1] if notes else None),
                }
            )
        return out[:limit]

    # -- housekeeping ---------------------------------------------------------------------

    def _forget_gone_calls(self) -> None:
        for cache in (self._callers, self._histories):
            for call_id in [c for c in cache if not self.board.extensions_of(c)]:
                del cache[call_id]

    async def close(self) -> None:
        await cancel_and_wait(list(self._tasks), "agent card lookups")


def _text(record: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = record.get(key)
        if isinstance(value, str | int) and str(value).strip():
            return str(value).strip()
    return None
