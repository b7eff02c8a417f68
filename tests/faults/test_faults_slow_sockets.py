"""Slow and stuck sockets against the real `pbxcrm run` process: many connections sending half a
request header, a body that never finishes, and a process out of file descriptors. Normal
requests still get their answer; the figures are printed under "pbxcrm reliability figures".
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import sys
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from ari_app.app.settings import Settings
from tests.fakes.ami_pbx import FakePbx
from tests.faults.support import AMI_PASSWORD, rss_bytes, wait_for
from tests.recordings import ami_path

TOKEN = "slow-sockets-token-0123456789"
SLOW = 150  # connections trickling half a header (the count that locked the port out)
CAP = 100
HEADER_TIMEOUT = 4.0
HALF_HEADER = b"GET /healthz HTTP/1.1\r\nHost: pbx\r\nX-Slow: "


def _config(tmp: Path, pbx_port: int, **http: object) -> Path:
    extra = "".join(f"{key} = {value}\n" for key, value in http.items())
    config = tmp / "pbxcrm.toml"
    config.write_text(f"""
[pbx]
id = "lab"
[pbx.ami]
host = "127.0.0.1"
port = {pbx_port}
username = "crm"
password = "{AMI_PASSWORD}"
[store]
path = "{tmp / "pbxcrm.sqlite3"}"
[agi]
enabled = false
survey_spool = "{tmp / "spool.jsonl"}"
[http]
host = "127.0.0.1"
port = 0
{extra}
[[http.clients]]
name = "ops"
token = "{TOKEN}"
routes = ["metrics", "originate"]
""")
    Settings.model_validate(tomllib.loads(config.read_text()))  # the log check learns the token
    return config


class Run:
    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log
        self.port = 0

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@asynccontextmanager
async def pbxcrm(tmp: Path, *, nofile: int | None = None, **http: object) -> AsyncIterator[Run]:
    pbx = FakePbx(ami_path("inbound_answered_recorded"), password=AMI_PASSWORD, await_actions=False)
    await pbx.start()
    config = _config(tmp, pbx.port, **http)
    log = tmp / "run.log"

    def limit_files() -> None:  # in the child only: the test process keeps its own limit
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ari_app.app.cli",
            "run",
            "--config",
            str(config),
            stdout=out,
            stderr=out,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=limit_files,
        )
    run = Run(process, log)
    try:
        await wait_for(lambda: "HTTP port listening on" in run.text(), timeout=30)
        found = re.search(r"HTTP port listening on 127\.0\.0\.1:(\d+)", run.text())
        assert found is not None
        run.port = int(found.group(1))
        yield run
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()
        await pbx.stop()


async def _half_requests(
    port: int, count: int
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    held = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(HALF_HEADER)
        await writer.drain()
        held.append((reader, writer))
    return held


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    try:
        await reader.read()  # returns at EOF (the server closed), or raises on a reset
    except ConnectionError:
        pass
    return True


async def _metric(session: aiohttp.ClientSession, run: Run, name: str) -> float:
    async with session.get(
        run.url("/metrics"), headers={"Authorization": f"Bearer {TOKEN}"}
    ) as resp:
        assert resp.status == 200
        text = await resp.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def test_half_sent_requests_are_closed_and_a_normal_request_still_gets_its_answer(
    tmp_path: Path, fault_report: list[str]
) -> None:
    async with pbxcrm(
        tmp_path, max_connections=CAP, header_timeout_seconds=HEADER_TIMEOUT, body_timeout_seconds=2
    ) as run:
        rss_before = rss_bytes(run.process.pid)
        held = await _half_requests(run.port, SLOW)
        async with aiohttp.ClientSession() as session:
            # While every slot is taken by a half-sent header, a normal request is answered.
            async with session.get(run.url("/healthz")) as resp:
                assert resp.status == 200
                assert await resp.json() == {"status": "ok"}
            stalled = await _metric(
                session, run, 'pbxcrm_http_connections_refused_total{reason="stalled"}'
            )
            open_now = await _metric(session, run, "pbxcrm_http_connections_open")
            assert stalled >= SLOW - CAP + 1  # the oldest stalled ones made room
            assert open_now <= CAP
            # A body that never finishes is answered 408 and closed, not waited for.
            reader, writer = await asyncio.open_connection("127.0.0.1", run.port)
            writer.write(
                b"POST /api/v1/originate HTTP/1.1\r\nHost: pbx\r\n"
                b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
            )
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 30)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
            writer.close()
            # Every half-sent header is closed by the server within the header timeout.
            async with asyncio.timeout(HEADER_TIMEOUT + 30):
                closed = await asyncio.gather(*(_closed_by_server(r) for r, _ in held))
            assert all(closed) and len(closed) == SLOW
            for _, slow_writer in held:
                slow_writer.close()
            await wait_for(lambda: True)
            slow_bodies = await _metric(session, run, "pbxcrm_http_slow_requests_total")
            assert slow_bodies >= 1
            async with session.get(run.url("/healthz")) as resp:
                assert resp.status == 200
            rss_after = rss_bytes(run.process.pid)
    mib = 1024 * 1024
    fault_report.append(
        f"slow sockets: {SLOW} connections holding half a request header against max_connections"
        f" {CAP}: {int(stalled)} stalled ones closed to make room, every one closed within the"
        f" {HEADER_TIMEOUT:.0f} s header timeout, a normal request answered meanwhile, a"
        f" never-finished body answered 408; memory {rss_before / mib:.1f} ->"
        f" {rss_after / mib:.1f} MiB"
    )


async def test_out_of_file_descriptors_is_logged_a_few_times_not_thousands_and_recovers(
    tmp_path: Path, fault_report: list[str]
) -> None:
    # A cap above the open-file limit: accept() runs out of descriptors first.
    async with pbxcrm(
        tmp_path, nofile=96, max_connections=1000, header_timeout_seconds=HEADER_TIMEOUT
    ) as run:
        assert "open-file limit 96 is below [http] max_connections 1000" in run.text()
        held = await _half_requests(run.port, 150)
        await asyncio.sleep(3)  # asyncio retries accept() every second meanwhile
        text = run.text()
        reports = text.count("HTTP port: accept() failed")
        raw = text.count("socket.accept() out of system resource")
        for _, writer in held:
            writer.close()
        # Once the held sockets are gone, normal requests are answered again.
        async with aiohttp.ClientSession() as session:
            async with asyncio.timeout(30):
                while True:
                    try:
                        async with session.get(run.url("/healthz")) as resp:
                            if resp.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.2)
            failures = await _metric(session, run, "pbxcrm_http_accept_errors_total")
    assert reports >= 1 and raw == 0 and failures >= reports
    assert reports <= 2  # one line per 10 s, with the count, instead of one per accept()
    fault_report.append(
        f"out of file descriptors (limit 96, 150 connections held): {reports} log line(s)"
        f" in 3 s for {int(failures)} failed accept() (pbxcrm_http_accept_errors_total);"
        " answered again once they closed"
    )


def test_the_systemd_unit_leaves_descriptors_for_every_connection_pbxcrm_allows() -> None:
    from agi.settings import AgiSettings
    from ari_app.web.settings import HttpSettings

    unit = (Path(__file__).parents[2] / "config" / "systemd" / "pbxcrm.service").read_text()
    found = re.search(r"^LimitNOFILE=(\d+)$", unit, re.MULTILINE)
    assert found is not None, "LimitNOFILE missing from config/systemd/pbxcrm.service"
    wanted = HttpSettings().max_connections + AgiSettings().max_sessions + 256
    assert int(found.group(1)) >= wanted
