"""A whole pbxcrm for the browser tests: fake PBX (recorded AMI, held until the agents watch),
Service with the HTTP port, a webhook CRM and a cal4care DBN server (real aiohttp servers).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from ari_app.app.service import Service
from ari_app.app.settings import Settings
from crm.model import Call, CallEvent, Direction, Disposition, EventKind
from tests.fakes.ami_pbx import FakePbx
from tests.fakes.crm_dbn import FakeDbn
from tests.fakes.crm_server import FakeCrm
from tests.recordings import ami_path

PIN_7181 = "246813"
TOKEN_7070 = "agent-7070-token-5f1c9a7e"
DBN_TOKEN = "d6bcfeee-8eea-65cd-f4d6-166585973ea2"
CALLER = "+79031234567"  # the caller of inbound_answered_caller_hangs_up
CALL_ID = "1795417965.0"


class WebhookCrm(FakeCrm):
    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/events", self._event)

    async def _event(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    def events(self) -> list[dict[str, Any]]:
        return [r.json() for r in self.requests if r.path == "/events"]


class GatedPbx(FakePbx):
    """Holds pbxcrm's AMI connection (before the banner) until `gate` is set, so the agents'
    browsers are signed in and watching before the recorded call starts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.gate.wait()
        await super()._serve(reader, writer)


@dataclass
class Lab:
    service: Service
    pbx: GatedPbx
    hook: WebhookCrm
    dbn: FakeDbn
    base_url: str
    durable: list[tuple[float, CallEvent]] = field(default_factory=list)  # (time.time(), ev)

    def first(self, kind: EventKind, extension: str | None = None) -> float | None:
        for at, event in self.durable:
            if event.kind is kind and (extension is None or event.extension == extension):
                return at
        return None


def lab_settings(tmp_path: Path, pbx_port: int, hook_url: str, dbn_url: str) -> Settings:
    return Settings.model_validate(
        {
            "pbx": {
                "id": "lab",
                "ami": {
                    "host": "127.0.0.1",
                    "port": pbx_port,
                    "username": "crm",
                    "password": "crmsecret",
                    "reconnect_max_seconds": 1,
                    "connect_timeout_seconds": 60,  # held at the gate meanwhile
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
                "agent": {
                    "agents": [
                        {"extension": "7181", "name": "Anna Smirnova", "pin": PIN_7181},
                        {"extension": "7070", "name": "Boris Orlov", "token": TOKEN_7070},
                    ],
                    "crm_url_template": "https://crm.example/contacts?phone={digits}",
                },
            },
            "agi": {"enabled": False},
            "crm": [
                {"type": "webhook", "name": "hook", "url": f"{hook_url}/events"},
                {"type": "dbn", "name": "dbn", "base_url": dbn_url, "token": DBN_TOKEN},
            ],
        }
    )


async def seed_history(service: Service) -> None:
    """The caller is a known contact who called three days before (answered by 7070)."""
    store = service.store
    assert store is not None
    await store.upsert_contact(
        CALLER, name="Ivan Petrov", company="Petrov Logistics", url="https://crm.example/c/42"
    )
    earlier = Call(
        call_id="1795158000.0",
        pbx_id="lab",
        direction=Direction.INBOUND,
        caller_number=CALLER,
        called_number="4951112233",
        agent_extension="7070",
        rang_extensions=["7070"],
        start_time=datetime(2026, 11, 20, 9, 40, tzinfo=UTC),
        answer_time=datetime(2026, 11, 20, 9, 40, 4, tzinfo=UTC),
        end_time=datetime(2026, 11, 20, 9, 43, tzinfo=UTC),
        talk_seconds=176.0,
        disposition=Disposition.ANSWERED,
        ended=True,
    )
    await store.upsert_call(earlier)
    await store.save_note(
        pbx_id="lab",
        number=CALLER,
        extension="7070",
        status="Schedule Later",
        comments="Wants the winter price list",
        call_id=earlier.call_id,
    )


@asynccontextmanager
async def screen_pop_lab(tmp_path: Path, scenario: str) -> AsyncIterator[Lab]:
    hook, dbn = WebhookCrm(), FakeDbn(token=DBN_TOKEN)
    await hook.start()
    await dbn.start()
    pbx = GatedPbx(ami_path(scenario))
    await pbx.start()
    service = Service(lab_settings(tmp_path, pbx.port, hook.url, dbn.url))
    try:
        await service.start()
        await seed_history(service)
        lab = Lab(service, pbx, hook, dbn, f"http://127.0.0.1:{service.http_port}")
        assert service.pipeline is not None
        service.pipeline.add_call_listener(lambda event: lab.durable.append((time.time(), event)))
        yield lab
    finally:
        await service.stop()
        pbx.gate.set()  # a connection still held at the gate ends now (its client is gone)
        await pbx.stop()
        await dbn.stop()
        await hook.stop()


async def wait_for(condition: Callable[[], object], timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)
