"""The screen pop's JSON API (under `/agent/api/`): sign-in, the live cards (snapshot and
server-sent events), the status + comments note, dismissing a card, click-to-call.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from ari_app.agent.port import (
    SESSION_KEY,
    address_allowed,
    agent_only,
    port_of,
    screen_pop_on,
)
from ari_app.agent.sessions import COOKIE, SignInRefused
from ari_app.calls.notes import record_note
from ari_app.originate.model import OriginateRejected, PbxUnavailable
from ari_app.web.auth import IP_KEY, client_ip
from ari_app.web.errors import field_error, json_error
from ari_app.web.parsing import BadRequest, parse_body
from crm.dialects.dbn import STATUSES, canonical_status
from crm.model import Call
from crm.store.sqlite import remote_number_of

log = logging.getLogger("pbxcrm.agent")

HEARTBEAT_SECONDS = 15.0
MAX_COMMENTS = 4000


class SignInBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    extension: str | None = Field(default=None, max_length=32, description="Your extension")
    secret: str = Field(min_length=1, max_length=256, description="Your PIN or token")


class NoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: str = Field(description=f"One of: {', '.join(STATUSES)}")
    comments: str = Field(default="", max_length=MAX_COMMENTS)


class DialBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    number: str = Field(min_length=1, max_length=32, description="Client number, any format")


def _me(session: Any) -> dict[str, Any]:
    return {"extension": session.extension, "name": session.name}


def _unavailable() -> web.Response:
    return json_error(503, "screen pop not available")


# -- sign-in -------------------------------------------------------------------------------


async def sign_in(request: web.Request) -> web.Response:
    port = port_of(request)
    settings = port.deps.settings.http.agent
    if not screen_pop_on(request) or not address_allowed(request):
        return json_error(403, "forbidden")
    if request.headers.get("X-Pbxcrm-Agent") != "1":
        return json_error(403, "forbidden")  # see agent_port: no sign-in from another site
    try:
        body = await parse_body(request, SignInBody)
    except BadRequest as exc:
        return exc.response
    ip = client_ip(request, port.deps.settings.http.trusted_proxies)
    request[IP_KEY] = str(ip) if ip is not None else "?"
    extension = (body.extension or "").strip() or None
    try:
        session, cookie = port.sessions.sign_in(extension, body.secret.strip(), request[IP_KEY])
    except SignInRefused as exc:
        log.warning(
            "screen pop: sign-in refused for extension %s from %s: %s",
            extension or "(token)",
            request[IP_KEY],
            exc.why,
        )
        return json_error(exc.status, "too many attempts" if exc.status == 429 else "unauthorized")
    log.info("screen pop: extension %s signed in from %s", session.extension, request[IP_KEY])
    response = web.json_response(_me(session))
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=int(settings.session_hours * 3600),
        path="/agent",
        httponly=True,
        samesite="Strict",
        secure=settings.cookie_secure,
    )
    return response


@agent_only
async def who_am_i(request: web.Request) -> web.Response:
    return web.json_response(_me(request[SESSION_KEY]))


@agent_only
async def sign_out(request: web.Request) -> web.Response:
    port_of(request).sessions.sign_out(request.cookies.get(COOKIE))
    response = web.json_response({"signed_out": True})
    response.del_cookie(COOKIE, path="/agent")
    return response


# -- the cards -----------------------------------------------------------------------------


@agent_only
async def get_cards(request: web.Request) -> web.Response:
    port = port_of(request)
    if port.renderer is None:
        return _unavailable()
    cards = await port.renderer.render(request[SESSION_KEY].extension)
    return web.json_response({"cards": cards})


def _sse(event: str, data: object) -> bytes:
    payload = json.dumps(data, separators=(",", ":"))
    return f"event: {event}\ndata: {payload}\n\n".encode()


@agent_only
async def stream_cards(request: web.Request) -> web.StreamResponse:
    """Server-sent events: `cards` (the whole list, on connect and on every change)."""
    port = port_of(request)
    if port.board is None or port.renderer is None:
        return _unavailable()
    session = request[SESSION_KEY]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # nginx would otherwise hold the events back
        }
    )
    await response.prepare(request)
    subscription = port.board.subscribe(session.extension)
    port.streams.add(subscription)
    try:
        await response.write(b"retry: 2000\n\n")
        await response.write(_sse("cards", await port.renderer.render(session.extension)))
        while not (subscription.closed or port.closing):
            changed = await subscription.wait(HEARTBEAT_SECONDS)
            if subscription.closed or port.closing:
                break
            if port.sessions.get(request.cookies.get(COOKIE)) is None:
                await response.write(_sse("signed_out", {}))
                break
            if changed:
                cards = await port.renderer.render(session.extension)
                await response.write(_sse("cards", cards))
            else:
                await response.write(b": keep-alive\n\n")
    except ConnectionResetError:
        pass  # the page went away
    finally:
        port.streams.discard(subscription)
        port.board.unsubscribe(subscription)
    return response


# -- note ----------------------------------------------------------------------------------


async def _call_for(request: web.Request, call_id: str) -> Call | None:
    """The call if this agent may write about it: on their board, or one they rang for."""
    port = port_of(request)
    extension = request[SESSION_KEY].extension
    if port.board is not None:
        card = port.board.card(extension, call_id)
        if card is not None:
            return card.call
    store = port.deps.store
    if store is None:
        return None
    call = await store.get_call(port.deps.settings.pbx.id, call_id)
    if call is None:
        return None
    if extension == call.agent_extension or extension in call.rang_extensions:
        return call
    return None


@agent_only
async def save_note(request: web.Request) -> web.Response:
    port = port_of(request)
    session = request[SESSION_KEY]
    try:
        body = await parse_body(request, NoteBody)
    except BadRequest as exc:
        return exc.response
    status = canonical_status(body.status.replace("-", " ").replace("_", " "))
    if status is None:
        return field_error(422, "status", f"must be one of: {', '.join(STATUSES)}")
    comments = body.comments.strip()
    pipeline, store = port.deps.pipeline, port.deps.store
    if pipeline is None or store is None:
        log.error("screen pop: note refused, no call pipeline wired into the HTTP port")
        return _unavailable()
    call_id = request.match_info["call_id"]
    call = await _call_for(request, call_id)
    if call is None:
        return json_error(404, "not found")
    number = remote_number_of(call) or call.caller_number
    note_id, event = await record_note(
        pipeline,
        call_id=call.call_id,
        number=number,
        extension=session.extension,
        status=status,
        comments=comments,
        fallback_call=lambda _note_id: call,
    )
    log.info(
        "screen pop: note %d (%s) by %s for call %s", note_id, status, session.extension, call_id
    )
    if port.board is not None:
        port.board.touch(call.call_id)
    return web.json_response(
        {
            "note_id": note_id,
            "call_id": call.call_id,
            "status": status,
            "comments": comments,
            "seq": event.seq,
        }
    )


@agent_only
async def dismiss_card(request: web.Request) -> web.Response:
    port = port_of(request)
    if port.board is None:
        return _unavailable()
    extension = request[SESSION_KEY].extension
    if not port.board.dismiss(extension, request.match_info["call_id"]):
        return json_error(409, "only an ended call's card can be dismissed")
    return web.json_response({"dismissed": True})


# -- click-to-call -------------------------------------------------------------------------


@agent_only
async def dial(request: web.Request) -> web.Response:
    port = port_of(request)
    service = port.deps.originate_service
    if service is None:
        return json_error(503, "click-to-call is not enabled")
    try:
        body = await parse_body(request, DialBody)
    except BadRequest as exc:
        return exc.response
    extension = request[SESSION_KEY].extension
    try:
        record = await service.submit(
            extension,
            body.number,
            client=f"agent-{extension}",
            per_minute=port.deps.settings.http.agent.dial_per_minute,
            source="agent",
        )
    except OriginateRejected as exc:
        return field_error(exc.status, exc.field, exc.message)
    except PbxUnavailable:
        return json_error(503, "pbx unavailable")
    return web.json_response(
        {"id": record.id, "state": record.state.value, "reason": record.reason}, status=202
    )


@agent_only
async def dial_status(request: web.Request) -> web.Response:
    service = port_of(request).deps.originate_service
    if service is None:
        return json_error(503, "click-to-call is not enabled")
    record = await service.get(request.match_info["id"])
    if record is None or record.agent_extension != request[SESSION_KEY].extension:
        return json_error(404, "not found")  # another agent's call is as good as missing
    return web.json_response(
        {
            "id": record.id,
            "state": record.state.value,
            "reason": record.reason,
            "number": record.number,
        }
    )
