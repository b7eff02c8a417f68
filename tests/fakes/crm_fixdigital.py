"""Fake FixDigital CRM: webservice.php?operation=incomingCall|incomingCallAnswered.

Enforces: GET, exactly operation, sExt, sNumber, ClientId; the configured ClientId; sNumber
in the national digits the questionnaire's sample shows (no '+'). Answers as the sample:
{"success":true,"result":[]}.
"""

from __future__ import annotations

from aiohttp import web

from tests.fakes.crm_server import FakeCrm, require, require_keys


class FakeFixDigital(FakeCrm):
    def __init__(self, client_id: str = "10", close_operation: str | None = None) -> None:
        self.client_id = client_id
        # The questionnaire names no end-of-ring operation; a CRM that has one names it here.
        self.operations = {"incomingCall", "incomingCallAnswered"} | (
            {close_operation} if close_operation else set()
        )
        super().__init__()

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/webservice.php", self.webservice)

    async def webservice(self, request: web.Request) -> web.Response:
        query = list(request.query.items())
        require_keys("webservice.php query", query, ["operation", "sExt", "sNumber", "ClientId"])
        q = dict(query)
        require(
            q["operation"] in self.operations,
            f"operation {q['operation']!r}",
        )
        if q["ClientId"] != self.client_id:
            return web.json_response(
                {"success": False, "error": {"code": "ACCESS_DENIED", "message": "bad ClientId"}}
            )
        require(q["sNumber"].isdigit(), f"sNumber {q['sNumber']!r} must be national digits")
        require(q["sExt"].isdigit(), f"sExt {q['sExt']!r} must be an extension")
        return web.Response(text='{"success":true,"result":[]}', content_type="text/html")
