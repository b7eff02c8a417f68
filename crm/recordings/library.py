"""Where each recording's file is, converting it off the event loop when it is asked for.

The CRM's link is sent first and the file is served when ready: the `completed` step never
waits for a conversion. A call's recording is queued for conversion once its `completed`
step is stored; a download or an upload of a file still being converted waits for that
conversion (`ready`), and one never queued (pbxcrm was restarted meanwhile) is converted
then. A conversion that failed leaves `<name>.error` beside where the file would be, so the
reason survives restarts and shows in `pbxcrm recordings list`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from crm.model import CallEvent, EventKind
from crm.recordings.audio import convert_to_mp3, quick_problem
from crm.recordings.errors import RecordingError, RecordingNotReady
from crm.recordings.names import SOURCE_SUFFIXES, served_name
from crm.recordings.settings import RecordingsSettings

log = logging.getLogger("pbxcrm.recordings")

ERROR_SUFFIX = ".error"
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,254}$")


def relative_parts(name: str) -> list[str] | None:
    """The path segments of a recording name, or None when it could leave its folder."""
    segments = name.split("/")
    if not name or any(not _SEGMENT.fullmatch(s) or ".." in s for s in segments):
        return None
    return segments


class RecordingLibrary:
    def __init__(self, settings: RecordingsSettings, source_dir: str | Path) -> None:
        self.settings = settings
        self.source_dir = Path(source_dir)  # where MixMonitor writes ([calls] recording_dir)
        self.folder = Path(settings.folder) if settings.folder else self.source_dir
        self.served_format = "mp3" if settings.format == "mp3" else ""
        self._jobs: dict[str, asyncio.Task[Path]] = {}
        # One worker: a conversion is short, and the 2-core boxes this runs on also carry
        # Asterisk; calls ending together queue rather than take every core.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pbxcrm-mp3")
        self.converted = 0
        self.failed = 0
        self.audio_seconds = 0.0

    # -- names ----------------------------------------------------------------------------

    def served_name(self, original: str) -> str:
        return served_name(original, self.served_format)

    def converts(self, served: str) -> bool:
        return bool(self.served_format) and served.lower().endswith(f".{self.served_format}")

    def source_path(self, original: str) -> Path:
        return self.source_dir.joinpath(*(relative_parts(original) or ["-"]))

    def served_path(self, served: str) -> Path:
        root = self.folder if self.converts(served) else self.source_dir
        return root.joinpath(*(relative_parts(served) or ["-"]))

    def error_path(self, served: str) -> Path:
        path = self.served_path(served)
        return path.with_name(path.name + ERROR_SUFFIX)

    def source_of(self, served: str) -> Path | None:
        """The MixMonitor file a served name comes from, if it is on disk."""
        parts = relative_parts(served)
        if parts is None:
            return None
        if not self.converts(served):
            path = self.source_dir.joinpath(*parts)
            return path if path.is_file() else None
        stem = parts[-1].rsplit(".", 1)[0]
        folder = self.source_dir.joinpath(*parts[:-1])
        for suffix in SOURCE_SUFFIXES:
            candidate = folder / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
        return None

    # -- the pipeline's hooks -------------------------------------------------------------

    def check_completed(self, events: list[CallEvent]) -> list[CallEvent]:
        """Before the final record is stored: a recording whose file is missing or empty gets
        no link, and the record says why (one stat per recorded call, cheap on the loop)."""
        checked = []
        for event in events:
            call = event.call
            if (
                event.kind is EventKind.COMPLETED
                and call.recording_file
                and (call.recording_error is None)
            ):
                problem = self._problem_with(call.recording_file)
                if problem is not None:
                    log.warning(
                        "call %s: %s; the CRM gets no recording link", call.call_id, problem
                    )
                    call = call.model_copy(
                        update={"recording_url": None, "recording_error": problem}
                    )
                    event = event.model_copy(update={"call": call})
            checked.append(event)
        return checked

    def _problem_with(self, original: str) -> str | None:
        if relative_parts(original) is None:
            return (
                f"recording {original!r} has a file name pbxcrm does not serve (letters,"
                " digits and . _ + - only)"
            )
        return quick_problem(self.source_path(original))

    def on_call_event(self, event: CallEvent) -> None:
        """Once a call's final record is stored, its recording is queued for conversion."""
        call = event.call
        if event.kind is not EventKind.COMPLETED or not call.recording_file:
            return
        if call.recording_error is not None:
            return
        served = self.served_name(call.recording_file)
        if self.converts(served):
            self._schedule(served, self.settings.settle_seconds)

    # -- files ----------------------------------------------------------------------------

    async def ready(self, served: str, wait: float | None = None) -> Path:
        """The file `served` names, converting it first if needed.

        Raises RecordingError (missing, broken, conversion failed: the reason is in the
        message) or RecordingNotReady (still converting after `wait`, by default
        `ready_wait_seconds`).
        """
        wait = self.settings.ready_wait_seconds if wait is None else wait
        if relative_parts(served) is None:
            raise RecordingError(f"{served!r} is not a recording name")
        if not self.converts(served):
            path = self.served_path(served)
            problem = quick_problem(path)
            if problem is not None:
                raise RecordingError(problem)
            return path
        target = self.served_path(served)
        if target.is_file():
            return target
        job = self._jobs.get(served)
        if job is None:
            failure = self.failure(served)
            if failure is not None:
                raise RecordingError(failure)
            job = self._schedule(served, 0.0)
        try:
            async with asyncio.timeout(wait):
                return await asyncio.shield(job)
        except TimeoutError:
            raise RecordingNotReady(
                f"recording {served} is still being converted after {wait:g}s"
            ) from None

    def failure(self, served: str) -> str | None:
        """Why the conversion of `served` failed, if it did."""
        try:
            return self.error_path(served).read_text(encoding="utf-8").strip() or "failed"
        except OSError:
            return None

    def pending(self) -> Iterable[str]:
        return list(self._jobs)

    def _schedule(self, served: str, delay: float) -> asyncio.Task[Path]:
        job = self._jobs.get(served)
        if job is None:
            job = asyncio.get_running_loop().create_task(self._convert(served, delay))
            self._jobs[served] = job
            job.add_done_callback(lambda done: self._finished(served, done))
        return job

    def _finished(self, served: str, job: asyncio.Task[Path]) -> None:
        if self._jobs.get(served) is job:
            del self._jobs[served]
        if not job.cancelled():
            job.exception()  # retrieved here: a queued job nobody awaits may still fail

    async def _convert(self, served: str, delay: float) -> Path:
        if delay:
            await asyncio.sleep(delay)
        target = self.served_path(served)
        try:
            source = self.source_of(served)
            if source is None:
                raise RecordingError(
                    f"recording {served}: no MixMonitor file of that name in {self.source_dir}"
                )
            loop = asyncio.get_running_loop()
            seconds = await loop.run_in_executor(
                self._executor, convert_to_mp3, source, target, self.settings.bitrate_kbps
            )
        except RecordingError as exc:
            self.failed += 1
            log.error("recording %s not converted: %s", served, exc)
            with contextlib.suppress(OSError):
                error_path = self.error_path(served)
                error_path.parent.mkdir(parents=True, exist_ok=True)
                error_path.write_text(f"{exc}\n", encoding="utf-8")
            raise
        self.converted += 1
        self.audio_seconds += seconds
        log.info("recording %s converted (%.1f s of audio)", served, seconds)
        return target

    async def close(self) -> None:
        """Wait for conversions already running (a half-written file is never served, but a
        finished one saves the next download from converting it again)."""
        jobs = list(self._jobs.values())
        for job in jobs:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(job), self.settings.ready_wait_seconds)
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)


def attach(adapters: Iterable[object], library: RecordingLibrary) -> None:
    """Hand the library to every adapter that sends recording files (declarative upload)."""
    for adapter in adapters:
        use = getattr(adapter, "use_recordings", None)
        if callable(use):
            use(library)
