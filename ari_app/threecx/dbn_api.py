"""The cal4care DBN server role (cal4care-3cx-dbn-http-api.txt): what a 3CX call flow asks.

    GET|POST /3cx/query?cid=&token=                     -> {"success": true|false}
    GET|POST /3cx/query?cid=&status=&comments=&token=   -> {"success": 1|0}

Real call flows are hand-built from the spec's examples, so parameter names count in any case
(`Comments`), statuses in small variations (`Scheduled Later`), query, form or JSON encoding.
Our answers are always valid JSON (the spec's examples have trailing commas).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from ari_app.threecx.journal import clean_number
from ari_app.threecx.lookup import find_callers
from ari_app.threecx.notes import save_note
from ari_app.web.deps import DEPS_KEY
from ari_app.web.parsing import UNREADABLE_FORM
from ari_app.web.routing import RouteSpec
from crm.dialects.dbn import STATUSES, canonical_status
from crm.numbers import digits_only
from crm.store.history import HistoryError

log = logging.getLogger("pbxcrm.3cx")

_CID = ("cid", "callerid", "caller_id")
_COMMENTS = ("comments", "comment")
_EXTENSION = ("ext", "extension", "agent")
_MAX_COMMENTS = 4000


class BadFields(Exception):
    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


async def request_fields(request: web.Request, *, json_types: bool = False) -> dict[str, Any]:
    """Query, form and JSON fields merged, names stripped and lower-cased; body wins.

    Values are text, a JSON body's numbers and booleans as their JSON text; with `json_types`
    a JSON body's values stay as they came (numbers, objects...) for a model to check.
    """
    raw: list[tuple[str, Any]] = list(request.query.items())
    if request.method == "POST":
        if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            try:
                form = await request.post()
            except UNREADABLE_FORM:
                raise BadFields(400, "form body cannot be read") from None
            raw += [(k, v) for k, v in form.items() if isinstance(v, str)]
        elif request.content_type == "application/json" or request.content_type.endswith("+json"):
            try:
                text = await request.text()
            except (UnicodeDecodeError, LookupError):  # not text in its declared charset
                raise BadFields(400, "body is not text in its declared charset") from None
            if text.strip():
                try:
                    body = json.loads(text)
                except (json.JSONDecodeError, RecursionError):  # broken, or nested too deeply
                    raise BadFields(400, "body is not valid JSON") from None
                if not isinstance(body, dict):
                    raise BadFields(400, "body must be a JSON object")
                raw += [(k, v) for k, v in body.items() if v is not None]
    fields: dict[str, Any] = {}
    for key, value in raw:
        name = str(key).strip().lower()
        text = value if isinstance(value, str) else json.dumps(value)
        if name and (text.strip() or name not in fields):
            fields[name] = value if json_types else text
    return fields


def _first(fields: dict[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        if name in fields:
            return fields[name]
    return None


def note_status(value: str) -> str | None:
    """The spec's spelling of a status from what a flow sent (`Scheduled Later`, `no-answer`)."""
    return canonical_status(value.replace("-", " ").replace("_", " "))


def _number(fields: dict[str, str]) -> str:
    raw = _first(fields, _CID)
    if raw is None or not raw.strip():
        raise BadFields(422, "cid is required")
    number = clean_number(raw)
    if not digits_only(number):
        raise BadFields(422, "cid has no digits")
    if len(number) > 64:
        raise BadFields(422, "cid is too long")
    return number


async def dbn_query(request: web.Request) -> web.Response:
    try:
        fields = await request_fields(request)
    except BadFields as exc:
        return web.json_response({"success": False, "error": exc.error}, status=exc.status)
    if "status" in fields or _first(fields, _COMMENTS) is not None:
        return await _note(request, fields)
    try:
        number = _number(fields)
    except BadFields as exc:
        return web.json_response({"success": False, "error": exc.error}, status=exc.status)
    callers = await find_callers(request.app[DEPS_KEY], number)
    return web.json_response({"success": bool(callers)})


async def _note(request: web.Request, fields: dict[str, str]) -> web.Response:
    deps = request.app[DEPS_KEY]
    try:
        number = _number(fields)
        raw_status = fields.get("status", "")
        status = note_status(raw_status)
        if status is None:
            raise BadFields(422, f"status must be one of: {', '.join(STATUSES)}")
        comments = (_first(fields, _COMMENTS) or "").strip()
        if len(comments) > _MAX_COMMENTS:
            raise BadFields(422, f"comments longer than {_MAX_COMMENTS} characters")
    except BadFields as exc:
        log.warning("3cx note refused: %s (status %r)", exc.error, fields.get("status"))
        return web.json_response({"success": 0, "error": exc.error}, status=exc.status)
    if deps.pipeline is None:
        log.error("3cx note refused: no call pipeline wired into the HTTP port")
        return web.json_response({"success": 0, "error": "notes are not available"}, status=503)
    extension = (_first(fields, _EXTENSION) or "").strip() or None
    try:
        saved = await save_note(
            deps,
            deps.pipeline,
            number=number,
            status=status,
            comments=comments,
            extension=extension,
        )
    except HistoryError as exc:
        return web.json_response({"success": 0, "error": f"cid {exc.message}"}, status=422)
    return web.json_response({"success": 1, "note_id": saved.note_id, "call_id": saved.call_id})


class DbnQuery(BaseModel):
    """For the OpenAPI document; the handler reads the fields leniently itself (names in any
    case, spellings of a status in any case and spacing), and refuses what these constraints
    rule out with 422."""

    model_config = ConfigDict(extra="allow")

    cid: str = Field(
        min_length=1,
        max_length=64,
        pattern="[0-9]",
        description="Caller's number: at least one digit",
    )
    token: str | None = Field(default=None, description="API key (or basic/header auth)")
    status: Literal[STATUSES] | None = Field(  # type: ignore[valid-type]
        default=None,
        description="With a note: one of the four (also in any case and spacing)",
    )
    comments: str | None = Field(
        default=None,
        max_length=_MAX_COMMENTS,
        description="With a note: the agent's comments. Comments without a status: 422",
    )
    ext: str | None = Field(default=None, description="Optional: the agent's extension")


ROUTES = [
    RouteSpec(
        method,
        "/3cx/query",
        dbn_query,
        "3cx",
        "cal4care DBN: is the caller known? / save the agent's note",
        query=DbnQuery,
        responses={
            200: '{"success": true|false} (lookup) or {"success": 1} (note saved)',
            400: "Body is not valid JSON, not a JSON object, or not readable",
            422: "Missing cid or unknown status; success false/0",
            503: "Notes not available",
        },
        tags=("3cx",),
    )
    for method in ("GET", "POST")
]
