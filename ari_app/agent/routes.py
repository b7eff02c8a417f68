"""The agent screen pop: `/agent` (page and its local assets) and the API under `/agent/api/`.

The page and assets hold nothing private and are served to anyone allowed by
`[http.agent] allow_from`; everything with data goes through `agent_port.agent_only`.
"""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web

from ari_app.agent import api as agent_api
from ari_app.agent.port import address_allowed, install, screen_pop_on
from ari_app.web.errors import json_error
from ari_app.web.routing import RouteSpec

__all__ = ["ROUTES", "install"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
_ASSET_NAME = re.compile(r"^[a-z0-9_-]+\.(?:js|css|png|svg|ico)$")

# Everything the page loads comes from here: no CDN, no inline script, no framing elsewhere.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _assets() -> frozenset[str]:
    if not STATIC_DIR.is_dir():
        return frozenset()
    return frozenset(p.name for p in STATIC_DIR.iterdir() if _ASSET_NAME.match(p.name))


ASSETS = _assets()


def _page_allowed(request: web.Request) -> web.Response | None:
    if not screen_pop_on(request):
        return json_error(403, "forbidden")
    if not address_allowed(request):
        return json_error(403, "forbidden")
    return None


async def page(request: web.Request) -> web.StreamResponse:
    refused = _page_allowed(request)
    if refused is not None:
        return refused
    return web.FileResponse(STATIC_DIR / "index.html", headers=_PAGE_HEADERS)


async def asset(request: web.Request) -> web.StreamResponse:
    refused = _page_allowed(request)
    if refused is not None:
        return refused
    name = request.match_info["asset"]
    if name not in ASSETS:  # a fixed list: no path ever reaches the file system unchecked
        return json_error(404, "not found")
    return web.FileResponse(STATIC_DIR / name, headers=_PAGE_HEADERS)


_TAGS = ("screen pop",)
_SESSION = "Needs the agent session cookie from POST /agent/api/session."
_CHANGE = _SESSION + " Send `X-Pbxcrm-Agent: 1`."

ROUTES = [
    RouteSpec(
        "GET",
        "/agent",
        page,
        None,
        "The agent screen pop (HTML page)",
        content_types=("text/html",),
        tags=_TAGS,
    ),
    RouteSpec(
        "GET",
        "/agent/static/{asset}",
        asset,
        None,
        "The page's scripts and styles",
        content_types=("text/css", "text/javascript"),
        tags=_TAGS,
    ),
    RouteSpec(
        "POST",
        "/agent/api/session",
        agent_api.sign_in,
        None,
        "Sign in with extension + PIN, or a token; sets the session cookie. "
        "Send `X-Pbxcrm-Agent: 1`.",
        body=agent_api.SignInBody,
        responses={
            200: "Signed in: {extension, name}",
            401: "Wrong extension, PIN or token",
            403: "Address not allowed",
            429: "Locked out for a while",
        },
        tags=_TAGS,
    ),
    RouteSpec(
        "GET",
        "/agent/api/session",
        agent_api.who_am_i,
        None,
        "The signed-in agent. " + _SESSION,
        responses={200: "{extension, name}", 401: "Not signed in"},
        tags=_TAGS,
    ),
    RouteSpec(
        "DELETE",
        "/agent/api/session",
        agent_api.sign_out,
        None,
        "Sign out. " + _CHANGE,
        responses={200: "Signed out"},
        tags=_TAGS,
    ),
    RouteSpec(
        "GET",
        "/agent/api/cards",
        agent_api.get_cards,
        None,
        "The agent's cards now (ringing, answered, ended calls). " + _SESSION,
        responses={200: "{cards: [...]}"},
        tags=_TAGS,
    ),
    RouteSpec(
        "GET",
        "/agent/api/stream",
        agent_api.stream_cards,
        None,
        "Server-sent events: `cards` with the whole list on connect and on every "
        "change. " + _SESSION,
        content_types=("text/event-stream",),
        tags=_TAGS,
    ),
    RouteSpec(
        "POST",
        "/agent/api/calls/{call_id}/note",
        agent_api.save_note,
        None,
        "Save status + comments for a call (store, then a NOTE step to the dialects "
        "that take notes). " + _CHANGE,
        body=agent_api.NoteBody,
        responses={
            200: "Saved: {note_id, call_id, status, comments}",
            404: "Not a call of this agent",
            422: "Unknown status",
            503: "Notes not available",
        },
        tags=_TAGS,
    ),
    RouteSpec(
        "POST",
        "/agent/api/calls/{call_id}/dismiss",
        agent_api.dismiss_card,
        None,
        "Close an ended call's card. " + _CHANGE,
        responses={200: "Dismissed", 409: "The call is not over"},
        tags=_TAGS,
    ),
    RouteSpec(
        "POST",
        "/agent/api/dial",
        agent_api.dial,
        None,
        "Click-to-call from the agent's own extension. " + _CHANGE,
        body=agent_api.DialBody,
        responses={
            202: "Sent to the PBX: {id, state}",
            403: "Destination not allowed",
            422: "A field is invalid",
            429: "Rate limit",
            503: "PBX not connected",
        },
        tags=_TAGS,
    ),
    RouteSpec(
        "GET",
        "/agent/api/dial/{id}",
        agent_api.dial_status,
        None,
        "Outcome of the agent's click-to-call. " + _SESSION,
        responses={200: "{id, state, reason, number}", 404: "Unknown id"},
        tags=_TAGS,
    ),
]
