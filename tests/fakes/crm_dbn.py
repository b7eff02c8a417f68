"""Fake cal4care DBN server: /3cx/query?cid=&token= (lookup) and with status + comments (note).

Answers in the spec's own sloppy JSON (trailing commas), because real DBN servers copy it.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from aiohttp import web

from tests.fakes.crm_server import FakeCrm, require

STATUSES = ("No Answer", "Schedule Later", "Do not Disturb", "Completed")


class FakeDbn(FakeCrm):
    def __init__(
        self, token: str = "d6bcfeee-8eea-65cd-f4d6-166585973ea2", known: tuple[str, ...] = ()
    ) -> None:
        self.token = token
        self.known = set(known)
        self.notes: list[dict[str, str]] = []
        super().__init__()

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_route("GET", "/3cx/query", self.query)
        router.add_route("POST", "/3cx/query", self.query)

    async def query(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        if request.method == "POST":
            params |= dict(parse_qsl((await request.read()).decode(), keep_blank_values=True))
        if params.get("token") != self.token:
            return web.json_response({"success": False, "error": "invalid token"}, status=401)
        require(bool(params.get("cid")), "cid is required")
        if "status" in params:
            require(params["status"] in STATUSES, f"status {params['status']!r}")
            require("comments" in params, "comments is required with status")
            self.notes.append(params)
            return web.Response(text='{\n    "success": 1,\n}', content_type="application/json")
        found = "true" if params["cid"] in self.known else "false"
        return web.Response(text=f'{{\n"success": {found},\n}}', content_type="application/json")
