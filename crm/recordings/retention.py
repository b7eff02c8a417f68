"""Keeping recordings for a set time: the sweep, and `pbxcrm recordings list|purge`.

A file is deleted when it is older than `keep_days` (by its modification time: MixMonitor
writes it during the call, pbxcrm converts it just after), and a MixMonitor original also
once it is converted when `keep_original = false`. Never deleted: a file a delivery still
owed to a CRM points at (a pending outbox row of its call: its link, or its upload), and a
file being converted. Safe beside a running `pbxcrm run` on the same store: the pending rows
are read from the store at each sweep.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crm.recordings.library import ERROR_SUFFIX, RecordingLibrary
from crm.recordings.names import SOURCE_SUFFIXES
from crm.store.interface import CallStore

log = logging.getLogger("pbxcrm.recordings")

DAY = 86400.0
# What the sweep may delete: recordings and pbxcrm's own `.error` notes, nothing else that
# happens to share the folder.
_AUDIO = frozenset({*SOURCE_SUFFIXES, ".mp3", ".WAV", ".gsm", ".ulaw", ".alaw", ".g722"})
_PINNED_SQL = (
    "SELECT DISTINCT c.recording_file FROM outbox o"
    " JOIN calls c ON c.pbx_id = o.pbx_id AND c.call_id = o.call_id"
    " WHERE o.state = 'pending' AND c.recording_file IS NOT NULL"
)


@dataclass(slots=True)
class StoredFile:
    name: str  # relative to its folder, with `/`
    path: Path
    kind: str  # original | converted | error
    size: int
    modified: float


@dataclass(slots=True)
class SweepReport:
    deleted: list[str] = field(default_factory=list)
    kept_pending: list[str] = field(default_factory=list)  # old enough, but still owed
    failed: list[str] = field(default_factory=list)  # could not delete (permissions)


def scan(library: RecordingLibrary) -> list[StoredFile]:
    """Every recording file (and `.error` note) in the MixMonitor and converted folders."""
    files: dict[Path, StoredFile] = {}
    for root in dict.fromkeys((library.source_dir, library.folder)):
        if not root.is_dir():
            continue
        for folder, _, names in os.walk(root):
            for name in names:
                path = Path(folder, name)
                kind = _kind(library, root, name)
                if kind is None or name.startswith(".") or path in files:
                    continue
                if root != library.folder and path.is_relative_to(library.folder):
                    continue  # a converted folder inside the MixMonitor one: listed from there
                try:
                    stat = path.stat()
                except OSError:
                    continue  # deleted meanwhile
                relative = path.relative_to(root).as_posix()
                files[path] = StoredFile(relative, path, kind, stat.st_size, stat.st_mtime)
    return sorted(files.values(), key=lambda f: (f.modified, f.name))


def _kind(library: RecordingLibrary, root: Path, name: str) -> str | None:
    if name.endswith(ERROR_SUFFIX):
        return "error"
    suffix = Path(name).suffix
    if suffix not in _AUDIO:
        return None
    if library.served_format and suffix == f".{library.served_format}" and (root == library.folder):
        return "converted"
    return "original"


async def pending_names(library: RecordingLibrary, store: CallStore) -> set[str]:
    """The names (original and served) of recordings whose call still has a delivery owed."""
    rows = await store.reader.execute_fetchall(_PINNED_SQL)
    names: set[str] = set()
    for (original,) in rows:
        names.add(original)
        served = library.served_name(original)
        names.update((served, served + ERROR_SUFFIX))
    return names


def _owner(stored: StoredFile) -> str:
    """The recording a file belongs to (an `.error` note belongs to its would-be file)."""
    return stored.name.removesuffix(ERROR_SUFFIX) if stored.kind == "error" else stored.name


async def sweep(
    library: RecordingLibrary, store: CallStore, now: float, keep_days: float | None = None
) -> SweepReport:
    keep = library.settings.keep_days if keep_days is None else keep_days
    pending = await pending_names(library, store)
    converting = set(library.pending())
    # A spool of many thousand files takes a while to walk: not on the event loop.
    report = await asyncio.to_thread(_delete_expired, library, now, keep, pending, converting)
    if report.deleted or report.kept_pending:
        log.info(
            "recordings sweep: %d file(s) deleted, %d kept for deliveries still owed",
            len(report.deleted),
            len(report.kept_pending),
        )
    return report


def _delete_expired(
    library: RecordingLibrary, now: float, keep: float, pending: set[str], converting: set[str]
) -> SweepReport:
    report = SweepReport()
    for stored in scan(library):
        owner = _owner(stored)
        expired = keep > 0 and now - stored.modified > keep * DAY
        superseded = (
            stored.kind == "original"
            and not library.settings.keep_original
            and library.served_path(library.served_name(owner)).is_file()
            and library.served_name(owner) != owner
        )
        if not (expired or superseded):
            continue
        if owner in pending or library.served_name(owner) in converting:
            report.kept_pending.append(stored.name)
            continue
        try:
            stored.path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            report.failed.append(stored.name)
            log.error("recording %s not deleted: %s", stored.path, exc.strerror)
            continue
        report.deleted.append(stored.name)
    return report


async def list_files(library: RecordingLibrary, store: CallStore) -> list[dict[str, Any]]:
    """Oldest first, as `pbxcrm recordings list` prints them."""
    pending = await pending_names(library, store)
    rows = []
    for stored in scan(library):
        owner = _owner(stored)
        row: dict[str, Any] = {
            "name": stored.name,
            "kind": stored.kind,
            "bytes": stored.size,
            "modified": datetime.fromtimestamp(stored.modified, UTC).isoformat(timespec="seconds"),
            "delivery_pending": owner in pending,
        }
        if stored.kind == "original" and library.served_name(owner) != owner:
            served = library.served_name(owner)
            row["converted"] = library.served_path(served).is_file()
            row["conversion_error"] = library.failure(served)
        if stored.kind == "error":
            row["conversion_error"] = library.failure(owner)
        rows.append(row)
    return rows
