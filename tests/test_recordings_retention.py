"""Keeping recordings for `keep_days`: what the sweep deletes, and what it must not.

The store is a real SQLite file: a call whose delivery is still pending in its outbox keeps
its recording however old; `pbxcrm recordings list|purge` is run as the command line runs it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from crm.model import EventKind
from crm.recordings.library import RecordingLibrary
from crm.recordings.retention import list_files, sweep
from crm.recordings.settings import RecordingsSettings
from crm.store.settings import StoreSettings
from crm.store.sqlite import Store
from tests.test_store_support import make_adapter, make_call, make_event

DAY = 86400.0
NOW = time.time()


def write(path: Path, age_days: float, content: bytes = b"RIFF" + b"\x00" * 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    moment = NOW - age_days * DAY
    os.utime(path, (moment, moment))
    return path


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(StoreSettings(path=str(tmp_path / "pbxcrm.sqlite3")))
    yield store
    await store.close()


async def owe_a_delivery(store: Store, call_id: str, recording: str) -> None:
    """A completed call whose delivery the CRM has not taken yet (no outbox runs here)."""
    call = make_call(call_id, recording_file=recording, ended=True)
    async with aiohttp.ClientSession() as http:
        adapter = make_adapter(http, "http://127.0.0.1:9/never")
        await store.record(call, [make_event(call, 1, EventKind.COMPLETED)], [adapter])


async def delivered(store: Store, call_id: str, recording: str) -> None:
    call = make_call(call_id, recording_file=recording, ended=True)
    await store.record(call, [make_event(call, 1, EventKind.COMPLETED)], [])


def library(tmp_path: Path, **settings: object) -> RecordingLibrary:
    return RecordingLibrary(
        RecordingsSettings(format="mp3", folder=str(tmp_path / "converted"), **settings),
        tmp_path / "monitor",
    )


@pytest.fixture
def files(tmp_path: Path) -> Path:
    monitor, converted = tmp_path / "monitor", tmp_path / "converted"
    write(monitor / "1795400000.1.wav", 30)  # old, delivered
    write(converted / "1795400000.1.mp3", 30)
    write(monitor / "1795400000.2.wav", 30)  # old, but the CRM has not taken its call yet
    write(converted / "1795400000.2.mp3", 30)
    write(monitor / "1795400000.3.wav", 30)  # old, its conversion failed
    write(converted / "1795400000.3.mp3.error", 30, b"recording 1795400000.3.wav is GSM\n")
    write(monitor / "1795490000.4.wav", 1)  # yesterday's
    write(converted / "1795490000.4.mp3", 1)
    write(monitor / "2026" / "11" / "1795400000.5.wav", 30)  # a dated sub-folder
    write(monitor / "voicemail-greeting.txt", 400, b"not a recording")
    return tmp_path


async def test_old_recordings_go_but_not_one_a_pending_delivery_points_at(files, store):
    await delivered(store, "1795400000.1", "1795400000.1.wav")
    await owe_a_delivery(store, "1795400000.2", "1795400000.2.wav")
    lib = library(files, keep_days=7)

    report = await sweep(lib, store, NOW)

    assert sorted(report.deleted) == [
        "1795400000.1.mp3",
        "1795400000.1.wav",
        "1795400000.3.mp3.error",
        "1795400000.3.wav",
        "2026/11/1795400000.5.wav",
    ]
    assert sorted(report.kept_pending) == ["1795400000.2.mp3", "1795400000.2.wav"]
    left = sorted(p.relative_to(files).as_posix() for p in files.rglob("*") if p.is_file())
    assert left == [
        "converted/1795400000.2.mp3",
        "converted/1795490000.4.mp3",
        "monitor/1795400000.2.wav",
        "monitor/1795490000.4.wav",
        "monitor/voicemail-greeting.txt",
        "pbxcrm.sqlite3",
        *[name for name in left if name.startswith("pbxcrm.sqlite3-")],
    ]


async def test_keep_original_false_deletes_only_converted_originals(files, store):
    await owe_a_delivery(store, "1795400000.2", "1795400000.2.wav")
    lib = library(files, keep_days=0, keep_original=False)

    report = await sweep(lib, store, NOW)

    # Converted and not owed: the original goes, the MP3 stays (keep_days = 0: forever).
    assert sorted(report.deleted) == ["1795400000.1.wav", "1795490000.4.wav"]
    assert report.kept_pending == ["1795400000.2.wav"]
    assert (files / "converted" / "1795400000.1.mp3").exists()
    assert (files / "monitor" / "1795400000.3.wav").exists()  # never converted: kept


async def test_keep_days_zero_keeps_everything(files, store):
    report = await sweep(library(files), store, NOW)
    assert report.deleted == [] and report.kept_pending == []


async def test_the_list_says_what_each_file_is_and_what_still_needs_it(files, store):
    await owe_a_delivery(store, "1795400000.2", "1795400000.2.wav")
    rows = {row["name"]: row for row in await list_files(library(files), store)}

    assert "voicemail-greeting.txt" not in rows
    assert rows["1795400000.2.wav"]["delivery_pending"] is True
    assert rows["1795400000.2.wav"]["converted"] is True
    assert rows["1795400000.1.wav"]["delivery_pending"] is False
    assert rows["1795400000.3.wav"]["converted"] is False
    assert rows["1795400000.3.wav"]["conversion_error"] == "recording 1795400000.3.wav is GSM"
    assert rows["1795490000.4.mp3"]["kind"] == "converted"
    assert rows["1795400000.2.mp3"]["bytes"] == 104


def config(tmp_path: Path, keep_days: float) -> Path:
    path = tmp_path / "pbxcrm.toml"
    path.write_text(
        f"""
[calls]
recording_dir = "{tmp_path / "monitor"}"

[store]
path = "{tmp_path / "pbxcrm.sqlite3"}"

[recordings]
format = "mp3"
folder = "{tmp_path / "converted"}"
keep_days = {keep_days}
""",
        encoding="utf-8",
    )
    return path


async def test_the_command_line_lists_and_purges(files, store):
    await owe_a_delivery(store, "1795400000.2", "1795400000.2.wav")
    path = str(config(files, 0))

    # keep_days = 0 and no --older-than-days: refuses instead of deleting everything.
    code, _, err = await pbxcrm("recordings", "purge", "--config", path)
    assert code == 2 and "keeps recordings forever" in err

    code, out, err = await pbxcrm("recordings", "list", "--config", path)
    assert code == 0 and err.strip().endswith("9 file(s)")
    listed = [json.loads(line) for line in out.splitlines()]
    assert {row["name"] for row in listed} >= {"1795400000.2.wav", "2026/11/1795400000.5.wav"}

    code, out, _ = await pbxcrm("recordings", "purge", "--config", path, "--older-than-days", "7")
    assert code == 0
    assert "kept (delivery pending): 1795400000.2.wav" in out
    assert out.strip().endswith("5 file(s) deleted")
    assert not (files / "monitor" / "1795400000.1.wav").exists()
    assert (files / "monitor" / "1795400000.2.wav").exists()


async def pbxcrm(*args: str) -> tuple[int, str, str]:
    """The command as an admin runs it (its own process: it sets up its own logging)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ari_app.app.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()
