"""Fake Salesforce org: OAuth 2.0 token endpoint + the four 3CX web services of the spec.

Enforces: bearer token from its own token endpoint (401 INVALID_SESSION_ID otherwise, as
Salesforce answers), JSON content type, exactly the spec's field names per service, string
values where the spec shows strings, callType Inbound/Outbound, IsAllDayEvent a boolean.
"""

from __future__ import annotations

import itertools
import json
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from tests.fakes.crm_server import FakeCrm, require, require_keys

SURVEY = "/services/data/v31.0/subjects/saveSurvey"
WRAPUP = "/services/data/v31.0/subjects/rocverification"
EVENT = "/services/data/v31.0/subjects/Event"
DROPPED = "/services/apexrest/recordDroppedCall"
TOKEN = "/services/oauth2/token"

FIELDS = {
    SURVEY: ["callingNumber", "extension", "calledDateTime", "rating"],
    WRAPUP: [
        "callType",
        "startTime",
        "endTime",
        "terminatingParty",
        "calledNumber",
        "callingNumber",
        "agentExtension",
        "callRecordingURL",
    ],
    EVENT: ["Subject", "StartDateTime", "EndDateTime", "IsAllDayEvent", "Description"],
    DROPPED: ["dateAndTime", "calledNumber", "callingNumber", "creExtension"],
}
SUCCESS_STATUS = {
    SURVEY: "Call Record Saved",
    WRAPUP: "match",
    EVENT: "created",
    DROPPED: "Updated",
}


class FakeSalesforce(FakeCrm):
    def __init__(
        self,
        client_id: str = "3MVG9-client",
        client_secret: str = "sf-client-secret",
        username: str = "integration@example.com",
        password: str = "sf-password",
        security_token: str = "",
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.username = username
        self.password = password + security_token
        self.valid_tokens: set[str] = set()
        self.token_requests: list[dict[str, str]] = []
        self._counter = itertools.count(1)
        self.wrapup_status = "match"
        super().__init__()

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post(TOKEN, self.token)
        for path in FIELDS:
            router.add_post(path, self.service)

    def _is_auth(self, request: web.Request) -> bool:
        return request.path == TOKEN

    def expire_tokens(self) -> None:
        self.valid_tokens.clear()

    async def token(self, request: web.Request) -> web.Response:
        require(
            request.content_type == "application/x-www-form-urlencoded",
            f"token request must be a form, got {request.content_type}",
        )
        form = dict(parse_qsl((await request.read()).decode()))
        self.token_requests.append(form)
        ok = (
            form.get("client_id") == self.client_id
            and form.get("client_secret") == self.client_secret
        )
        if form.get("grant_type") == "password":
            ok = (
                ok
                and form.get("username") == self.username
                and form.get("password") == self.password
            )
        elif form.get("grant_type") != "client_credentials":
            return web.json_response(
                {
                    "error": "unsupported_grant_type",
                    "error_description": "grant type not supported",
                },
                status=400,
            )
        if not ok:
            return web.json_response(
                {"error": "invalid_grant", "error_description": "authentication failure"},
                status=400,
            )
        token = f"00Dfake!{next(self._counter)}"
        self.valid_tokens.add(token)
        return web.json_response(
            {
                "access_token": token,
                "instance_url": self.url,
                "id": f"{self.url}/id/00D/005",
                "token_type": "Bearer",
                "issued_at": "1795418000000",
                "signature": "c2lnbmF0dXJl",
            }
        )

    async def service(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.valid_tokens:
            return web.json_response(
                [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}],
                status=401,
            )
        require(
            request.content_type == "application/json",
            f"expected application/json, got {request.content_type}",
        )
        body: Any = json.loads(await request.read())
        require(isinstance(body, dict), "body must be a JSON object")
        require_keys(request.path, body, FIELDS[request.path])
        for key, value in body.items():
            if key == "IsAllDayEvent":
                require(isinstance(value, bool), "IsAllDayEvent must be a boolean")
            elif key != "Description":
                require(isinstance(value, str), f"{key} must be a string, got {value!r}")
        if request.path == WRAPUP:
            require(body["callType"] in ("Inbound", "Outbound"), f"callType {body['callType']!r}")
            status = self.wrapup_status
        else:
            status = SUCCESS_STATUS[request.path]
        return web.json_response({"status": status, "errorMessage": "", "errorCode": ""})
