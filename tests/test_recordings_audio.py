"""Reading MixMonitor files and converting them to MP3, including the broken ones."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from crm.recordings.audio import convert_to_mp3, quick_problem, read_pcm
from crm.recordings.errors import RecordingError
from crm.recordings.names import ServedUrlTemplate, linked_name, served_name
from tests.fakes.crm_files import read_mp3

SPEECH = Path(__file__).parent / "fixtures" / "audio" / "speech_8k_mono.wav"


def wav(samples: bytes, *, tag: int = 1, bits: int = 16, data_size: int | None = None) -> bytes:
    size = len(samples) if data_size is None else data_size
    fmt = struct.pack("<HHIIHH", tag, 1, 8000, 16000, 2, bits)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + len(samples))
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", size)
        + samples
    )


def test_the_speech_recording_becomes_an_mp3_of_the_same_length(tmp_path):
    target = tmp_path / "out" / "1795418967.2.mp3"
    seconds = convert_to_mp3(SPEECH, target, 32)

    assert seconds == pytest.approx(12.0)
    stream = read_mp3(target.read_bytes())
    assert (stream.sample_rate, stream.bitrate_kbps, stream.channels) == (8000, 32, 1)
    # LAME pads the start and end with up to a few frames of its own.
    assert stream.seconds == pytest.approx(12.0, abs=0.3)
    assert not list(tmp_path.glob("out/.*.partial"))


def test_a_header_mixmonitor_had_not_finished_is_read_to_the_end_of_the_file(tmp_path):
    samples = bytes(range(256)) * 64
    for unknown in (0, 0xFFFFFFFF):
        path = tmp_path / f"open-{unknown}.wav"
        path.write_bytes(wav(samples, data_size=unknown))
        pcm = read_pcm(path)
        assert pcm.samples == samples and pcm.rate == 8000 and pcm.channels == 1


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"ID3 this is not a wav at all", "not a WAV file"),
        (wav(b"\x00" * 640, tag=49), "GSM 6.10"),
        (wav(b"\x00" * 640, bits=8), "8-bit"),
        (wav(b""), "no audio"),
        (wav(b"\x00" * 640)[:30], "cut short"),
    ],
)
def test_a_broken_recording_is_refused_with_the_reason(tmp_path, content, reason):
    path = tmp_path / "1795418967.2.wav"
    path.write_bytes(content)
    with pytest.raises(RecordingError, match=reason) as caught:
        convert_to_mp3(path, tmp_path / "1795418967.2.mp3", 32)
    assert "1795418967.2.wav" in str(caught.value)
    assert not (tmp_path / "1795418967.2.mp3").exists()


def test_a_missing_or_empty_file_is_named_before_any_conversion(tmp_path):
    assert "missing" in (quick_problem(tmp_path / "gone.wav") or "")
    (tmp_path / "empty.wav").write_bytes(wav(b""))
    assert "empty (44 bytes)" in (quick_problem(tmp_path / "empty.wav") or "")
    assert quick_problem(SPEECH) is None


def test_the_link_names_the_converted_file_only_for_formats_pbxcrm_converts():
    mp3 = ServedUrlTemplate("https://pbx/rec/{file}", "mp3")
    assert linked_name("1795418967.2.wav", mp3) == "1795418967.2.mp3"
    assert linked_name("1795418967.2.sln16", mp3) == "1795418967.2.mp3"
    assert linked_name("1795418967.2.WAV", mp3) == "1795418967.2.WAV"  # GSM: kept as it is
    assert linked_name("1795418967.2.wav", "https://pbx/rec/{file}") == "1795418967.2.wav"
    assert served_name("1795418967.2.wav", "") == "1795418967.2.wav"
