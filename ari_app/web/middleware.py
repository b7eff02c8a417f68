"""The one middleware every request passes: route family -> auth, and errors as JSON."""

from __future__ import annotations

import logging

from aiohttp import web

from ari_app.web.auth import IP_KEY, THROTTLE_KEY, AuthRefused, authorize, refusal
from ari_app.web.connections import RequestBodyTimeout
from ari_app.web.deps import DEPS_KEY
from ari_app.web.errors import http_exception_error, json_error
from ari_app.web.routing import Handler, family_of

log = logging.getLogger(__name__)


@web.middleware
async def security_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        if request.match_info.http_exception is None:
            family = family_of(request)
            if family == "":
                # A route nobody declared a family for: fail closed.
                log.error("refused %s %s: route has no auth rule", request.method, request.path)
                return json_error(403, "forbidden")
            if family is not None:
                deps = request.app[DEPS_KEY]
                settings = deps.settings.http
                throttle = request.app[THROTTLE_KEY]
                try:
                    await authorize(
                        request, settings, family, deps.recording_links, throttle=throttle
                    )
                except AuthRefused as exc:
                    address = request.get(IP_KEY, "?")
                    if exc.guess:
                        throttle.failed(address)
                    resource = request.match_info.route.resource
                    assert resource is not None  # family_of found the family by it
                    log.warning(
                        "refused %s %s from %s: %s",
                        request.method,
                        resource.canonical,  # no path tokens
                        address,
                        exc.why,
                    )
                    return refusal(exc, list(settings.routes[family].methods), family)
        return await handler(request)
    except RequestBodyTimeout:
        raise  # answered 408 by body_deadline_middleware, outside this one
    except web.HTTPRequestEntityTooLarge:
        return json_error(413, "request body too large")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return http_exception_error(exc)
    except Exception:
        log.exception("error handling %s %s", request.method, request.match_info.route.resource)
        return json_error(500, "internal error")
