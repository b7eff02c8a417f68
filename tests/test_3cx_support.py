"""Shared pieces for the 3CX tests (no tests here): pbxcrm run as `pbxcrm run` runs it, with a
webhook CRM and a DBN CRM on 127.0.0.1, for a site whose calls come from 3CX.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from ari_app.app.service import Service
from ari_app.app.settings import Settings
from tests.fakes.crm_dbn import FakeDbn
from tests.fakes.crm_server import FakeCrm

# The spec's own example token (cal4care-3cx-dbn-http-api.txt, 1.6 and 2.7).
DBN_TOKEN = "d6bcfeee-8eea-65cd-f4d6-166585973ea2"
TEMPLATE_USER = "3cx"
TEMPLATE_PASSWORD = "3cx-password-0123456789"
TEMPLATE = Path(__file__).resolve().parents[1] / "config" / "3cx" / "pbxcrm.xml"


class WebhookCrm(FakeCrm):
    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/events", self._event)

    async def _event(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    def events(self) -> list[dict[str, Any]]:
        return [r.json() for r in self.requests if r.path == "/events"]


def closed_port() -> int:
    """A port nothing listens on: pbxcrm's AMI client keeps trying it, as with Asterisk down.

    3CX sites need no Asterisk; the service still starts its AMI source and must not care.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_settings(
    tmp_path: Path,
    *,
    webhook_url: str,
    dbn_url: str | None = None,
    lookup: list[dict[str, Any]] | None = None,
    threecx: dict[str, Any] | None = None,
    http: dict[str, Any] | None = None,
) -> Settings:
    crm: list[dict[str, Any]] = [{"type": "webhook", "name": "hook", "url": webhook_url}]
    if dbn_url is not None:
        crm.append({"type": "dbn", "name": "dbn", "base_url": dbn_url, "token": DBN_TOKEN})
    return Settings.model_validate(
        {
            "pbx": {
                "id": "site",
                "ami": {
                    "host": "127.0.0.1",
                    "port": closed_port(),
                    "username": "crm",
                    "password": "crmsecret",
                    "reconnect_max_seconds": 5,
                },
            },
            "store": {"path": str(tmp_path / "pbxcrm.sqlite3")},
            "outbox": {
                "base_delay_seconds": 0.05,
                "max_delay_seconds": 0.2,
                "poll_interval_seconds": 0.05,
            },
            "http": {
                "host": "127.0.0.1",
                "port": 0,
                "clients": [
                    {"name": "dbn-flow", "token": DBN_TOKEN, "routes": ["3cx"]},
                    {
                        "name": "threecx",
                        "username": TEMPLATE_USER,
                        "password": TEMPLATE_PASSWORD,
                        "routes": ["3cx"],
                    },
                ],
                "threecx": threecx or {},
                **(http or {}),
            },
            "agi": {"enabled": False},
            "crm": crm,
            "lookup": lookup or [],
        }
    )


@dataclass
class Site:
    service: Service
    webhook: WebhookCrm
    dbn: FakeDbn
    session: aiohttp.ClientSession

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.service.http_port}"

    def url(self, path: str) -> str:
        return self.base + path

    def events(self, source: str = "3cx") -> list[dict[str, Any]]:
        return [e for e in self.webhook.events() if e["call"]["source"] == source]


@asynccontextmanager
async def running_site(
    tmp_path: Path,
    *,
    lookup: list[dict[str, Any]] | None = None,
    threecx: dict[str, Any] | None = None,
    http: dict[str, Any] | None = None,
) -> AsyncIterator[Site]:
    webhook = WebhookCrm()
    await webhook.start()
    dbn = FakeDbn(token=DBN_TOKEN)
    await dbn.start()
    settings = make_settings(
        tmp_path,
        webhook_url=f"{webhook.url}/events",
        dbn_url=dbn.url,
        lookup=lookup,
        threecx=threecx,
        http=http,
    )
    service = Service(settings)
    try:
        await service.start()
        async with aiohttp.ClientSession() as session:
            yield Site(service, webhook, dbn, session)
    finally:
        await service.stop()
        await dbn.stop()
        await webhook.stop()


async def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)
