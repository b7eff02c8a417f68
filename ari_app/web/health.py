"""`/healthz` (the only open route) and `/metrics` (Prometheus text format)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from ari_app.web.deps import DEPS_KEY
from ari_app.web.routing import RouteSpec


async def healthz(request: web.Request) -> web.Response:
    # Says only that the process answers: nothing an unauthenticated caller could use.
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    registry = request.app[DEPS_KEY].metrics_registry or REGISTRY
    body = generate_latest(registry)
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


ROUTES = [
    RouteSpec("GET", "/healthz", healthz, None, "Liveness check (no credentials)", tags=("ops",)),
    RouteSpec(
        "GET",
        "/metrics",
        metrics,
        "metrics",
        "Prometheus metrics",
        content_types=("text/plain",),
        tags=("ops",),
    ),
]
