"""Figure 6: AMI frame received -> CRM request started, at a steady 1,000 events/s.

One load process plays both ends: the AMI server sends the recorded calls (replicated,
interleaved) at a fixed rate and notes when it wrote each call's deciding frame (the frame
after which the tracker emits the call's HANGUP step, found by running one copy through the
tracker beforehand); the webhook CRM notes when that call's `hangup` request arrived. One
clock, one process: latency = arrival - write. pbxcrm runs as `pbxcrm run` does in between.
Checked: every call step reaches the CRM exactly once.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from pathlib import Path
from typing import Any

from tests.benchmarks.ami_source import AmiLoadServer, stream_from_args
from tests.benchmarks.crm_sink import CrmSink
from tests.benchmarks.ingest import bench_settings
from tests.benchmarks.report import Check, Figure, Section, percentile
from tests.benchmarks.streams import expected_per_copy
from tests.benchmarks.worker import Link, Worker, deployed_logging, role

GOAL_P99_MS = 20.0
RATE = 1000.0
INTERLEAVE = 4

_LINKEDID = re.compile(rb"\r\nLinkedid: ([^\r]*)")


def _marks(copies: int, per_copy: int, hangup_frames: list[int]) -> set[int]:
    """Stream positions of every copy's deciding frames (copies interleaved round-robin)."""
    marks: set[int] = set()
    for copy in range(copies):
        group, member = divmod(copy, INTERLEAVE)
        size = min(INTERLEAVE, copies - group * INTERLEAVE)
        base = group * INTERLEAVE * per_copy
        marks.update(base + i * size + member for i in hangup_frames)
    return marks


@role("latency_load")
async def latency_load(link: Link, args: dict[str, Any]) -> dict[str, Any]:
    expected = expected_per_copy()
    stream = stream_from_args(args)
    marks = _marks(stream.copies, stream.per_copy, expected.hangup_frames)
    server = AmiLoadServer(stream, mode="paced", rate=float(args["rate"]), marks=marks)
    sink = CrmSink()
    await sink.start()
    await server.start()
    link.send(ready={"port": server.port, "crm_url": sink.url})
    want = stream.copies * expected.call_events
    await asyncio.wait_for(server.finished.wait(), len(stream.frames) / server.rate * 2 + 30)
    async with asyncio.timeout(60):
        while len(sink.keys) < want:
            await asyncio.sleep(0.01)  # polls for the last deliveries
    await asyncio.sleep(0.5)  # a duplicate would arrive now
    latencies: list[float] = []
    missing = 0
    for index, written in server.mark_times.items():
        found = _LINKEDID.search(stream.frames[index])
        arrived = sink.arrivals.get((found.group(1).decode(), "hangup")) if found else None
        if arrived is None:
            missing += 1
        else:
            latencies.append(arrived - written)
    await server.stop()
    await sink.stop()
    seconds = (server.finished_at or 0) - (server.started_at or 0)
    return {
        "latencies": latencies,
        "missing": missing,
        "marks": len(marks),
        "want": want,
        "events_per_s": len(stream.frames) / seconds if seconds else 0.0,
        **sink.summary(),
    }


@role("latency_pbxcrm")
async def latency_pbxcrm(link: Link, args: dict[str, Any]) -> dict[str, Any]:
    from ari_app.app.service import Service

    deployed_logging()
    service = Service(
        bench_settings(Path(args["tmp"]), args["port"], args["crm_url"]), settle_gc=True
    )
    await service.start()
    link.send(ready={})
    while (await link.command()).get("cmd") != "stop":
        pass
    await service.stop()
    return {}


async def run(quick: bool) -> Section:
    copies = 3 if quick else 32
    section = Section(
        f"6. Latency: AMI Hangup frame received -> CRM request started, at {RATE:,.0f} events/s",
    )
    load = await Worker.start("latency_load", copies=copies, interleave=INTERLEAVE, rate=RATE)
    try:
        ready = await load.ready()
        with tempfile.TemporaryDirectory(prefix="pbxcrm-bench-") as tmp:
            service = await Worker.start("latency_pbxcrm", tmp=tmp, **ready)
            try:
                await service.ready()
                result = await load.result(timeout=600)
            finally:
                await service.finish()
    finally:
        await load.finish()
    latencies = result["latencies"]
    p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
    section.notes.append(
        f"{len(latencies)} calls, events offered at {result['events_per_s']:,.0f}/s"
        f" (the recorded mix, {INTERLEAVE} copies interleaved)"
    )
    section.figures += [
        Figure("p50", p50, "ms", key="hangup_to_crm_p50_ms"),
        Figure(
            "p99",
            p99,
            "ms",
            goal=f"<= {GOAL_P99_MS:.0f}",
            met=p99 <= GOAL_P99_MS,
            key="hangup_to_crm_p99_ms",
        ),
        Figure(
            "max", max(latencies, default=float("nan")) * 1000, "ms", key="hangup_to_crm_max_ms"
        ),
    ]
    section.checks += [
        Check(
            "every call's hangup reached the CRM",
            result["missing"] == 0 and len(latencies) == result["marks"],
            f"{len(latencies)} of {result['marks']}",
        ),
        Check(
            "every call step delivered exactly once",
            result["distinct"] == result["want"] and result["duplicates"] == 0,
            f"{result['distinct']:,} of {result['want']:,}, {result['duplicates']} duplicates",
        ),
    ]
    return section
