"""`pbxcrm demo` and `pbxcrm replay`: recorded Asterisk traffic through the real pipeline.

A fake PBX on 127.0.0.1 speaks AMI over TCP (banner, login, events) from a capture; pbxcrm
connects to it exactly as it would to Asterisk, and a local CRM sink shows what was sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web

from ari_app.app.fake_pbx import FakePbx
from ari_app.app.service import Service
from ari_app.app.settings import Settings
from crm.model import CallEvent, EventKind

log = logging.getLogger("pbxcrm.demo")

DEMO_USER = "crm"
DEMO_SECRET = "crmsecret"
DEMO_TOKEN = "demo-token-change-me"
# Recorded gaps are compressed (and each capped) so the whole demo takes a few seconds.
DEMO_PACE = 0.1
DEMO_MAX_GAP = 0.3
_SKIPPED_EVENTS = (b"Event: FullyBooted", b"Event: SuccessfulAuth")


def demo_recording() -> bytes:
    """The shipped captures joined into one AMI session, calls in the order they happened."""
    folder = resources.files("ari_app.app") / "demo_data"
    captures = sorted(
        (entry.read_bytes() for entry in folder.iterdir() if entry.name.endswith(".ami")),
        key=_first_timestamp,
    )
    head: list[bytes] = []
    body: list[bytes] = []
    tail: list[bytes] = []
    for index, capture in enumerate(captures):
        blocks = capture.split(b"\r\n\r\n")
        for block in blocks:
            if not block.strip():
                continue
            if block.startswith(b"Asterisk Call Manager/") or b"ActionID: login-1" in block:
                if index == 0:
                    head.append(block)
            elif block.startswith(b"Response: Goodbye"):
                if index == 0:
                    tail.append(block)
            elif block.startswith(b"Event:") and not block.startswith(_SKIPPED_EVENTS):
                body.append(block)
    return b"\r\n\r\n".join(head + body + tail) + b"\r\n\r\n"


def _first_timestamp(capture: bytes) -> float:
    marker = capture.find(b"\r\nTimestamp: ")
    if marker < 0:
        return 0.0
    end = capture.find(b"\r\n", marker + 2)
    try:
        return float(capture[marker + 13 : end])
    except ValueError:
        return 0.0


@dataclass
class CrmSink:
    """A stand-in CRM on 127.0.0.1 that accepts everything and remembers it."""

    out: TextIO | None = None
    received: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)  # what loop.create_server made
        self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        text = await request.text()
        try:
            body: Any = json.loads(text) if text else None
        except ValueError:
            body = text
        self.received.append(
            {
                "method": request.method,
                "path": request.path_qs,
                "body": body,
                "idempotency_key": request.headers.get("Idempotency-Key"),
            }
        )
        if self.out is not None:
            kind = body.get("kind") if isinstance(body, dict) else ""
            call_id = body.get("call_id") if isinstance(body, dict) else ""
            print(
                f"  CRM <- {request.method} {request.path_qs}  {kind:<9} call {call_id}",
                file=self.out,
            )
        return web.json_response({"success": True})


TABLE_COLUMNS = (
    ("call", 15),
    ("direction", 9),
    ("caller", 13),
    ("called", 11),
    ("agent", 5),
    ("disposition", 11),
    ("ring s", 6),
    ("talk s", 6),
    ("hung up by", 10),
    ("recording", 40),
)


def table_header() -> str:
    return "  ".join(name.ljust(width) for name, width in TABLE_COLUMNS)


def table_row(event: CallEvent) -> str:
    call = event.call
    values = (
        call.call_id,
        call.direction.value,
        call.caller_number or "-",
        call.called_number or "-",
        call.agent_extension or "-",
        call.disposition.value if call.disposition else "-",
        f"{call.ring_seconds:.1f}",
        f"{call.talk_seconds:.1f}",
        call.terminating_party.value if call.terminating_party else "-",
        call.recording_url or "-",
    )
    return "  ".join(str(v).ljust(w) for v, (_, w) in zip(values, TABLE_COLUMNS, strict=True))


async def _wait_until_delivered(service: Service, timeout: float) -> None:
    assert service.store is not None
    reader = service.store.reader
    async with asyncio.timeout(timeout):
        while True:
            rows = await reader.execute_fetchall(
                "SELECT count(*) FROM outbox WHERE state = 'pending'"
            )
            if next(iter(rows))[0] == 0:
                return
            await asyncio.sleep(0.05)


async def run_recording(
    recording: bytes,
    settings: Settings,
    *,
    out: TextIO,
    send: bool = True,
    pace: float = DEMO_PACE,
    serve_forever: bool = False,
) -> list[CallEvent]:
    """Replay one capture through a Service; print calls as they complete; return them."""
    completed: list[CallEvent] = []
    pbx = FakePbx(
        recording,
        pace=pace,
        max_gap=DEMO_MAX_GAP,
        await_actions=False,
    )
    await pbx.start()
    settings.pbx.ami.host, settings.pbx.ami.port = "127.0.0.1", pbx.port
    service = Service(settings, send=send)

    def on_event(event: CallEvent) -> None:
        if event.kind is EventKind.COMPLETED:
            completed.append(event)
            print(table_row(event), file=out)

    print(table_header(), file=out)
    try:
        await service.start()
        assert service.pipeline is not None
        service.pipeline.add_call_listener(on_event)
        await pbx.wait_finished(timeout=600)
        await service.pipeline.drain()
        if send and service.outbox is not None:
            await _wait_until_delivered(service, timeout=60)
        if serve_forever:
            print("serving; Ctrl-C to stop", file=out)
            await asyncio.Event().wait()
    finally:
        await service.stop()
        await pbx.stop()
    return completed


def demo_settings(store_dir: Path, sink_port: int, *, http_port: int = 0) -> Settings:
    return Settings.model_validate(
        {
            "pbx": {"id": "demo", "ami": {"username": DEMO_USER, "password": DEMO_SECRET}},
            "calls": {
                "recording_url_template": "http://127.0.0.1:8080/{signature}/recording/{file}",
                # The recorded calls are from 2026-11: links counted from then stay open.
                "recording_link_days": 3650,
                "recording_dir": str(resources.files("ari_app.app") / "demo_data" / "recordings"),
            },
            "store": {"path": str(store_dir / "pbxcrm.sqlite3")},
            "http": {
                "enabled": http_port != 0,
                "port": http_port,
                "clients": [
                    {
                        "name": "demo",
                        "token": DEMO_TOKEN,
                        "allow_from": ["127.0.0.1/32", "::1/128"],
                        "routes": [
                            "originate",
                            "calls",
                            "recordings",
                            "creatio",
                            "metrics",
                            "openapi",
                        ],
                    }
                ],
            },
            "agi": {"enabled": False},
            "crm": [
                {
                    "type": "webhook",
                    "name": "demo-crm",
                    "url": f"http://127.0.0.1:{sink_port}/pbx-events",
                }
            ],
        }
    )


async def run_demo(out: TextIO, *, serve: bool = False, pace: float = DEMO_PACE) -> int:
    sink = CrmSink(out=out)
    await sink.start()
    try:
        with tempfile.TemporaryDirectory(prefix="pbxcrm-demo-") as folder:
            settings = demo_settings(Path(folder), sink.port, http_port=8080 if serve else 0)
            print(
                "pbxcrm demo: recorded Asterisk calls -> fake PBX (AMI over TCP on 127.0.0.1)"
                f" -> pbxcrm -> CRM sink on 127.0.0.1:{sink.port}\n",
                file=out,
            )
            completed = await run_recording(
                demo_recording(), settings, out=out, pace=pace, serve_forever=serve
            )
    finally:
        await sink.stop()
    print(
        f"\n{len(completed)} calls completed, {len(sink.received)} CRM requests delivered.",
        file=out,
    )
    return 0 if completed and sink.received else 1
