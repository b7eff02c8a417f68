"""Shared pieces of the fault suite (no tests here): flags, a slow two-route CRM, checks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from tests.fakes.crm_server import FakeCrm

# The long versions run behind these flags (docs/reliability.md); CI runs the short ones.
SOAK = os.environ.get("PBXCRM_SOAK") == "1"
FUZZ_FULL = os.environ.get("PBXCRM_FUZZ_FULL") == "1"

AMI_PASSWORD = "crmsecret-faults-0001"
WEBHOOK_TOKEN = "hook-token-faults-0123456789"


def rss_bytes(pid: int | str = "self") -> int:
    """Resident memory of a process (this one by default), from /proc."""
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def sized(ci: int, full: int, *, flag: bool = FUZZ_FULL) -> int:
    """`full` when the long run is asked for, else `ci`."""
    return full if flag else ci


class SlowCrm(FakeCrm):
    """Every POST under /hook/<name> is accepted after a random delay (a slow CRM)."""

    def __init__(self, max_delay: float = 0.03, seed: int = 0) -> None:
        self.max_delay = max_delay
        self._rand = random.Random(seed)
        super().__init__()

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/hook/{name}", self._event)

    async def _event(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self._rand.random() * self.max_delay)
        return web.json_response({"ok": True})

    def events(self, name: str) -> list[dict]:
        return [r.json() for r in self.requests if r.path == f"/hook/{name}"]


async def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


def query(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError:
            return []  # not migrated yet


@dataclass
class Delivered:
    """What one CRM route received, as checked against the outbox rows that were due to it."""

    keys: int  # distinct idempotency keys
    requests: int  # requests, redeliveries included
    calls: int


def check_exactly_once_in_order(
    events: list[dict], expected_keys: set[str], *, complete: bool = True
) -> Delivered:
    """Every expected key arrived (first arrivals counted once), nothing else arrived, each
    call's first arrivals are seq 1..n without gaps, and (complete) each call ends with
    `completed`."""
    first: dict[str, list[tuple[int, str]]] = defaultdict(list)
    seen: set[str] = set()
    for event in events:
        key = event["idempotency_key"]
        if key in seen:
            continue  # a redelivery with the same key: the CRM drops it
        seen.add(key)
        first[event["call_id"]].append((event["seq"], event["kind"]))
    missing = expected_keys - seen
    extra = seen - expected_keys
    assert not missing, f"{len(missing)} deliveries never arrived, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{len(extra)} deliveries nobody recorded, e.g. {sorted(extra)[:3]}"
    for call_id, steps in first.items():
        seqs = [seq for seq, _ in steps]
        assert seqs == list(range(1, len(seqs) + 1)), f"call {call_id}: seqs {seqs}"
        if complete:
            kinds = [kind for _, kind in steps]
            assert kinds[-1] == "completed", f"call {call_id} never completed: {kinds}"
            assert kinds.count("completed") == 1, f"call {call_id}: {kinds}"
    return Delivered(keys=len(seen), requests=len(events), calls=len(first))
