"""FixDigital's click-to-call shape: `sExt`, `sNumber`, `ClientId`, answering
`{"success": true, "result": []}`; credentials as HTTP basic or `username`/`password` fields.
"""

from __future__ import annotations

import json

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ari_app.web.errors import validation_error
from ari_app.web.originate_routes import start_originate
from ari_app.web.parsing import UNREADABLE_FORM
from ari_app.web.routing import RouteSpec


class FixDigitalCall(BaseModel):
    model_config = ConfigDict(extra="ignore")  # username/password ride along as fields

    sExt: str = Field(min_length=1, max_length=32, description="Agent extension")
    sNumber: str = Field(min_length=1, max_length=32, description="Client number")
    ClientId: str | None = Field(default=None, max_length=64, description="CRM's client id")


def _answer(status: int, success: bool, error: str | None = None, **extra: object) -> web.Response:
    body: dict[str, object] = {"success": success, "result": [], **extra}
    if error:
        body["error"] = error
    return web.json_response(body, status=status)


async def makecall(request: web.Request) -> web.Response:
    fields: dict[str, str] = dict(request.query)
    if request.method == "POST":
        try:
            form = await request.post()
        except UNREADABLE_FORM:
            return _answer(400, False, "form body cannot be read")
        fields.update({k: v for k, v in form.items() if isinstance(v, str)})
    try:
        call = FixDigitalCall.model_validate(fields)
    except ValidationError as exc:
        detail = validation_error(exc)
        assert detail.text is not None
        return _answer(422, False, "invalid request", fields=json.loads(detail.text)["fields"])
    result = await start_originate(
        request, call.sExt, call.sNumber, source="fixdigital", client_ref=call.ClientId
    )
    if isinstance(result, web.Response):
        assert result.text is not None
        body = json.loads(result.text)
        return _answer(result.status, False, body.get("error"), fields=body.get("fields", []))
    return _answer(200, True, id=result.id)


_RESPONSES = {200: "Sent to the PBX", 401: "Bad credentials", 422: "Invalid parameter"}

ROUTES = [
    RouteSpec(
        method,
        path,
        makecall,
        "fixdigital",
        "FixDigital click-to-call",
        query=FixDigitalCall,
        responses=_RESPONSES,
        tags=("vendor",),
    )
    for path in ("/fixdigital/makecall", "/dialer/sodialer.php")
    for method in ("GET", "POST")
]
