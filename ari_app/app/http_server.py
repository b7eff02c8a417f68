"""The app factory: `build_http_app(deps)` and `start_http(deps)` for `pbxcrm run`/`demo`."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest

from ari_app.agent import routes as agent
from ari_app.threecx import crm_template as threecx_crm
from ari_app.threecx import dbn_api as threecx
from ari_app.web import calls, creatio, fixdigital, health, openapi, originate_routes, recordings
from ari_app.web.auth import THROTTLE_KEY
from ari_app.web.auth_throttle import FailedAuthThrottle
from ari_app.web.connections import (
    BODY_TIMEOUT_KEY,
    GUARD_KEY,
    ConnectionGuard,
    GuardedSite,
    body_deadline_middleware,
    install_accept_error_log,
    request_arrived_middleware,
    warn_if_few_descriptors,
)
from ari_app.web.deps import DEPS_KEY, HttpDeps
from ari_app.web.middleware import security_middleware
from ari_app.web.routing import FAMILY_KEY, RouteSpec
from crm.secrets import RedactSecretsFilter

log = logging.getLogger(__name__)

# Order matters only for `/{token}/recording/{file}`, which is last so it never shadows a
# fixed path.
ALL_ROUTES: list[RouteSpec] = [
    *health.ROUTES,
    *openapi.ROUTES,
    *originate_routes.ROUTES,
    *calls.ROUTES,
    *creatio.ROUTES,
    *fixdigital.ROUTES,
    *threecx.ROUTES,
    *threecx_crm.ROUTES,
    *agent.ROUTES,
    *recordings.ROUTES,
]


def _router_path(path: str) -> str:
    # Recordings may live in dated sub-folders: `{file}` spans slashes (checked in recordings).
    return path.replace("{file}", "{file:.+}")


def _redact_aiohttp_records() -> None:
    """aiohttp logs a refused request line whole (LineTooLong, a bad character), token and
    all: its records are starred where they are made, whatever handlers read them."""
    for name in ("aiohttp.server", "aiohttp.web", "aiohttp.access"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecretsFilter) for f in logger.filters):
            logger.addFilter(RedactSecretsFilter())


def build_http_app(deps: HttpDeps) -> web.Application:
    _redact_aiohttp_records()
    settings = deps.settings.http
    app = web.Application(
        middlewares=[request_arrived_middleware, body_deadline_middleware, security_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app[DEPS_KEY] = deps
    app[BODY_TIMEOUT_KEY] = settings.body_timeout_seconds
    app[GUARD_KEY] = ConnectionGuard(settings.max_connections)
    app[THROTTLE_KEY] = FailedAuthThrottle(
        settings.max_auth_failures, settings.auth_failure_window_seconds
    )
    families: dict[str, object] = {}
    for spec in ALL_ROUTES:
        route = app.router.add_route(spec.method, _router_path(spec.path), spec.handler)
        families[route.resource.canonical] = spec.family  # type: ignore[union-attr]
    app[FAMILY_KEY] = families
    app[openapi.DOCUMENT_KEY] = openapi.build_document(ALL_ROUTES, settings)
    agent.install(app, deps)
    return app


class RedactingAccessLogger(AbstractAccessLogger):
    """Access log with the route template instead of the path: tokens in paths never appear."""

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        try:
            # Typed BaseRequest for low-level servers; an Application's requests are web.Request.
            match_info = request.match_info if isinstance(request, web.Request) else None
        except AssertionError:  # a request aiohttp refused before routing (bad request line)
            match_info = None
        resource = getattr(match_info, "route", None)
        canonical = getattr(getattr(resource, "resource", None), "canonical", None) or "-"
        self.logger.info(
            '%s "%s %s" %s %.3fs',
            request.remote,
            request.method,
            canonical,
            response.status,
            time,
        )


async def start_http(deps: HttpDeps) -> web.AppRunner:
    """Build and start the app on [http] host:port; `await runner.cleanup()` stops it."""
    settings = deps.settings.http
    app = build_http_app(deps)
    runner = web.AppRunner(
        app,
        access_log_class=RedactingAccessLogger,
        access_log=logging.getLogger("pbxcrm.http.access"),
        # aiohttp closes a connection still waiting for a whole request when this fires; it
        # runs from the connection's start and from each answer: the header timeout.
        keepalive_timeout=settings.header_timeout_seconds,
    )
    restore = install_accept_error_log(asyncio.get_running_loop())

    async def put_back_exception_handler(_app: web.Application) -> None:
        restore()

    app.on_cleanup.append(put_back_exception_handler)
    await runner.setup()
    warn_if_few_descriptors(settings.max_connections)
    site = GuardedSite(runner, settings.host, settings.port)
    await site.start()
    log.info("HTTP port listening on %s:%s", settings.host, bound_port(runner))
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port actually bound (useful with port 0)."""
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("HTTP server is not listening")
