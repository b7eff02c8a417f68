"""Figure 2: the resident memory of `pbxcrm run` with 10,000 calls in progress.

Ten recorded one-call scenarios, each cut before its first hangup frame, are replicated 1,000
times with unique ids and streamed over AMI to a fresh pbxcrm process (store and outbox rows
included, as in figure 1), which then holds 10,000 open calls. RSS is read from /proc.
"""

from __future__ import annotations

import gc
import tempfile
from pathlib import Path
from typing import Any

from tests.benchmarks.ami_source import wait_until
from tests.benchmarks.ingest import bench_settings
from tests.benchmarks.report import Check, Figure, Section
from tests.benchmarks.streams import CALL_SCENARIOS, build_stream, wanted_frames
from tests.benchmarks.worker import Link, Worker, role

GOAL_MB = 150.0
# Calls build up at a rate pbxcrm keeps up with (figure 1), as on a PBX: a burst faster than
# ingest would measure the queued backlog's garbage, not the calls.
RATE = 50_000.0
SCENARIOS = CALL_SCENARIOS[:10]


def rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MB."""
    values: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


@role("memory_pbxcrm")
async def memory_pbxcrm(link: Link, args: dict[str, Any]) -> dict[str, Any]:
    from ari_app.app.service import Service

    tmp = Path(args["tmp"])
    settings = bench_settings(tmp, args["port"], "http://127.0.0.1:9/never-sent")
    service = Service(settings, send=False, settle_gc=True)
    wanted = int(args["wanted"]) + 1  # + the reconcile's CoreShowChannelsComplete
    await service.start()
    pipeline = service.pipeline
    assert pipeline is not None
    await wait_until(lambda: pipeline.events_seen >= wanted, timeout=600)
    await pipeline.drain()
    gc.collect()
    rss, peak = rss_mb()
    active = pipeline.tracker.active_calls
    await service.stop()
    return {"rss_mb": rss, "peak_mb": peak, "active_calls": active}


@role("memory_idle")
async def memory_idle(link: Link, args: dict[str, Any]) -> dict[str, Any]:
    """The same service connected to a PBX with no calls: the fixed part of the figure."""
    from ari_app.app.service import Service

    settings = bench_settings(Path(args["tmp"]), args["port"], "http://127.0.0.1:9/never-sent")
    service = Service(settings, send=False, settle_gc=True)
    await service.start()
    assert service.ami is not None
    await service.ami.wait_connected(30)
    pipeline = service.pipeline
    assert pipeline is not None
    await wait_until(lambda: pipeline.events_seen >= 1, timeout=30)  # reconciled
    gc.collect()
    rss, peak = rss_mb()
    await service.stop()
    return {"rss_mb": rss, "peak_mb": peak}


async def _measure(consumer: str, copies: int, wanted: int) -> dict[str, Any]:
    source = await Worker.start(
        "ami_source",
        copies=copies,
        interleave=copies,
        scenarios=list(SCENARIOS),
        open_calls_only=True,
        mode="paced",
        rate=RATE,
    )
    try:
        ready = await source.ready()
        with tempfile.TemporaryDirectory(prefix="pbxcrm-bench-") as tmp:
            worker = await Worker.start(consumer, port=ready["port"], tmp=tmp, wanted=wanted)
            try:
                result = await worker.result(timeout=600)
            finally:
                await worker.finish()
    finally:
        await source.finish()
    return result


async def run(quick: bool) -> Section:
    copies = 50 if quick else 1000
    calls = copies * len(SCENARIOS)
    stream = build_stream(copies, interleave=copies, scenarios=SCENARIOS, open_calls_only=True)
    wanted = wanted_frames(stream)
    section = Section(
        f"2. Memory: RSS of pbxcrm with {calls:,} calls in progress",
        notes=[
            f"{len(stream.frames):,} recorded events up to each call's first hangup frame,"
            f" streamed at {RATE:,.0f} events/s (a burst beyond ingest speed queues writes,"
            " and CPython keeps the freed memory: about 200 MB)"
        ],
    )
    loaded = await _measure("memory_pbxcrm", copies, wanted)
    idle = await _measure("memory_idle", 0, 0)
    per_call_kb = (loaded["rss_mb"] - idle["rss_mb"]) * 1024 / calls
    section.figures += [
        Figure(
            f"RSS with {calls:,} calls in progress",
            loaded["rss_mb"],
            "MB",
            goal=f"<= {GOAL_MB:.0f}",
            met=loaded["rss_mb"] <= GOAL_MB,
            key="rss_mb",
        ),
        Figure("peak RSS during the run", loaded["peak_mb"], "MB", key="peak_rss_mb"),
        Figure("RSS of the same process with no calls", idle["rss_mb"], "MB", key="idle_rss_mb"),
        Figure("memory per call in progress", per_call_kb, "KB", key="kb_per_call"),
    ]
    section.checks.append(
        Check(
            "every call is being tracked",
            loaded["active_calls"] == calls,
            f"{loaded['active_calls']:,} open (want {calls:,})",
        )
    )
    return section
