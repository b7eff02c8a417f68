"""A client that knows pbxcrm only through `/api/openapi.json` finds nothing wrong with it.

schemathesis (a property-based OpenAPI client) runs, as docs/http-api.md tells an admin to run
it, against the demo's HTTP port: the demo's recorded calls replayed into a real Service on a
free port of 127.0.0.1, with the repository's schemathesis.toml (the demo token, and the
rules the schema cannot state). Fewer examples per operation than a manual run and a fixed
seed, so it stays short and repeatable.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import sys
from pathlib import Path

import aiohttp

from ari_app.app.demo import DEMO_TOKEN, CrmSink, demo_recording, demo_settings, run_recording

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "schemathesis.toml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_until_up(base: str, timeout: float = 60.0) -> None:
    async with aiohttp.ClientSession() as session, asyncio.timeout(timeout):
        while True:
            try:
                async with session.get(f"{base}/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)


async def test_schemathesis_reports_no_failure_against_the_demo(tmp_path: Path) -> None:
    sink = CrmSink(out=io.StringIO())
    await sink.start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = demo_settings(tmp_path, sink.port, http_port=port)
    demo = asyncio.create_task(
        run_recording(demo_recording(), settings, out=io.StringIO(), pace=0, serve_forever=True)
    )
    try:
        await wait_until_up(base)
        headers = {"Authorization": f"Bearer {DEMO_TOKEN}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.get(f"{base}/api/openapi.json") as resp:
                document = await resp.json()
        schema = tmp_path / "openapi.json"
        schema.write_text(json.dumps(document))
        command = [
            Path(sys.executable).with_name("schemathesis"),
            "--config-file", CONFIG,
            "run", schema,
            "--url", base,
            "--max-examples", "25",
            "--seed", "18",
            "--workers", "1",
            "--no-color",
        ]  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            *map(str, command),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,
        )
        output, _ = await asyncio.wait_for(proc.communicate(), 300)
        report = output.decode(errors="replace")
        assert proc.returncode == 0, report[-6000:]
        assert "No issues found" in report or " 0 failures" in report or "passed" in report
    finally:
        demo.cancel()
        try:
            await demo
        except asyncio.CancelledError:
            pass
        await sink.stop()
