"""Request parsing into pydantic models, with 400 (unreadable) / 422 (invalid field) answers."""

from __future__ import annotations

import json
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from ari_app.web.errors import json_error, validation_error

M = TypeVar("M", bound=BaseModel)


# What reading a form body raises on bytes a client made up: a multipart body without (or
# past) its boundary, bytes not in the declared charset, a charset Python does not know.
UNREADABLE_FORM = (ValueError, UnicodeDecodeError, LookupError)


class BadRequest(Exception):
    def __init__(self, response: web.Response) -> None:
        super().__init__(response.text)
        self.response = response


def parse_query(request: web.Request, model: type[M]) -> M:
    raw: dict[str, str | list[str]] = {}
    for key in request.query:
        values = request.query.getall(key)
        raw[key] = values[0] if len(values) == 1 else values
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise BadRequest(validation_error(exc)) from None


async def parse_body(request: web.Request, model: type[M]) -> M:
    """JSON body, or a form body for CRMs that post forms."""
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        try:
            form = await request.post()
        except UNREADABLE_FORM as exc:  # a broken multipart, a bad or unknown charset
            raise BadRequest(json_error(400, f"form body cannot be read: {exc}")) from None
        data: object = {k: v for k, v in form.items() if isinstance(v, str)}
    else:
        try:
            text = await request.text()
        except (UnicodeDecodeError, LookupError):  # bytes that are not text, unknown charset
            raise BadRequest(json_error(400, "body is not text in its declared charset")) from None
        try:
            data = json.loads(text) if text.strip() else None
        except json.JSONDecodeError as exc:
            raise BadRequest(
                json_error(400, f"body is not valid JSON (line {exc.lineno})")
            ) from None
        except RecursionError:
            raise BadRequest(json_error(400, "body is nested too deeply")) from None
        if not isinstance(data, dict):
            raise BadRequest(json_error(400, "body must be a JSON object"))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(validation_error(exc)) from None
