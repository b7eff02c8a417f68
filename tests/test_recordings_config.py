"""`[recordings]` and uploads in the config: mistakes are named, the link learns the format."""

from __future__ import annotations

from pathlib import Path

import pytest

from ari_app.app.settings import ConfigError, Settings, load_settings
from ari_app.calls.state import CallState, build_call
from crm.model import Direction

EXAMPLE = Path(__file__).parents[1] / "config" / "examples" / "crm-recording-upload.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pbxcrm.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_bitrate_mp3_cannot_have_is_named_with_its_line(tmp_path):
    path = write(tmp_path, '[recordings]\nformat = "mp3"\nbitrate_kbps = 33\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert f"{path}:3: recordings.bitrate_kbps" in str(caught.value)
    assert "32, 40" in str(caught.value)


def test_an_unknown_format_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"recordings\.format"):
        load_settings(write(tmp_path, '[recordings]\nformat = "ogg"\n'))


def test_an_upload_without_a_recordings_section_is_refused(tmp_path):
    text = EXAMPLE.read_text(encoding="utf-8")
    with pytest.raises(ConfigError, match="'crm-call-files' uploads recording files: add a"):
        load_settings(write(tmp_path, text))
    settings = load_settings(write(tmp_path, text + '\n[recordings]\nformat = "mp3"\n'))
    assert [block.name for block in settings.crm] == ["crm-call-records", "crm-call-files"]


@pytest.mark.parametrize(
    ("request_extra", "reason"),
    [
        ('json_body = { a = "b" }', "an upload's body is the file"),
        ('body = "x"', "an upload's body is the file"),
        ('form = { a = "b" }', "a raw upload's body is the file alone"),
    ],
)
def test_an_upload_with_a_second_body_is_refused(tmp_path, request_extra, reason):
    text = f"""
[recordings]
[[crm]]
type = "declarative"
[crm.requests.completed]
url = "https://crm.example.com/files"
{request_extra}
[crm.requests.completed.upload]
mode = "raw"
"""
    if "form" not in request_extra:
        text = text.replace('mode = "raw"', 'mode = "multipart"')
    with pytest.raises(ConfigError, match=reason):
        load_settings(write(tmp_path, text))


def recorded_state() -> CallState:
    state = CallState(
        call_id="1795418967.2",
        primary="1795418967.2",
        direction=Direction.INBOUND,
        start_ts=1795418967.0,
        caller_number="+79037654321",
        caller_name=None,
        called_number="4951112234",
    )
    state.recording_file = "1795418967.2.wav"
    return state


@pytest.mark.parametrize(
    ("recordings", "url"),
    [
        (None, "https://pbx/rec/1795418967.2.wav"),
        ({"format": "wav"}, "https://pbx/rec/1795418967.2.wav"),
        ({"format": "mp3"}, "https://pbx/rec/1795418967.2.mp3"),
    ],
)
def test_the_link_names_the_served_file_and_the_record_keeps_mixmonitors(recordings, url):
    raw: dict = {"calls": {"recording_url_template": "https://pbx/rec/{file}"}}
    if recordings is not None:
        raw["recordings"] = recordings
    settings = Settings.model_validate(raw)
    call = build_call(
        recorded_state(),
        pbx_id="lab",
        source="ami",
        recording_url_template=settings.calls.recording_url_template,
    )
    assert call.recording_url == url
    assert call.recording_file == "1795418967.2.wav"
