"""What config/3cx/pbxcrm.xml (a 3CX server-side CRM template) calls: contact lookup for the
screen pop and call journaling (`ReportCall`), which becomes a pbxcrm call for every dialect.

    GET  /3cx/crm/lookup?number=<[Number]>  -> {"contacts": [{"id", "firstName", ...}]}
    POST /3cx/crm/journal                   -> {"success": true, "call_id": ..., "duplicate": ...}
"""

from __future__ import annotations

import logging

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ari_app.threecx.dbn_api import BadFields, request_fields
from ari_app.threecx.journal import JournalEntry, clean_number, record_journal_entry
from ari_app.threecx.lookup import find_callers
from ari_app.threecx.urls import contact_url, public_origin
from ari_app.web.deps import DEPS_KEY
from ari_app.web.errors import json_error, validation_error
from ari_app.web.routing import RouteSpec
from crm.numbers import digits_only

log = logging.getLogger("pbxcrm.3cx")


class LookupQuery(BaseModel):
    model_config = ConfigDict(extra="allow")

    number: str = Field(
        max_length=64,
        description="The number as 3CX formats it ([Number]); without digits (a withheld"
        " caller): no contacts",
    )


async def crm_lookup(request: web.Request) -> web.Response:
    try:
        fields = await request_fields(request)
    except BadFields as exc:
        return json_error(exc.status, exc.error)
    if "number" not in fields:
        return json_error(
            422, "invalid request", fields=[{"field": "number", "message": "is required"}]
        )
    number = clean_number(fields["number"])
    if len(number) > 64:
        return json_error(
            422, "invalid request", fields=[{"field": "number", "message": "longer than 64"}]
        )
    if not digits_only(number):
        # A withheld or anonymous caller: nobody to find, and not an error 3CX should log.
        return web.json_response({"contacts": []})
    deps = request.app[DEPS_KEY]
    callers = await find_callers(deps, number)
    origin = public_origin(request, deps.settings.http.trusted_proxies)
    contacts = [{**c.as_json(), "url": contact_url(deps, c, origin)} for c in callers]
    return web.json_response({"contacts": contacts})


async def crm_journal(request: web.Request) -> web.Response:
    deps = request.app[DEPS_KEY]
    try:
        fields = await request_fields(request, json_types=True)
        entry = JournalEntry.model_validate(fields)
    except BadFields as exc:
        return json_error(exc.status, exc.error)
    except ValidationError as exc:
        log.warning(
            "3cx journal entry refused: %s",
            "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
                for e in exc.errors(include_url=False, include_input=False)
            ),
        )
        return validation_error(exc)
    if deps.pipeline is None:
        log.error("3cx journal entry refused: no call pipeline wired into the HTTP port")
        return json_error(503, "call journaling is not available")
    outcome = await record_journal_entry(deps.pipeline, entry)
    return web.json_response(
        {"success": True, "call_id": outcome.call_id, "duplicate": outcome.duplicate}
    )


ROUTES = [
    RouteSpec(
        "GET",
        "/3cx/crm/lookup",
        crm_lookup,
        "3cx",
        "3CX CRM template: contact lookup by number",
        query=LookupQuery,
        responses={
            200: "Contacts found ([] when none, also for a number without digits)",
            422: "No number parameter, or longer than 64",
        },
        tags=("3cx",),
    ),
    RouteSpec(
        "POST",
        "/3cx/crm/journal",
        crm_journal,
        "3cx",
        "3CX CRM template: call journaling (ReportCall)",
        body=JournalEntry,
        responses={
            200: "Recorded (duplicate: true when it was already)",
            400: "Body is not a JSON object",
            422: "Invalid field",
            503: "Journaling not available",
        },
        tags=("3cx",),
    ),
]
