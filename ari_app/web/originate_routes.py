"""Click-to-call, native shape: `POST /api/v1/originate`, `GET /api/v1/originate/{id}`.

The vendor shapes (creatio.py, fixdigital.py) reuse `start_originate`, so every entry point gets
the same fraud rules, rate limit, audit line and single-send guarantee.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from ari_app.originate.model import OriginateRecord, OriginateRejected, PbxUnavailable
from ari_app.web.auth import current_client
from ari_app.web.deps import DEPS_KEY
from ari_app.web.errors import field_error, json_error
from ari_app.web.parsing import BadRequest, parse_body
from ari_app.web.routing import RouteSpec


class OriginateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    extension: str = Field(min_length=1, max_length=32, description="Agent extension rung first")
    number: str = Field(min_length=1, max_length=32, description="Client number, any format")
    idempotency_key: str | None = Field(
        default=None,
        max_length=128,
        description="Same key from the same client returns the first request (no second call)",
    )


class OriginateAccepted(BaseModel):
    id: str
    state: str
    reason: str | None = None
    status_url: str


async def start_originate(
    request: web.Request,
    extension: str,
    number: str,
    *,
    source: str,
    idempotency_key: str | None = None,
    client_ref: str | None = None,
) -> OriginateRecord | web.Response:
    """The record (sent to the PBX), or the error response to return as is."""
    service = request.app[DEPS_KEY].originate_service
    if service is None:
        return json_error(503, "click-to-call is not enabled")
    client = current_client(request)
    try:
        return await service.submit(
            extension,
            number,
            client=client.name,
            per_minute=client.originate_per_minute,
            idempotency_key=idempotency_key,
            source=source,
            client_ref=client_ref,
        )
    except OriginateRejected as exc:
        return field_error(exc.status, exc.field, exc.message)
    except PbxUnavailable:
        return json_error(503, "pbx unavailable")


def _status_url(record: OriginateRecord) -> str:
    return f"/api/v1/originate/{record.id}"


async def post_originate(request: web.Request) -> web.Response:
    try:
        body = await parse_body(request, OriginateBody)
    except BadRequest as exc:
        return exc.response
    key = body.idempotency_key or request.headers.get("Idempotency-Key")
    result = await start_originate(
        request, body.extension, body.number, source="native", idempotency_key=key
    )
    if isinstance(result, web.Response):
        return result
    answer = OriginateAccepted(
        id=result.id, state=result.state.value, reason=result.reason, status_url=_status_url(result)
    )
    return web.json_response(answer.model_dump(), status=202)


async def get_originate(request: web.Request) -> web.Response:
    service = request.app[DEPS_KEY].originate_service
    if service is None:
        return json_error(503, "click-to-call is not enabled")
    record = await service.get(request.match_info["id"])
    # Another client's request is as invisible as a missing one.
    if record is None or record.client != current_client(request).name:
        return json_error(404, "not found")
    return web.json_response(
        {
            "id": record.id,
            "state": record.state.value,
            "reason": record.reason,
            "extension": record.agent_extension,
            "number": record.number,
            "created_at": record.created_at,
            "updated_at": record.updated_at,
            # Filled once the call has ended (state "ended").
            "call_id": record.call_id,
            "outcome": record.outcome,
            "talk_seconds": record.talk_seconds,
            "ended_at": record.ended_at,
        }
    )


ROUTES = [
    RouteSpec(
        "POST",
        "/api/v1/originate",
        post_originate,
        "originate",
        "Ring the agent, then dial the client (click-to-call)",
        body=OriginateBody,
        responses={
            202: "Sent to the PBX (or queued for the PBX owning the extension); poll status_url",
            400: "Body is not JSON",
            403: "Extension or destination not allowed",
            422: "A field is invalid",
            429: "Rate limit",
            503: "PBX not connected",
        },
        tags=("click-to-call",),
    ),
    RouteSpec(
        "GET",
        "/api/v1/originate/{id}",
        get_originate,
        "originate",
        "State of a click-to-call: pending, ringing_agent, connected, agent_no_answer, "
        "agent_busy or failed (with reason); once its call is over, ended with outcome "
        "(answered, no-answer, busy, failed), talk_seconds and call_id",
        responses={200: "The request's state", 404: "Unknown id"},
        tags=("click-to-call",),
    ),
]
