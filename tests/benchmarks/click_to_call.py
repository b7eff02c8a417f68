"""Figure 4: click-to-call, `POST /api/v1/originate` -> AMI `Originate` sent and answered.

pbxcrm runs as `pbxcrm run` does (HTTP port, originate service, store, AMI client) against the
benchmark AMI server, which answers each Originate as recorded (`Originate successfully
queued`). A client process sends the requests: a closed loop (saturation, requests/s) and an
open loop at a fixed rate (latency: request sent -> 202 received, which happens only after
Asterisk's answer to the Originate came back, so it bounds request -> Originate sent).
Checked: every request answered 202, and the PBX got exactly one Originate per 202.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.benchmarks.ingest import bench_settings
from tests.benchmarks.report import Check, Figure, Section, percentile
from tests.benchmarks.worker import Link, Worker, deployed_logging, role

GOAL_RPS = 2000.0
GOAL_P99_MS = 20.0
OPEN_LOOP_RATE = 200.0
CONCURRENCY = 64
TOKEN = "bench-token-0123456789abcdef"


@role("c2c_pbxcrm")
async def c2c_pbxcrm(link: Link, args: dict[str, Any]) -> dict[str, Any]:
    from ari_app.app.service import Service

    deployed_logging()
    settings = bench_settings(
        Path(args["tmp"]),
        args["pbx_port"],
        "http://127.0.0.1:9/never-sent",
        http={
            "enabled": True,
            "port": 0,
            "clients": [
                {
                    "name": "crm",
                    "token": TOKEN,
                    "originate_per_minute": 1_000_000,
                    "routes": ["originate"],
                }
            ],
        },
    )
    service = Service(settings, send=False, settle_gc=True)
    await service.start()
    assert service.ami is not None
    await service.ami.wait_connected(30)
    link.send(ready={"port": service.http_port})
    cpu_at_ready = time.process_time()  # every thread's: SQLite's writer works for requests
    while (await link.command()).get("cmd") != "stop":
        pass
    cpu_s = time.process_time() - cpu_at_ready
    await service.stop()
    return {"cpu_s": cpu_s}


@role("c2c_client")
async def c2c_client(link: Link, args: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    url = f"http://127.0.0.1:{args['port']}/api/v1/originate"
    seconds, warmup = float(args["seconds"]), float(args["warmup"])
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    done_in_window = 0
    headers = {"Authorization": f"Bearer {TOKEN}"}
    body = {"extension": "101", "number": "89161234567"}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        link.send(ready={})
        start = time.monotonic()
        measure_from, measure_to = start + warmup, start + warmup + seconds

        async def one() -> None:
            nonlocal done_in_window
            sent = time.monotonic()
            async with http.post(url, json=body, headers=headers) as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1
            now = time.monotonic()
            if measure_from <= sent and now <= measure_to:
                latencies.append(now - sent)
            if measure_from <= now <= measure_to:
                done_in_window += 1

        if args["mode"] == "closed":

            async def loop() -> None:
                while time.monotonic() < measure_to:
                    await one()

            await asyncio.gather(*(loop() for _ in range(int(args["concurrency"]))))
        else:
            rate = float(args["rate"])
            tasks: set[asyncio.Task[None]] = set()
            sent = 0
            while time.monotonic() < measure_to:
                due = int((time.monotonic() - start) * rate) + 1
                while sent < due:
                    task = asyncio.create_task(one())
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    sent += 1
                # The generator's clock: an open loop sends on time, answered or not.
                await asyncio.sleep(max(0.0, start + sent / rate - time.monotonic()))
            await asyncio.gather(*tasks)
    return {
        "requests_per_s": done_in_window / seconds,
        "latencies": latencies,
        "statuses": {str(k): v for k, v in statuses.items()},
    }


async def run(quick: bool) -> Section:
    seconds, warmup = (0.5, 0.2) if quick else (4.0, 1.0)
    section = Section("4. Click-to-call: HTTP request -> AMI Originate sent (and answered)")
    source = await Worker.start("ami_source", copies=0)
    try:
        pbx_port = (await source.ready())["port"]
        with tempfile.TemporaryDirectory(prefix="pbxcrm-bench-") as tmp:
            service = await Worker.start("c2c_pbxcrm", tmp=tmp, pbx_port=pbx_port)
            try:
                port = (await service.ready())["port"]
                common = {"port": port, "seconds": seconds, "warmup": warmup}
                results = []
                for mode in ("closed", "open"):
                    client = await Worker.start(
                        "c2c_client",
                        mode=mode,
                        concurrency=CONCURRENCY,
                        rate=OPEN_LOOP_RATE,
                        **common,
                    )
                    try:
                        await client.ready()
                        results.append(await client.result())
                    finally:
                        await client.finish()
                service.send(cmd="stop")
                cpu_s = (await service.result())["cpu_s"]
            finally:
                await service.finish()
        source.send(cmd="stop")
        originates = (await source.result())["originates"]
    finally:
        await source.finish()
    closed, opened = results
    rps = closed["requests_per_s"]
    p50 = percentile(opened["latencies"], 50) * 1000
    p99 = percentile(opened["latencies"], 99) * 1000
    section.figures += [
        Figure(
            f"requests/s at saturation ({CONCURRENCY} concurrent)",
            rps,
            "requests/s",
            goal=f">= {GOAL_RPS:,.0f}",
            met=rps >= GOAL_RPS,
            key="c2c_requests_per_s",
        ),
        Figure(f"p50 at {OPEN_LOOP_RATE:.0f} requests/s offered", p50, "ms", key="c2c_p50_ms"),
        Figure(
            f"p99 at {OPEN_LOOP_RATE:.0f} requests/s offered",
            p99,
            "ms",
            goal=f"<= {GOAL_P99_MS:.0f}",
            met=p99 <= GOAL_P99_MS,
            key="c2c_p99_ms",
        ),
    ]
    accepted = sum(r["statuses"].get("202", 0) for r in results)
    total = sum(sum(r["statuses"].values()) for r in results)
    # Both loops' requests over the CPU from ready to stop (the gaps between them are idle).
    section.figures.append(
        Figure(
            "pbxcrm CPU per request (all its threads)",
            cpu_s / max(total, 1) * 1e6,
            "us",
            key="c2c_cpu_us_per_request",
        )
    )
    section.checks += [
        Check(
            "every request accepted (202)",
            accepted == total,
            f"{accepted:,} of {total:,}; statuses {[r['statuses'] for r in results]}",
        ),
        Check(
            "exactly one Originate per accepted request",
            originates == accepted,
            f"{originates:,} Originates for {accepted:,} requests",
        ),
    ]
    return section
