"""Figure 5: the outbox draining a backlog into a local CRM that answers in 20 ms.

The backlog is built while no CRM is reachable (the outbox not running): calls of four steps
each (ringing, answered, hangup, completed) recorded through `Store.record`, one outbox row per
step for one webhook CRM. Then the outbox starts, exactly as `pbxcrm run` starts it, with the
HTTP session `Service` gives adapters, and the clock runs until every row is done. The CRM
process counts every Idempotency-Key: each must arrive exactly once.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.benchmarks.report import Check, Figure, Section
from tests.benchmarks.worker import Link, Worker, deployed_logging, role

GOAL_PER_S = 5000.0
GOAL_DRAIN_S = 30.0
CRM_DELAY_MS = 20.0
CONCURRENCY = 256  # [[crm]] concurrency: in flight at once for this CRM (the maximum allowed)


def _calls(n: int, pbx_id: str) -> list[tuple[Any, list[Any]]]:
    from crm.model import Call, CallEvent, Direction, Disposition, EventKind, Party

    start = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    out = []
    kinds = (EventKind.RINGING, EventKind.ANSWERED, EventKind.HANGUP, EventKind.COMPLETED)
    for i in range(n):
        begin = start + timedelta(seconds=i)
        call = Call(
            call_id=f"1795417965.{i}",
            pbx_id=pbx_id,
            direction=Direction.INBOUND,
            caller_number="+79031234567",
            called_number="4951112233",
            agent_extension="7181",
            rang_extensions=["7181"],
            start_time=begin,
            answer_time=begin + timedelta(seconds=1.5),
            end_time=begin + timedelta(seconds=7.5),
            ring_seconds=1.5,
            talk_seconds=6.0,
            disposition=Disposition.ANSWERED,
            terminating_party=Party.CALLER,
            hangup_cause=16,
            hangup_cause_text="Normal Clearing",
            ended=True,
        )
        events = [
            CallEvent(
                call_id=call.call_id, seq=seq, kind=kind, at=begin, call=call, extension="7181"
            )
            for seq, kind in enumerate(kinds, start=1)
        ]
        out.append((call, events))
    return out


@role("outbox_pbxcrm")
async def outbox_pbxcrm(link: Link, args: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    from ari_app.app.service import Service
    from crm import metrics
    from crm.dialects.registry import build_adapter
    from crm.store.sqlite import Store
    from tests.benchmarks.ami_source import AmiLoadServer
    from tests.benchmarks.ingest import bench_settings
    from tests.benchmarks.streams import build_stream

    deployed_logging()
    pbx = AmiLoadServer(build_stream(0))  # a PBX with no calls: pbxcrm run needs one
    await pbx.start()
    settings = bench_settings(
        Path(args["tmp"]),
        pbx.port,
        args["crm_url"],
        crm=[
            {"type": "webhook", "name": "hook", "url": args["crm_url"], "concurrency": CONCURRENCY}
        ],
    )
    # The backlog: recorded while no CRM was reachable (pbxcrm not delivering).
    store = await Store.open(settings.store)
    async with aiohttp.ClientSession() as http:
        adapters = [build_adapter(config, http) for config in settings.crm]
        futures = [
            store.submit_record(call, events, adapters)
            for call, events in _calls(int(args["rows"]) // 4, settings.pbx.id)
        ]
        await asyncio.gather(*futures)
    rows = await store.reader.execute_fetchall(
        "SELECT COUNT(*) FROM outbox WHERE state = 'pending'"
    )
    pending = int(next(iter(rows))[0])
    await store.close()
    link.send(ready={})

    def delivered() -> float:
        labels = {"adapter": "hook", "outcome": "delivered"}
        return metrics.REGISTRY.get_sample_value("pbxcrm_deliveries_total", labels) or 0.0

    # The CRM is back: pbxcrm starts as `pbxcrm run` does and drains the backlog.
    service = Service(settings, settle_gc=True)
    started, cpu_started = time.monotonic(), time.process_time()
    await service.start()
    async with asyncio.timeout(600):
        while delivered() < pending:
            await asyncio.sleep(0.02)  # polls an in-memory counter for the condition
    seconds = time.monotonic() - started
    cpu = time.process_time() - cpu_started
    assert service.store is not None
    await asyncio.sleep(0.2)  # let the last outcomes commit
    counts = dict(
        await service.store.reader.execute_fetchall(
            "SELECT state, COUNT(*) FROM outbox GROUP BY state"
        )
    )
    await service.stop()
    await pbx.stop()
    return {
        "rows": pending,
        "seconds": seconds,
        "cpu_us_per_delivery": cpu / max(1, pending) * 1e6,
        "dead": counts.get("dead", 0),
        "done": counts.get("done", 0),
    }


async def run(quick: bool) -> Section:
    rows = 4_000 if quick else 100_000
    section = Section(
        f"5. Outbox: a backlog of {rows:,} deliveries to a local CRM answering in"
        f" {CRM_DELAY_MS:.0f} ms",
        notes=[f"webhook CRM with concurrency = {CONCURRENCY}; backlog built with the CRM down"],
    )
    crm = await Worker.start("crm_sink", delay_ms=CRM_DELAY_MS)
    try:
        crm_url = (await crm.ready())["url"]
        with tempfile.TemporaryDirectory(prefix="pbxcrm-bench-") as tmp:
            worker = await Worker.start("outbox_pbxcrm", tmp=tmp, crm_url=crm_url, rows=rows)
            try:
                await worker.ready(timeout=300)
                result = await worker.result(timeout=600)
            finally:
                await worker.finish()
        crm.send(cmd="stop")
        received = await crm.result()
    finally:
        await crm.finish()
    per_s = result["rows"] / result["seconds"]
    section.figures += [
        Figure(
            "deliveries/s while draining",
            per_s,
            "deliveries/s",
            goal=f">= {GOAL_PER_S:,.0f}",
            met=per_s >= GOAL_PER_S,
            key="outbox_deliveries_per_s",
        ),
        Figure(
            f"time to drain {rows:,} deliveries",
            result["seconds"],
            "s",
            goal=f"<= {GOAL_DRAIN_S:.0f} s" if not quick else "",
            met=result["seconds"] <= GOAL_DRAIN_S if not quick else None,
            key="outbox_drain_seconds",
        ),
    ]
    section.figures.append(
        Figure(
            "pbxcrm CPU per delivery (all its threads)",
            result["cpu_us_per_delivery"],
            "us",
            key="outbox_cpu_us_per_delivery",
        )
    )
    section.checks += [
        Check(
            "no delivery lost",
            received["distinct"] == rows and result["dead"] == 0,
            f"{received['distinct']:,} distinct keys received (want {rows:,}),"
            f" {result['dead']} dead",
        ),
        Check(
            "no delivery duplicated",
            received["duplicates"] == 0,
            f"{received['duplicates']} duplicates",
        ),
    ]
    return section
