"""Figure 1: AMI ingest end to end, beside bare panoramisk and a minimal blank-line parser.

The same bytes (recorded calls replicated with unique ids, interleaved so that thousands of
calls are in progress at once) are streamed over loopback TCP by a load process to three
consumers, each in a fresh process:

- pbxcrm: the `Service` `pbxcrm run` starts (AMI client, frame filter, call tracker, SQLite
  store, outbox rows for one webhook CRM); done when every tracked frame is handled and its
  writes are committed. The store is then checked: every call complete, every step and every
  outbox row there exactly once.
- panoramisk: a bare `panoramisk.Manager` with a no-op handler for every event;
- minimal: split on blank lines, every frame's headers into a dict (the practical limit).

Time runs from the load process's first write (CLOCK_MONOTONIC is one clock for all
processes on Linux) to the consumer's last frame handled (and, for pbxcrm, committed).
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.benchmarks.ami_source import wait_until
from tests.benchmarks.report import Check, Figure, Section
from tests.benchmarks.streams import build_stream, expected_per_copy, wanted_frames
from tests.benchmarks.worker import Link, Worker, role

GOAL_EVENTS_PER_SECOND = 100_000
GOAL_VS_PANORAMISK = 1.5


def bench_settings(tmp: Path, pbx_port: int, crm_url: str, **extra: Any) -> Any:
    from ari_app.app.settings import Settings

    raw: dict[str, Any] = {
        "pbx": {
            "id": "bench",
            "ami": {
                "host": "127.0.0.1",
                "port": pbx_port,
                "username": "crm",
                "password": "crmsecret",
                "ping_interval_seconds": 60,
            },
        },
        "store": {"path": str(tmp / "pbxcrm.sqlite3")},
        "http": {"enabled": False},
        "agi": {"enabled": False, "survey_spool": str(tmp / "survey.jsonl")},
        "crm": [{"type": "webhook", "name": "hook", "url": crm_url}],
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return Settings.model_validate(raw)


def store_counts(path: Path) -> dict[str, Any]:
    with sqlite3.connect(path) as db:
        one = lambda sql: db.execute(sql).fetchone()[0]  # noqa: E731
        kinds = dict(db.execute("SELECT kind, COUNT(*) FROM call_events GROUP BY kind").fetchall())
        return {
            "calls": one("SELECT COUNT(*) FROM calls"),
            "open_calls": one("SELECT COUNT(*) FROM calls WHERE ended = 0"),
            "call_events": one("SELECT COUNT(*) FROM call_events"),
            "outbox_rows": one("SELECT COUNT(*) FROM outbox"),
            "completed_per_call_max": one(
                "SELECT COALESCE(MAX(n), 0) FROM (SELECT COUNT(*) AS n FROM call_events"
                " WHERE kind = 'completed' GROUP BY call_id)"
            ),
            "kinds": kinds,
        }


@role("ingest_pbxcrm")
async def ingest_pbxcrm(link: Link, args: dict[str, Any]) -> dict[str, Any]:
    from ari_app.app.service import Service

    tmp = Path(args["tmp"])
    settings = bench_settings(tmp, args["port"], "http://127.0.0.1:9/never-sent")
    service = Service(settings, send=False, settle_gc=True)
    # The reconcile after login feeds one CoreShowChannelsComplete through the pipeline too.
    wanted = int(args["wanted"]) + 1
    await service.start()
    pipeline = service.pipeline
    assert pipeline is not None
    await wait_until(lambda: pipeline.events_seen >= wanted, timeout=600, interval=0.002)
    handled_at = time.monotonic()
    await pipeline.drain()
    end = time.monotonic()
    write_errors = pipeline.write_errors
    active = pipeline.tracker.active_calls
    await service.stop()
    counts = store_counts(Path(settings.store.path))
    return {
        "end": end,
        "handled_at": handled_at,
        "events_seen": pipeline.events_seen,
        "write_errors": write_errors,
        "active_calls": active,
        **counts,
    }


@role("ingest_panoramisk")
async def ingest_panoramisk(link: Link, args: dict[str, Any]) -> dict[str, Any]:
    from panoramisk import Manager

    total = int(args["frames"])
    seen = 0
    done = asyncio.get_running_loop().create_future()

    def on_event(manager: Any, message: Any) -> None:
        nonlocal seen
        seen += 1
        if seen >= total and not done.done():
            done.set_result(time.monotonic())

    manager = Manager(
        host="127.0.0.1",
        port=args["port"],
        username="crm",
        secret="crmsecret",
        ping_delay=3600,
        ping_interval=3600,
    )
    manager.register_event("*", on_event)
    await manager.connect()
    end = await asyncio.wait_for(done, 600)
    manager.close()
    return {"end": end, "events_seen": seen}


class _MinimalReader(asyncio.Protocol):
    """Splits on blank lines and puts each frame's headers in a dict; nothing else."""

    def __init__(self, total: int, done: asyncio.Future[float]) -> None:
        self.total = total
        self.done = done
        self.seen = 0
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(b"Action: Login\r\nUsername: crm\r\nSecret: crmsecret\r\n\r\n")

    def data_received(self, data: bytes) -> None:
        parts = (self.buf + data).split(b"\r\n\r\n")
        self.buf = parts.pop()
        for part in parts:
            if part[:7] != b"Event: ":
                continue  # banner + login response
            dict(line.split(": ", 1) for line in part.decode().split("\r\n"))
            self.seen += 1
        if self.seen >= self.total and not self.done.done():
            self.done.set_result(time.monotonic())


@role("ingest_minimal")
async def ingest_minimal(link: Link, args: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[float] = loop.create_future()
    reader = _MinimalReader(int(args["frames"]), done)
    transport, _ = await loop.create_connection(lambda: reader, "127.0.0.1", args["port"])
    end = await asyncio.wait_for(done, 600)
    transport.close()
    return {"end": end, "events_seen": reader.seen}


async def _one_consumer(
    consumer: str, source_args: dict[str, Any], consumer_args: dict[str, Any]
) -> tuple[float, dict[str, Any]]:
    source = await Worker.start("ami_source", **source_args)
    try:
        ready = await source.ready()
        worker = await Worker.start(
            consumer, port=ready["port"], frames=ready["frames"], **consumer_args
        )
        try:
            result = await worker.result(timeout=600)
        finally:
            await worker.finish()
        source.send(cmd="stop")
        source_result = await source.result()
    finally:
        await source.finish()
    return result["end"] - source_result["started_at"], result


async def run(quick: bool) -> Section:
    copies, interleave = (8, 8) if quick else (300, 200)
    stream = build_stream(copies, interleave=interleave)
    frames = len(stream.frames)
    wanted = wanted_frames(stream)
    expected = expected_per_copy()
    source_args = {"copies": copies, "interleave": interleave}
    section = Section(
        "1. AMI ingest, end to end (loopback TCP -> parse -> track -> store -> outbox rows)",
        notes=[
            f"{frames:,} recorded events ({copies} copies of {expected.calls}"
            f" calls, {interleave * expected.calls:,} calls in progress at once),"
            f" {stream.bytes_per_event:.0f} bytes and {stream.headers_per_event:.1f} headers"
            f" an event; {wanted:,} frames ({wanted / frames:.0%}) matter to the tracker",
        ],
    )
    with tempfile.TemporaryDirectory(prefix="pbxcrm-bench-") as tmp:
        seconds, result = await _one_consumer(
            "ingest_pbxcrm", source_args, {"tmp": tmp, "wanted": wanted}
        )
    minimal_s, _ = await _one_consumer("ingest_minimal", source_args, {})
    panoramisk_s, _ = await _one_consumer("ingest_panoramisk", source_args, {})
    rate, bare, limit = frames / seconds, frames / panoramisk_s, frames / minimal_s
    section.figures += [
        Figure(
            "pbxcrm end to end",
            rate,
            "events/s",
            goal=f">= {GOAL_EVENTS_PER_SECOND:,}",
            met=rate >= GOAL_EVENTS_PER_SECOND,
            key="ingest_events_per_s",
        ),
        Figure(
            "bare panoramisk Manager, no-op handler",
            bare,
            "events/s",
            key="panoramisk_events_per_s",
        ),
        Figure(
            "minimal blank-line parser (practical limit)",
            limit,
            "events/s",
            key="minimal_parser_events_per_s",
        ),
        Figure(
            "pbxcrm / bare panoramisk",
            rate / bare,
            "x",
            goal=f">= {GOAL_VS_PANORAMISK}",
            met=rate / bare >= GOAL_VS_PANORAMISK,
            key="ingest_vs_panoramisk",
        ),
        Figure("pbxcrm / minimal parser", rate / limit, "x", key="ingest_vs_minimal"),
    ]
    want_events = copies * expected.call_events
    want_calls = copies * expected.calls
    section.checks += [
        Check(
            "every call stored and complete",
            result["calls"] == want_calls
            and result["open_calls"] == 0
            and result["active_calls"] == 0,
            f"{result['calls']:,} calls (want {want_calls:,}), {result['open_calls']} open",
        ),
        Check(
            "every call step stored exactly once",
            result["call_events"] == want_events
            and result["completed_per_call_max"] == 1
            and result["kinds"] == {k: v * copies for k, v in expected.kinds.items()},
            f"{result['call_events']:,} steps (want {want_events:,})",
        ),
        Check(
            "every step has its outbox row",
            result["outbox_rows"] == want_events,
            f"{result['outbox_rows']:,} rows (want {want_events:,})",
        ),
        Check(
            "no store write failed", result["write_errors"] == 0, f"{result['write_errors']} failed"
        ),
    ]
    return section
