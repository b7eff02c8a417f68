"""Shared pieces for the HTTP tests (no tests here): settings, a recorded-AMI backend, a server."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from ari_app.app.http_server import bound_port, start_http
from ari_app.app.settings import Settings
from ari_app.originate.service import OriginateService
from ari_app.web.deps import HttpDeps
from ari_app.web.settings import ROUTE_FAMILIES
from tests.recordings import recorded_frames

CRM_TOKEN = "crm-token-0123456789abcdef"
CREATIO_TOKEN = "creatio-token-0123456789abcdef"
FIX_USER = "fixdigital"
FIX_PASSWORD = "fix-password-0123456789"


def make_settings(tmp_path: Path, **http: Any) -> Settings:
    raw: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "clients": [
            {"name": "crm", "token": CRM_TOKEN, "routes": list(ROUTE_FAMILIES)},
            {"name": "creatio", "token": CREATIO_TOKEN, "routes": ["creatio", "recordings"]},
            {
                "name": "fixdigital",
                "username": FIX_USER,
                "password": FIX_PASSWORD,
                "routes": ["fixdigital", "calls"],
                "allow_from": ["127.0.0.0/8"],
            },
        ],
    }
    raw.update(http)
    recordings = tmp_path / "monitor"
    recordings.mkdir(exist_ok=True)
    return Settings.model_validate(
        {
            "http": raw,
            "calls": {"recording_dir": str(recordings)},
            "store": {"path": str(tmp_path / "pbxcrm.sqlite3")},
        }
    )


class RecordedAmiBackend:
    """Stands in for AmiClient.originate: keeps every action sent and answers with the
    `Response:` frame the recording holds for its Originate (ActionID rewritten to ours).
    """

    def __init__(self, scenario: str) -> None:
        self.scenario = scenario
        self.actions: list[dict[str, str]] = []
        frames = list(recorded_frames(scenario))
        self.recorded_action_id = next(
            f["ActionID"] for f in frames if f.get("Message") == "Originate successfully queued"
        )
        self.response = next(
            f for f in frames if f.get("Response") and f.get("ActionID") == self.recorded_action_id
        )
        self.fail_with: Exception | None = None

    async def originate(self, action: dict[str, str], *, timeout: float) -> Mapping[str, str]:
        self.actions.append(dict(action))
        if self.fail_with is not None:
            raise self.fail_with
        return {**self.response, "ActionID": action["ActionID"]}

    def outcome_frames(self, originate_id: str) -> list[dict[str, str]]:
        """The recording's events after the Originate, re-keyed to `originate_id`."""
        out = []
        for frame in recorded_frames(self.scenario):
            if "Event" not in frame:
                continue
            frame = dict(frame)
            if frame.get("ActionID") == self.recorded_action_id:
                frame["ActionID"] = originate_id
            if frame.get("Variable") == "CRM_CALL_ID":
                frame["Value"] = originate_id
            out.append(frame)
        return out


def make_service(settings: Settings, backend: Any, **kwargs: Any) -> OriginateService:
    return OriginateService(
        settings.http.originate,
        backend,
        agent_pattern=settings.calls.internal_extension_pattern,
        **kwargs,
    )


class Server:
    def __init__(self, runner: web.AppRunner, session: aiohttp.ClientSession) -> None:
        self.runner = runner
        self.session = session
        self.base = f"http://127.0.0.1:{bound_port(runner)}"

    def url(self, path: str) -> str:
        return self.base + path


@asynccontextmanager
async def running(deps: HttpDeps) -> AsyncIterator[Server]:
    runner = await start_http(deps)
    try:
        async with aiohttp.ClientSession() as session:
            yield Server(runner, session)
    finally:
        await runner.cleanup()


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


def bearer(token: str = CRM_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(username: str = FIX_USER, password: str = FIX_PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}
