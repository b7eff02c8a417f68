"""Fake Creatio CC360: AuthService login with cookies + BPMCSRF, and OmniWhoCallsService.

Enforces: the session cookies it set and the BPMCSRF header equal to the BPMCSRF cookie on
every /0/rest request (401 otherwise, as Creatio answers an expired session); the token in
the path; exactly the documented query parameters; eventName ringing/answer/hangup;
user digits only; event incoming/outgoing; duration an integer; body {"FILES": [...]}.
"""

from __future__ import annotations

import itertools
import json

from aiohttp import web

from tests.fakes.crm_server import FakeCrm, require, require_keys

LOGIN = "/ServiceModel/AuthService.svc/Login"


class FakeCreatio(FakeCrm):
    def __init__(
        self,
        token: str = "who-calls-token-42",
        username: str = "Supervisor",
        password: str = "creatio-pass",
    ) -> None:
        self.token = token
        self.username = username
        self.password = password
        self.sessions: dict[str, str] = {}  # .ASPXAUTH -> BPMCSRF
        self.logins = 0
        self._counter = itertools.count(1)
        super().__init__()

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post(LOGIN, self.login)
        router.add_route("*", "/0/rest/OmniWhoCallsService/{token}/{method}", self.rest)
        router.add_route(
            "*", "/0/ServiceModel/OmniWhoCallsService.svc/{token}/{method}", self.anonymous
        )

    def _is_auth(self, request: web.Request) -> bool:
        return request.path == LOGIN

    def expire_sessions(self) -> None:
        self.sessions.clear()

    async def login(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        require_keys("login body", body, ["UserName", "UserPassword"])
        if body != {"UserName": self.username, "UserPassword": self.password}:
            return web.json_response(
                {
                    "Code": 1,
                    "Message": "Invalid username or password",
                    "Exception": None,
                    "PasswordChangeUrl": None,
                    "RedirectUrl": None,
                }
            )
        self.logins += 1
        n = next(self._counter)
        auth, csrf = f"ASPXAUTH{n:04d}", f"csrf{n:04d}"
        self.sessions[auth] = csrf
        response = web.json_response(
            {
                "Code": 0,
                "Message": "",
                "Exception": None,
                "PasswordChangeUrl": None,
                "RedirectUrl": None,
            }
        )
        response.set_cookie(".ASPXAUTH", auth, path="/", httponly=True)
        response.set_cookie("BPMCSRF", csrf, path="/")
        response.set_cookie("BPMLOADER", f"loader{n}", path="/", httponly=True)
        response.set_cookie("UserName", self.username, path="/")
        return response

    async def rest(self, request: web.Request) -> web.Response:
        auth = request.cookies.get(".ASPXAUTH")
        if auth not in self.sessions:
            return web.Response(status=401, text="")
        require(
            request.headers.get("BPMCSRF") == self.sessions[auth],
            "BPMCSRF header must equal the BPMCSRF cookie",
        )
        return await self.handle(request)

    async def anonymous(self, request: web.Request) -> web.Response:
        return await self.handle(request)

    async def handle(self, request: web.Request) -> web.Response:
        require(request.match_info["token"] == self.token, "wrong OmniWhoCallsToken in path")
        method = request.match_info["method"]
        query = list(request.query.items())
        q = dict(query)
        if method == "RingingEventHandler":
            require(request.method == "GET", "RingingEventHandler is a GET")
            require_keys(
                "RingingEventHandler query", query, ["id", "eventName", "callerid", "user"]
            )
            require(
                q["eventName"] in ("ringing", "answer", "hangup"), f"eventName {q['eventName']}"
            )
        elif method == "PushHistoryData":
            require(request.method == "POST", "PushHistoryData is a POST")
            require_keys(
                "PushHistoryData query", query, ["id", "callerid", "user", "event", "duration"]
            )
            require(q["event"] in ("incoming", "outgoing"), f"event {q['event']}")
            require(q["duration"].isdigit(), f"duration {q['duration']!r} is not whole seconds")
            body = json.loads(await request.read())
            require_keys("PushHistoryData body", body, ["FILES"])
            require(
                isinstance(body["FILES"], list) and all(isinstance(f, str) for f in body["FILES"]),
                "FILES must list URLs",
            )
        else:
            raise web.HTTPNotFound()
        require(q["user"].isdigit(), f"user {q['user']!r} must be digits only")
        require(bool(q["id"]), "id is required")
        return web.json_response({"success": True})
