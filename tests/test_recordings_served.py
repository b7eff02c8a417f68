"""The recordings route with `[recordings] format = "mp3"`: the link always leads to audio.

A file not yet converted (pbxcrm restarted after the call, or the CRM asked at once) is
converted on the request; one that cannot be converted is served as MixMonitor wrote it;
one that does not exist is a 404, and a name that tries to leave the folder never converts.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ari_app.web.deps import HttpDeps
from crm.model import Call, CallEvent, EventKind
from crm.recordings.library import RecordingLibrary
from crm.recordings.settings import RecordingsSettings
from tests.fakes.crm_files import read_mp3
from tests.test_http_support import bearer, make_settings, running

SPEECH = Path(__file__).parent / "fixtures" / "audio" / "speech_8k_mono.wav"


@pytest.fixture
def deps(tmp_path: Path) -> HttpDeps:
    settings = make_settings(tmp_path)
    monitor = Path(settings.calls.recording_dir)
    shutil.copy(SPEECH, monitor / "1795418967.2.wav")
    # MixMonitor's GSM-in-WAV (format tag 49): valid audio pbxcrm does not convert.
    (monitor / "1795418999.7.wav").write_bytes(
        b"RIFF\x00\x00\x00\x00WAVEfmt \x14\x00\x00\x00\x31\x00\x01\x00\x40\x1f\x00\x00"
        b"\x59\x06\x00\x00\x41\x00\x00\x00\x02\x00\x40\x01data\x41\x00\x00\x00" + b"\x00" * 65
    )
    library = RecordingLibrary(
        RecordingsSettings(format="mp3", folder=str(tmp_path / "converted"), settle_seconds=0),
        monitor,
    )
    return HttpDeps(settings=settings, recordings=library)


def url(name: str) -> str:
    return f"/api/v1/recordings/{name}"


async def test_an_mp3_never_converted_is_converted_on_request_and_kept(deps, tmp_path):
    assert deps.recordings is not None
    async with running(deps) as server:
        async with server.session.get(server.url(url("1795418967.2.mp3")), headers=bearer()) as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "audio/mpeg"
            body = await r.read()
    assert abs(read_mp3(body).seconds - 12.0) < 0.3
    assert (tmp_path / "converted" / "1795418967.2.mp3").read_bytes() == body
    assert deps.recordings.converted == 1
    await deps.recordings.close()


async def test_a_recording_that_cannot_be_converted_is_served_as_the_original(deps, tmp_path):
    assert deps.recordings is not None
    async with running(deps) as server:
        async with server.session.get(server.url(url("1795418999.7.mp3")), headers=bearer()) as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "audio/wav"
            assert (await r.read()).startswith(b"RIFF")
    reason = (tmp_path / "converted" / "1795418999.7.mp3.error").read_text()
    assert "GSM 6.10" in reason
    assert deps.recordings.failure("1795418999.7.mp3") == reason.strip()
    await deps.recordings.close()


@pytest.mark.parametrize("name", ["1795418000.1.mp3", "..%2F1795418967.2.mp3", "x%2F..%2Fy.mp3"])
async def test_no_file_or_a_name_outside_the_folder_is_a_404(deps, tmp_path, name):
    assert deps.recordings is not None
    async with running(deps) as server:
        async with server.session.get(server.url(url(name)), headers=bearer()) as r:
            assert r.status == 404
    assert not (tmp_path / "converted").exists() or not any(
        p.suffix == ".mp3" for p in (tmp_path / "converted").rglob("*")
    )
    await deps.recordings.close()


async def test_the_wav_format_serves_mixmonitor_files_as_they_are(tmp_path):
    settings = make_settings(tmp_path)
    shutil.copy(SPEECH, Path(settings.calls.recording_dir) / "1795418967.2.wav")
    library = RecordingLibrary(RecordingsSettings(), settings.calls.recording_dir)
    async with running(HttpDeps(settings=settings, recordings=library)) as server:
        async with server.session.get(server.url(url("1795418967.2.wav")), headers=bearer()) as r:
            assert r.status == 200 and await r.read() == SPEECH.read_bytes()
        async with server.session.get(server.url(url("1795418967.2.mp3")), headers=bearer()) as r:
            assert r.status == 404
    await library.close()


def completed(recording: str) -> CallEvent:
    call = Call(
        call_id="1795418967.2",
        recording_file=recording,
        recording_url=f"https://pbx.example/rec/{recording}",
        ended=True,
    )
    return CallEvent(
        call_id=call.call_id, seq=4, kind=EventKind.COMPLETED, at=datetime.now(UTC), call=call
    )


async def test_only_a_final_record_whose_file_cannot_be_served_loses_its_link(deps):
    library = deps.recordings
    assert library is not None
    present, spaced = completed("1795418967.2.wav"), completed("call 1.wav")
    answered = completed("gone.wav").model_copy(update={"kind": EventKind.ANSWERED})

    checked = library.check_completed([present, spaced, answered])

    assert checked[0] is present  # the file is there: the link stays
    assert checked[1].call.recording_url is None
    assert "file name pbxcrm does not serve" in (checked[1].call.recording_error or "")
    assert checked[2] is answered  # only the final record is checked
    await library.close()
