"""The declarative upload while a conversion is still running, and for calls without a file."""

from __future__ import annotations

import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from crm.dialects.base import DeliveryError
from crm.model import Call, CallEvent, EventKind
from crm.recordings.library import RecordingLibrary
from crm.recordings.settings import RecordingsSettings
from tests.fakes.crm_files import FilesCrm, read_mp3
from tests.fakes.crm_harness import adapter_from_toml, client_session

SPEECH = Path(__file__).parent / "fixtures" / "audio" / "speech_8k_mono.wav"


def block(url: str) -> str:
    return f"""
[[crm]]
type = "declarative"
name = "files"
timeout_seconds = 0.5
[crm.requests.completed]
method = "PUT"
url = "{url}/raw/{{call_id}}.mp3"
[crm.requests.completed.upload]
mode = "raw"
filename = "call-{{call_id}}.mp3"
"""


def completed(recording: str | None) -> CallEvent:
    call = Call(call_id="1795418967.2", pbx_id="lab", recording_file=recording, ended=True)
    return CallEvent(
        call_id=call.call_id, seq=5, kind=EventKind.COMPLETED, at=datetime.now(UTC), call=call
    )


@pytest.fixture
def library(tmp_path: Path) -> RecordingLibrary:
    (tmp_path / "monitor").mkdir()
    shutil.copy(SPEECH, tmp_path / "monitor" / "1795418967.2.wav")
    return RecordingLibrary(
        RecordingsSettings(format="mp3", folder=str(tmp_path / "mp3"), settle_seconds=0),
        tmp_path / "monitor",
    )


async def test_an_upload_of_a_file_still_converting_is_retried_then_sent(library):
    event = completed("1795418967.2.wav")
    # The one conversion worker is busy until released: the file cannot be ready before.
    release = threading.Event()
    library._executor.submit(release.wait)
    async with FilesCrm() as crm, client_session() as http:
        adapter = adapter_from_toml(block(crm.url), http)
        adapter.use_recordings(library)  # type: ignore[attr-defined]
        try:
            with pytest.raises(DeliveryError) as caught:
                await adapter.deliver(event, "files:key-1")
        finally:
            release.set()
        assert caught.value.retryable is True
        assert "recording 1795418967.2.mp3 is still being converted" in str(caught.value)
        assert crm.requests == []

        await adapter.deliver(event, "files:key-1")  # the outbox's next attempt
    [sent] = crm.requests
    assert sent.path == "/raw/1795418967.2.mp3"
    assert sent.headers["Content-Disposition"] == 'attachment; filename="call-1795418967.2.mp3"'
    assert abs(read_mp3(sent.body).seconds - 12.0) < 0.3
    await library.close()


async def test_a_call_without_a_recording_is_not_sent_by_an_upload_request(library):
    async with FilesCrm() as crm, client_session() as http:
        adapter = adapter_from_toml(block(crm.url), http)
        assert adapter.wants(completed("1795418967.2.wav"))
        assert not adapter.wants(completed(None))
    await library.close()
