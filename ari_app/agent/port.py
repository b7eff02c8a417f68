"""The screen pop's per-app state (board, sessions, card renderer) and its access rule.

The `/agent` routes carry no route family: [[http.clients]] are CRMs, while the pop is used
by people, one extension each. `agent_only` is their gate instead: the address must be in
`[http.agent] allow_from`, the browser must hold a live session cookie, and every request
that changes something must carry the `X-Pbxcrm-Agent` header, which another site's page
cannot send without a CORS preflight we never answer (with SameSite=Strict, CSRF protection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from ipaddress import ip_address

from aiohttp import web

from ari_app.agent.board import AgentBoard, Subscription
from ari_app.agent.cards import CardRenderer
from ari_app.agent.sessions import COOKIE, AgentSession, AgentSessions
from ari_app.web.auth import client_ip
from ari_app.web.deps import DEPS_KEY, HttpDeps
from ari_app.web.errors import json_error

log = logging.getLogger("pbxcrm.agent")

CHANGE_HEADER = "X-Pbxcrm-Agent"
SESSIONS_KV = "agent_sessions"
SESSION_KEY = web.RequestKey("pbxcrm_agent_session", AgentSession)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(eq=False)
class AgentPort:
    deps: HttpDeps
    board: AgentBoard | None
    sessions: AgentSessions
    renderer: CardRenderer | None
    streams: set[Subscription] = field(default_factory=set)
    closing: bool = False
    _save_task: asyncio.Task[None] | None = None
    _unsaved: bool = False

    async def on_startup(self, app: web.Application) -> None:
        if self.deps.store is None:
            return
        try:
            restored = self.sessions.load(await self.deps.store.get_kv(SESSIONS_KV))
        except Exception:
            log.exception("screen pop: could not read saved sessions; agents sign in again")
            return
        if restored:
            log.info("screen pop: %d agent session(s) kept from before the restart", restored)

    def sessions_changed(self) -> None:
        """Save the sessions soon; saves coalesce and run one at a time, the last one wins."""
        if self.deps.store is None:
            return
        self._unsaved = True
        if self._save_task is None or self._save_task.done():
            self._save_task = asyncio.get_running_loop().create_task(self._save_sessions())

    async def _save_sessions(self) -> None:
        assert self.deps.store is not None
        while self._unsaved:
            self._unsaved = False
            try:
                await self.deps.store.put_kv(SESSIONS_KV, self.sessions.dump())
            except Exception:
                log.exception("screen pop: could not save the sessions")

    async def on_shutdown(self, app: web.Application) -> None:
        # Open event streams would hold the server's shutdown for its whole grace period.
        self.closing = True
        for subscription in list(self.streams):
            subscription.closed = True
            subscription.wake()

    async def on_cleanup(self, app: web.Application) -> None:
        if self._save_task is not None:
            with contextlib.suppress(Exception):
                await self._save_task
        if self.renderer is not None:
            await self.renderer.close()


PORT_KEY = web.AppKey("pbxcrm_agent_port", AgentPort)


def install(app: web.Application, deps: HttpDeps) -> None:
    """Give `app` the screen pop's state; called once while the app is built."""
    board = deps.agent_board
    port = AgentPort(
        deps=deps,
        board=board,
        sessions=AgentSessions(deps.settings.http.agent),
        renderer=CardRenderer(deps, board) if board is not None else None,
    )
    port.sessions.on_change = port.sessions_changed
    app[PORT_KEY] = port
    app.on_startup.append(port.on_startup)
    app.on_shutdown.append(port.on_shutdown)
    app.on_cleanup.append(port.on_cleanup)


def port_of(request: web.Request) -> AgentPort:
    return request.app[PORT_KEY]


def screen_pop_on(request: web.Request) -> bool:
    """Off, or no agent configured: every /agent route refuses, as for a closed door."""
    settings = request.app[DEPS_KEY].settings.http.agent
    return settings.enabled and bool(settings.agents)


def address_allowed(request: web.Request) -> bool:
    deps = request.app[DEPS_KEY]
    ip = client_ip(request, deps.settings.http.trusted_proxies)
    if ip is None:
        return False
    networks = deps.settings.http.agent.allow_from
    plain = ip_address(str(ip))
    return any(plain.version == net.version and plain in net for net in networks)


def agent_only(handler: Handler) -> Handler:
    """Runs `handler` for a signed-in agent (request[SESSION_KEY]); otherwise 401/403/404."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        port = port_of(request)
        if not screen_pop_on(request):
            return json_error(403, "forbidden")
        if not address_allowed(request):
            log.warning("screen pop: refused %s from an address not allowed", request.method)
            return json_error(403, "forbidden")
        session = port.sessions.get(request.cookies.get(COOKIE))
        if session is None:
            return json_error(401, "unauthorized")
        if request.method not in ("GET", "HEAD") and request.headers.get(CHANGE_HEADER) != "1":
            log.warning(
                "screen pop: refused %s %s for %s without the %s header",
                request.method,
                request.match_info.route.resource.canonical
                if request.match_info.route.resource
                else "?",
                session.extension,
                CHANGE_HEADER,
            )
            return json_error(403, "forbidden")
        request[SESSION_KEY] = session
        return await handler(request)

    guarded.__name__ = handler.__name__
    guarded.__doc__ = handler.__doc__
    return guarded
