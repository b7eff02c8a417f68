"""Call history: `GET /api/v1/calls?number=&from=&to=&extension=&limit=&cursor=&format=`.

What FixDigital asked raw SQL for, as a parameter-checked API: JSON (default) or CSV
(`format=csv` or `Accept: text/csv`).
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from aiohttp import web
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from ari_app.web.deps import DEPS_KEY
from ari_app.web.errors import field_error, json_error
from ari_app.web.parsing import BadRequest, parse_query
from ari_app.web.routing import RouteSpec
from crm.store.history import COLUMNS, HistoryError, HistoryQuery, query_calls

_BARE_NUMBER = re.compile(r"\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*")
# A date alone (2026-11-01) is midnight UTC.
_TIME_SCHEMA = {"type": "string", "anyOf": [{"format": "date-time"}, {"format": "date"}]}


class CallsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    number: str | None = Field(
        default=None,
        min_length=1,
        max_length=32,
        pattern=r"^[0-9+()\-. ]+$",
        description="Client number in any format (E.164, national, as stored)",
    )
    extension: str | None = Field(default=None, max_length=32, pattern=r"^[0-9A-Za-z_.-]+$")
    start: Annotated[datetime | None, WithJsonSchema(_TIME_SCHEMA)] = Field(
        default=None, alias="from", description="ISO 8601; without offset it is UTC"
    )
    end: Annotated[datetime | None, WithJsonSchema(_TIME_SCHEMA)] = Field(
        default=None, alias="to", description="ISO 8601, exclusive; must be after `from` (422)"
    )
    limit: int = Field(default=100, ge=1, le=10_000)
    cursor: str | None = Field(default=None, max_length=512, pattern=r"^[A-Za-z0-9_-]+$")
    format: Literal["json", "csv"] | None = None

    @field_validator("start", "end", mode="before")
    @classmethod
    def _iso_only(cls, value: object) -> object:
        # pydantic would read "0.5" as a Unix time; the API documents ISO 8601 only.
        if isinstance(value, str) and _BARE_NUMBER.fullmatch(value):
            raise ValueError("must be an ISO 8601 time, e.g. 2024-05-01T10:00:00Z")
        return value

    @field_validator("start", "end")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @model_validator(mode="after")
    def _order(self) -> CallsQuery:
        if self.start and self.end and self.end <= self.start:
            raise ValueError("'to' must be after 'from'")
        return self


# What makes a spreadsheet read a cell as a formula: = + - @ (and their full-width forms, which
# some locales convert), also after leading blanks, which importers may trim; a cell starting
# with a tab, CR or LF is treated the same (OWASP's CSV injection list).
_FORMULA_FIRST = frozenset("=+-@\uff1d\uff0b\uff0d\uff20")
_CONTROL_FIRST = frozenset("\t\r\n")


def spreadsheet_safe(value: object) -> object:
    """A cell a spreadsheet would evaluate gets a leading `'`, which makes it plain text."""
    if not isinstance(value, str) or not value:
        return value
    if value[0] in _CONTROL_FIRST or value.lstrip(" \u00a0\u3000")[:1] in _FORMULA_FIRST:
        return "'" + value
    return value


def _csv(rows: list[dict[str, object]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\r\n"
    )
    writer.writeheader()
    for row in rows:
        writer.writerow({k: spreadsheet_safe(v) for k, v in row.items()})
    return buffer.getvalue()


async def list_calls(request: web.Request) -> web.Response:
    deps = request.app[DEPS_KEY]
    try:
        params = parse_query(request, CallsQuery)
    except BadRequest as exc:
        return exc.response
    limit_cap = deps.settings.http.history_max_limit
    if params.limit > limit_cap:
        return field_error(422, "limit", f"must be at most {limit_cap}")
    if deps.store is None:
        return json_error(503, "call history is not available")
    query = HistoryQuery(
        number=params.number,
        extension=params.extension,
        start=params.start,
        end=params.end,
        limit=params.limit,
        cursor=params.cursor,
    )
    region = deps.settings.http.originate.fraud.default_region
    try:
        page = await query_calls(deps.store.reader, query, region=region)
    except HistoryError as exc:
        return field_error(422, exc.field, exc.message)
    rows = [row.as_dict() for row in page.calls]
    wants_csv = params.format == "csv" or (
        params.format is None and "text/csv" in request.headers.get("Accept", "")
    )
    if wants_csv:
        response = web.Response(text=_csv(rows), content_type="text/csv", charset="utf-8")
        if page.next_cursor:
            response.headers["X-Next-Cursor"] = page.next_cursor
        return response
    return web.json_response({"calls": rows, "next_cursor": page.next_cursor})


ROUTES = [
    RouteSpec(
        "GET",
        "/api/v1/calls",
        list_calls,
        "calls",
        "Call history of a number, newest first (JSON or CSV; cursor pagination)",
        query=CallsQuery,
        responses={200: "One page of calls", 422: "A parameter is invalid"},
        content_types=("application/json", "text/csv"),
        tags=("history",),
    ),
]
