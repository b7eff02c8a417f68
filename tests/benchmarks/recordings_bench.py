"""Recordings: what MP3 conversion costs, and what it does to hang-up -> CRM latency.

Part 1 converts the espeak-ng speech fixture (MixMonitor's narrow-band `.wav`: 16-bit PCM,
mono, 8 kHz), looped to several minutes, as pbxcrm does (crm.recordings.audio, LAME through
lameenc, 32 kbit/s) and reads the CPU time of the process. Part 2 replays the recorded
MixMonitor call (`inbound_answered_recorded.ami`) as a burst of calls ending together, each
with its own recording of a few minutes, through `pbxcrm run`'s Service twice: with
`[recordings] format = "wav"` and with `"mp3"` plus a block that uploads the MP3. Latency is
from the call's last AMI Hangup frame reaching the pipeline to the CRM request arriving (one
process, one clock). Checked: every call's `completed` arrives with its link, every upload is
an MP3 of the recording's length.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.benchmarks.ingest import bench_settings
from tests.benchmarks.report import Check, Figure, Section, percentile
from tests.fakes.crm_files import read_mp3

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SPEECH = FIXTURES / "audio" / "speech_8k_mono.wav"
CALL = FIXTURES / "asterisk" / "ami" / "inbound_answered_recorded.ami"
RECORDED_NAME = b"1795418967.2.wav"
BITRATE = 32
GOAL_CPU_PER_MINUTE = 1.0  # one core converts a minute of audio in at most a second


def looped_wav(path: Path, minutes: float) -> float:
    """The speech fixture repeated to `minutes` of audio, as one WAV; returns its seconds."""
    with wave.open(str(SPEECH), "rb") as source:
        params = source.getparams()
        frames = source.readframes(source.getnframes())
    per_second = params.framerate * params.sampwidth * params.nchannels
    repeats = max(1, round(minutes * 60 * per_second / len(frames)))
    with wave.open(str(path), "wb") as target:
        target.setparams(params)
        target.writeframes(frames * repeats)
    return len(frames) * repeats / per_second


def conversion_cost(tmp: Path, minutes: float) -> tuple[list[Figure], list[Check], str]:
    from crm.recordings.audio import convert_to_mp3

    source = tmp / "long.wav"
    audio_seconds = looped_wav(source, minutes)
    target = tmp / "long.mp3"
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    converted = convert_to_mp3(source, target, BITRATE)
    cpu = time.process_time() - cpu_start
    wall = time.perf_counter() - wall_start
    per_minute = cpu / (audio_seconds / 60)
    stream = read_mp3(target.read_bytes())
    mp3_mb_per_minute = target.stat().st_size / (audio_seconds / 60) / 1e6
    wav_mb_per_minute = source.stat().st_size / (audio_seconds / 60) / 1e6
    figures = [
        Figure(
            "CPU seconds per minute of audio (8 kHz wav -> 32 kbit/s mp3)",
            per_minute,
            "s",
            goal=f"<= {GOAL_CPU_PER_MINUTE:.1f}",
            met=per_minute <= GOAL_CPU_PER_MINUTE,
            key="mp3_cpu_seconds_per_audio_minute",
        ),
        Figure(
            "speed (audio seconds per wall second)",
            audio_seconds / wall,
            "x realtime",
            key="mp3_speed",
        ),
        Figure("mp3 size per minute", mp3_mb_per_minute, "MB", key="mp3_mb_per_minute"),
        Figure("wav size per minute", wav_mb_per_minute, "MB", key="wav_mb_per_minute"),
    ]
    checks = [
        Check(
            "the mp3 holds all the audio",
            abs(stream.seconds - audio_seconds) < 0.5 and converted == audio_seconds,
            f"{stream.seconds:.1f} s of MP3 frames for {audio_seconds:.1f} s of wav",
        )
    ]
    return figures, checks, f"{audio_seconds / 60:.1f} min of speech converted in {wall:.2f} s"


def burst_stream(calls: int) -> bytes:
    """The recorded call `calls` times (own ids), each naming its own MixMonitor file."""
    from tests.fakes.ami_streams import replicate

    stream = replicate(CALL, calls)
    per_call = CALL.read_bytes().count(RECORDED_NAME)
    pieces = stream.split(RECORDED_NAME)
    out = [pieces[0]]
    for index, piece in enumerate(pieces[1:]):
        out.append(b"bench-%d.wav" % (index // per_call))
        out.append(piece)
    return b"".join(out)


class Sink:
    """The CRM: notes when each call's link record and each upload arrived."""

    def __init__(self) -> None:
        self.links: dict[str, tuple[float, str]] = {}
        self.uploads: dict[str, tuple[float, bytes]] = {}
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/calls", self._link)
        app.router.add_put("/upload/{call}", self._upload)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _link(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        body = await request.json()
        self.links.setdefault(body["call"], (arrived, body["recording"]))
        return web.json_response({"ok": True})

    async def _upload(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        body = await request.read()
        self.uploads.setdefault(request.match_info["call"], (arrived, body))
        return web.json_response({"ok": True})


def recordings_settings(tmp: Path, pbx_port: int, crm_url: str, fmt: str) -> Any:
    """The ingest benchmark's settings with recordings on and two declarative CRMs."""
    crm: list[dict[str, Any]] = [
        {
            "type": "declarative",
            "name": "links",
            "events": ["completed"],
            "requests": {
                "completed": {
                    "url": f"{crm_url}/calls",
                    "json_body": {"call": "{call_id}", "recording": "{recording_url}"},
                }
            },
        }
    ]
    if fmt == "mp3":
        crm.append(
            {
                "type": "declarative",
                "name": "files",
                "events": ["completed"],
                "requests": {
                    "completed": {
                        "method": "PUT",
                        "url": f"{crm_url}/upload/{{call_id}}",
                        "upload": {"mode": "raw"},
                    }
                },
            }
        )
    return bench_settings(
        tmp,
        pbx_port,
        crm_url,
        calls={
            "recording_dir": str(tmp / "monitor"),
            "recording_url_template": "https://pbx.example/rec/{file}",
        },
        recordings={
            "format": fmt,
            "bitrate_kbps": BITRATE,
            "settle_seconds": 0,
            "folder": str(tmp / "converted"),
            "ready_wait_seconds": 600,
        },
        outbox={"poll_interval_seconds": 0.05},
        crm=crm,
    )


async def burst(tmp: Path, fmt: str, calls: int, minutes: float) -> dict[str, Any]:
    from ari_app.app.service import Service
    from tests.fakes.ami_pbx import FakePbx

    monitor = tmp / "monitor"
    monitor.mkdir(parents=True)
    audio_seconds = looped_wav(tmp / "recording.wav", minutes)
    for index in range(calls):
        os.link(tmp / "recording.wav", monitor / f"bench-{index}.wav")
    sink = Sink()
    await sink.start()
    pbx = FakePbx(burst_stream(calls), await_actions=True)
    await pbx.start()
    service = Service(recordings_settings(tmp, pbx.port, sink.url, fmt), settle_gc=True)
    hangups: dict[str, float] = {}
    try:
        await service.start()
        assert service.pipeline is not None

        def note_hangup(frame: dict[str, str]) -> None:
            if frame.get("Event") == "Hangup":
                hangups[frame.get("Linkedid", "")] = time.monotonic()  # the last one counts

        # Before the AMI task's first read: Service.start only created it.
        service.pipeline.add_frame_listener(note_hangup)
        want_uploads = calls if fmt == "mp3" else 0
        async with asyncio.timeout(600):
            while len(sink.links) < calls or len(sink.uploads) < want_uploads:
                await asyncio.sleep(0.02)
    finally:
        await service.stop()
        await pbx.stop()
        await sink.stop()
    return {
        "audio_seconds": audio_seconds,
        "link": [at - hangups[call] for call, (at, _) in sorted(sink.links.items())],
        "links": [url for _, (_, url) in sorted(sink.links.items())],
        "upload": [at - hangups[call] for call, (at, _) in sorted(sink.uploads.items())],
        "files": [body for _, (_, body) in sorted(sink.uploads.items())],
    }


async def run(quick: bool) -> Section:
    minutes_cost = 1.0 if quick else 10.0
    calls, minutes = (3, 1.0) if quick else (10, 3.0)
    section = Section("Recordings: MP3 conversion cost and hang-up -> CRM latency")
    with tempfile.TemporaryDirectory(prefix="pbxcrm-bench-rec-") as tmp:
        figures, checks, note = await asyncio.to_thread(conversion_cost, Path(tmp), minutes_cost)
    section.notes.append(note)
    section.figures += figures
    section.checks += checks
    results = {}
    for fmt in ("wav", "mp3"):
        with tempfile.TemporaryDirectory(prefix=f"pbxcrm-bench-{fmt}-") as tmp:
            results[fmt] = await burst(Path(tmp), fmt, calls, minutes)
    wav, mp3 = results["wav"], results["mp3"]
    section.notes.append(
        f"{calls} recorded calls of {mp3['audio_seconds'] / 60:.0f} min each ending together;"
        " latency from the call's last Hangup frame to the CRM request"
    )
    ms = 1000.0
    section.figures += [
        Figure(
            "completed (link) p50, format wav",
            percentile(wav["link"], 50) * ms,
            "ms",
            key="completed_p50_ms_wav",
        ),
        Figure(
            "completed (link) p50, format mp3",
            percentile(mp3["link"], 50) * ms,
            "ms",
            key="completed_p50_ms_mp3",
        ),
        Figure(
            "completed (link) max, format wav",
            max(wav["link"]) * ms,
            "ms",
            key="completed_max_ms_wav",
        ),
        Figure(
            "completed (link) max, format mp3",
            max(mp3["link"]) * ms,
            "ms",
            key="completed_max_ms_mp3",
        ),
        Figure(
            "mp3 uploaded p50 (converted, then sent)",
            percentile(mp3["upload"], 50),
            "s",
            key="upload_p50_s",
        ),
        Figure(
            "mp3 uploaded max (the last of the burst)", max(mp3["upload"]), "s", key="upload_max_s"
        ),
    ]
    lengths = [read_mp3(body).seconds for body in mp3["files"]]
    link_first = all(mp3["link"][i] < mp3["upload"][i] for i in range(len(mp3["upload"])))
    section.checks += [
        Check(
            "completed did not wait for the conversion",
            link_first and len(mp3["link"]) == len(mp3["upload"]),
            "each call's link arrived before its converted file",
        ),
        Check(
            "every call's completed arrived, mp3 links named .mp3",
            len(wav["link"]) == calls == len(mp3["link"])
            and all(url.endswith(".mp3") for url in mp3["links"]),
            f"{len(wav['link'])} + {len(mp3['link'])} of {calls} + {calls}",
        ),
        Check(
            "every upload is an MP3 of the whole recording",
            len(lengths) == calls
            and all(abs(length - mp3["audio_seconds"]) < 0.5 for length in lengths),
            f"{len(lengths)} uploads, {min(lengths, default=0):.1f}-"
            f"{max(lengths, default=0):.1f} s of {mp3['audio_seconds']:.1f} s",
        ),
    ]
    return section
