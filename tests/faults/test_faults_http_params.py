"""Hostile input on the HTTP port: hypothesis drives every parameter of every route in the route
table (query, JSON/form/garbage body, path), with valid credentials so the handlers are reached:
API tokens, basic auth, path tokens, and for the /agent routes a fresh agent session cookie.
Each route is fuzzed on its own, and the server counts, per route, the examples whose handler
ran and did not refuse them as unauthenticated: a route no example got past its auth fails.

Promises checked on a real server on 127.0.0.1 (store with recorded calls, click-to-call on the
recorded AMI answers): never a 5xx other than a documented 503 (a dependency not configured),
an error answer is JSON naming the problem, no file outside the recordings folder is ever
served, and nothing the SQL layer or the handlers choke on is logged as an unhandled error.
The server runs in a thread of its own so hypothesis can drive it from a plain test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import json
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ari_app.agent.board import AgentBoard
from ari_app.agent.sessions import COOKIE
from ari_app.app import http_server as http_app
from ari_app.app.http_server import ALL_ROUTES, bound_port, start_http
from ari_app.calls.pipeline import Pipeline
from ari_app.calls.rules import CallRules
from ari_app.web.deps import HttpDeps
from ari_app.web.routing import RouteSpec
from crm.store.sqlite import Store
from tests.recordings import recorded_frames
from tests.test_http_support import (
    CREATIO_TOKEN,
    RecordedAmiBackend,
    basic,
    bearer,
    make_service,
    make_settings,
)

OUTSIDE_SECRET = b"OUTSIDE-THE-RECORDINGS-FOLDER"
AGENT_PIN = "246813"
# Per route and test: every route gets its own examples (the old 250 over all routes at
# random left some routes with none).
EXAMPLES_PER_ROUTE = 25
HYPOTHESIS = settings(
    max_examples=EXAMPLES_PER_ROUTE,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
AUTH_REFUSALS = (401, 403, 429)
SETUP_HEADER = "X-Fuzz-Setup"
# (method, path) -> examples whose handler ran and answered something else than a refusal.
REACHED: dict[tuple[str, str], int] = {}


def counting(spec: RouteSpec) -> RouteSpec:
    """The spec with its handler counting the requests it did not refuse as unauthorised."""
    handler = spec.handler

    async def counted(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            status = exc.status
            raise
        else:
            status = response.status
            return response
        finally:
            # The fixture's own sign-ins (SETUP_HEADER) are not fuzzed examples.
            if status not in AUTH_REFUSALS and SETUP_HEADER not in request.headers:
                key = (spec.method, spec.path)
                REACHED[key] = REACHED.get(key, 0) + 1

    return dataclasses.replace(spec, handler=counted)


@dataclass
class Server:
    port: int
    root: Path

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()


class ErrorLog(logging.Handler):
    """Unhandled handler errors (aiohttp logs them at ERROR) and anything from our code at
    ERROR or above."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and isinstance(record.exc_info[1], HttpProcessingError):
            # aiohttp refusing a request line it cannot parse (too long, bad bytes): it answers
            # 400 itself and logs it at ERROR; the answer is checked, the line is aiohttp's.
            return
        trace = logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
        self.records.append(f"{record.name}: {record.getMessage()} {trace[-600:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("http_params")
    agent = {
        "agents": [{"extension": "7181", "name": "Anna", "pin": AGENT_PIN}],
        # Fuzzed sign-ins fail by the hundred: no lockout, or the real sign-ins would fail.
        "max_failures": 100,
        "lockout_seconds": 0.001,
    }
    settings_ = make_settings(tmp, agent=agent)
    root = Path(settings_.calls.recording_dir)
    (root / "1795418967.2.wav").write_bytes(b"RIFF....WAVEfmt ")
    (tmp / "secret.wav").write_bytes(OUTSIDE_SECRET)
    ready: dict[str, Any] = {}
    started = threading.Event()
    stop = asyncio.Event()

    async def main() -> None:
        store = await Store.open(settings_.store)
        pipeline = Pipeline(CallRules(), store, [], pbx_id="lab")
        for scenario in ("inbound_answered_recorded", "outbound_agent_dials"):
            for frame in recorded_frames(scenario):
                pipeline.on_ami_frame(frame)
        await pipeline.drain()
        originate = make_service(settings_, RecordedAmiBackend("click_to_call_originate"))
        board = AgentBoard()
        pipeline.add_call_listener(board.on_call_event)
        routes = http_app.ALL_ROUTES
        http_app.ALL_ROUTES = [counting(spec) for spec in routes]
        try:
            runner = await start_http(
                HttpDeps(
                    settings_,
                    store=store,
                    originate_service=originate,
                    pipeline=pipeline,
                    agent_board=board,
                )
            )
        finally:
            http_app.ALL_ROUTES = routes
        ready["port"] = bound_port(runner)
        ready["stop"] = stop
        ready["loop"] = asyncio.get_running_loop()
        started.set()
        await stop.wait()
        await runner.cleanup()
        await originate.close()
        await store.close()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(20), "HTTP server did not start"
    try:
        yield Server(ready["port"], root)
    finally:
        ready["loop"].call_soon_threadsafe(ready["stop"].set)
        thread.join(20)


@pytest.fixture
def errors() -> Iterator[ErrorLog]:
    handler = ErrorLog()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


def agent_session(server: Server) -> dict[str, str]:
    """A fresh agent session (a fuzzed DELETE /agent/api/session may end the last one)."""
    status, headers, body = server.request(
        "POST",
        "/agent/api/session",
        json.dumps({"extension": "7181", "secret": AGENT_PIN}).encode(),
        {"Content-Type": "application/json", "X-Pbxcrm-Agent": "1", SETUP_HEADER: "1"},
    )
    assert status == 200, body
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    assert cookie.startswith(COOKIE + "=")
    return {"Cookie": cookie, "X-Pbxcrm-Agent": "1"}


def credentials(server: Server, spec: RouteSpec) -> dict[str, str]:
    if spec.path.startswith("/agent"):
        return agent_session(server)
    if spec.family == "fixdigital":
        return basic()
    if spec.family is None or spec.family == "creatio":
        return {}
    return bearer()


def path_of(spec: RouteSpec, values: dict[str, str]) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "token" and spec.family in ("creatio", "recordings") and name not in values:
            return CREATIO_TOKEN
        return quote(values.get(name, "x"), safe="/" if name == "file" else "")

    return re.sub(r"\{(\w+)\}", fill, spec.path)


def check_answer(spec: RouteSpec, status: int, headers: dict[str, str], body: bytes) -> None:
    assert status < 500 or status == 503, f"{spec.method} {spec.path} -> {status}: {body[:200]!r}"
    assert OUTSIDE_SECRET not in body
    if status >= 400 and "json" in headers.get("Content-Type", ""):
        answer = json.loads(body)
        assert isinstance(answer, dict) and answer, body[:200]


ROUTES = [spec for spec in ALL_ROUTES if spec.path not in ("/agent/api/stream",)]
# The event stream never ends by design; its parameters are none, so nothing is lost.

text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=300),
    st.sampled_from(
        [
            "",
            "' OR 1=1 --",
            "'; DROP TABLE calls; --",
            '" UNION SELECT * FROM outbox --',
            "../../etc/passwd",
            "%00",
            "\x00",
            "\r\nX-Injected: 1",
            "9" * 5000,
            "-1",
            "1e308",
            "NaN",
            "2026-13-45T99:99:99",
            "+79031234567",
            "7181",
            "{}",
            "[]",
        ]
    ),
)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)


def field_names(spec: RouteSpec) -> list[str]:
    names: list[str] = []
    for model in (spec.query, spec.body):
        if model is not None:
            for name, info in model.model_fields.items():
                names.append(info.alias or name)
    return names or ["q"]


def query_paths(spec: RouteSpec) -> st.SearchStrategy[str]:
    names = field_names(spec)
    params = st.dictionaries(st.sampled_from(names) | text, text, max_size=len(names) + 2)
    values = st.dictionaries(st.sampled_from(["id", "file", "call_id", "asset"]), text)
    return st.builds(lambda p, v: path_of(spec, v) + "?" + urlencode(p), params, values)


def route_id(spec: RouteSpec) -> str:
    return f"{spec.method} {spec.path}"


def reached(spec: RouteSpec) -> int:
    return REACHED.get((spec.method, spec.path), 0)


@pytest.mark.parametrize("spec", ROUTES, ids=route_id)
def test_any_query_parameter_of_any_route_gets_an_answer_never_a_crash(
    server: Server, errors: ErrorLog, spec: RouteSpec, fault_report: list[str]
) -> None:
    before = reached(spec)

    @HYPOTHESIS
    @given(path=query_paths(spec))
    def one(path: str) -> None:
        errors.records.clear()  # the fixture lives across examples
        status, headers, body = server.request(spec.method, path, headers=credentials(server, spec))
        check_answer(spec, status, headers, body)
        assert not errors.records, errors.records

    one()
    # Past its auth into its handler, at least for some of its examples.
    assert reached(spec) > before, f"no example got past the auth of {route_id(spec)}"


BODY_ROUTES = [spec for spec in ROUTES if spec.method in ("POST", "PUT", "PATCH")]


@st.composite
def body_requests(draw: st.DrawFn, spec: RouteSpec) -> tuple[bytes, str]:
    names = field_names(spec)
    kind = draw(st.sampled_from(["json-object", "json-any", "form", "garbage"]))
    if kind == "json-object":
        fields = draw(st.dictionaries(st.sampled_from(names) | text, json_value, max_size=6))
        return json.dumps(fields).encode(), "application/json"
    if kind == "json-any":
        return json.dumps(draw(json_value)).encode(), "application/json"
    if kind == "form":
        fields = draw(st.dictionaries(st.sampled_from(names) | text, text, max_size=6))
        return urlencode(fields).encode(), "application/x-www-form-urlencoded"
    content_type = draw(st.sampled_from(["application/json", "text/plain", "", "multipart/x"]))
    return draw(st.binary(max_size=2000)), content_type


@pytest.mark.parametrize("spec", BODY_ROUTES, ids=route_id)
def test_any_body_to_any_route_gets_an_answer_never_a_crash(
    server: Server, errors: ErrorLog, spec: RouteSpec
) -> None:
    before = reached(spec)

    @HYPOTHESIS
    @given(request=body_requests(spec))
    def one(request: tuple[bytes, str]) -> None:
        body, content_type = request
        errors.records.clear()
        headers = credentials(server, spec)
        if content_type:
            headers["Content-Type"] = content_type
        status, answer_headers, answer = server.request(
            spec.method, path_of(spec, {}), body=body, headers=headers
        )
        check_answer(spec, status, answer_headers, answer)
        assert not errors.records, errors.records

    one()
    assert reached(spec) > before, f"no example got past the auth of {route_id(spec)}"


traversal = st.lists(
    st.sampled_from(
        [
            "..",
            ".",
            "",
            "%2e%2e",
            "%2F",
            "..%2f",
            "..\\",
            "secret.wav",
            "1795418967.2.wav",
            "monitor",
            "%00",
            "\x00",
            "~",
            "/",
            "//",
            "a" * 300,
        ]
    )
    | st.text(max_size=20),
    min_size=1,
    max_size=6,
)


@HYPOTHESIS
@given(segments=traversal, raw=st.booleans())
def test_no_recording_path_ever_reaches_a_file_outside_the_folder(
    server: Server, errors: ErrorLog, segments: list[str], raw: bool
) -> None:
    name = "/".join(segments)
    errors.records.clear()
    for spec in ROUTES:
        if "{file}" not in spec.path:
            continue
        path = spec.path.replace("{token}", CREATIO_TOKEN)
        path = path.replace(
            "{file}",
            name
            if raw
            and name.isascii()
            and name.isprintable()
            and " " not in name
            and "?" not in name
            and "#" not in name
            else quote(name, safe="/%"),
        )
        status, headers, body = server.request("GET", path, headers=bearer())
        check_answer(spec, status, headers, body)
        if status == 200:
            assert body.startswith(b"RIFF"), path
    assert not errors.records, errors.records


def test_every_route_got_fuzzed_examples_past_its_auth(fault_report: list[str]) -> None:
    # Runs after the walks above (file order); run alone, it has nothing counted and fails.
    missing = [route_id(s) for s in ROUTES if reached(s) == 0]
    assert not missing, f"routes no fuzzed example got into: {missing}"
    counts = ", ".join(f"{route_id(s)} {reached(s)}" for s in ROUTES)
    fault_report.append(
        f"HTTP fuzz: {len(ROUTES)} routes, {sum(REACHED.values())} examples past auth into"
        f" the handler ({EXAMPLES_PER_ROUTE} per route and walk): {counts}"
    )


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/api/v1/originate", "application/json"),
        ("/api/v1/originate", "multipart/form-data; boundary=x"),
        ("/3cx/query", "application/json"),
        ("/3cx/query", "multipart/form-data; boundary=x"),
        ("/3cx/crm/journal", "application/json"),
    ],
)
def test_a_body_that_is_not_utf8_text_is_a_400_not_a_500(
    server: Server, path: str, content_type: str
) -> None:
    # Found by the fuzzing above: request.text() raised UnicodeDecodeError -> 500.
    headers = {**bearer(), "Content-Type": content_type}
    status, _, body = server.request("POST", path, body=b"@\xeb=NU\xec\xd3\x80", headers=headers)
    assert status == 400, body
    assert "error" in json.loads(body)
