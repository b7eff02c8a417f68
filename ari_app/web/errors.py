"""JSON error answers: short, stable wording that names the field and never echoes secrets."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import ValidationError


def json_error(status: int, error: str, **extra: Any) -> web.Response:
    return web.json_response({"error": error, **extra}, status=status)


def http_exception_error(exc: web.HTTPException) -> web.Response:
    """aiohttp's own refusals as JSON; a 405 keeps the `Allow` header RFC 9110 requires."""
    response = json_error(exc.status, exc.reason.lower())
    if "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


def validation_error(exc: ValidationError) -> web.Response:
    """422 naming each bad field; the rejected value itself is not echoed back."""
    fields = [
        {
            "field": ".".join(str(p) for p in error["loc"]) or "(body)",
            "message": error["msg"],
        }
        for error in exc.errors(include_url=False, include_input=False)
    ]
    return json_error(422, "invalid request", fields=fields)


def field_error(status: int, field: str, message: str) -> web.Response:
    return json_error(
        status,
        "invalid request" if status in (400, 422) else _reason(status),
        fields=[{"field": field, "message": message}],
    )


def _reason(status: int) -> str:
    return {
        401: "unauthorized",
        403: "forbidden",
        404: "not found",
        429: "too many requests",
        503: "pbx unavailable",
    }.get(status, "error")
