"""Reading MixMonitor's files and encoding them as MP3 (LAME, through `lameenc`).

Blocking code: the library runs it in a worker thread (`lameenc` releases the GIL while it
encodes, so the event loop keeps running). Errors are `RecordingError`s worded for a PBX
admin: which file, and what is wrong with it.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import lameenc

from crm.recordings.errors import RecordingError
from crm.recordings.names import RAW_RATES

_PCM = 1
_EXTENSIBLE = 0xFFFE
_FORMAT_NAMES = {6: "A-law", 7: "mu-law", 49: "GSM 6.10 (MixMonitor's .WAV)", 3: "float"}
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)
_WAV_HEADER_BYTES = 44


@dataclass(frozen=True, slots=True)
class Pcm:
    """16-bit little-endian signed samples, interleaved when stereo."""

    samples: bytes
    rate: int
    channels: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / (2 * self.channels * self.rate)


def quick_problem(path: Path) -> str | None:
    """Why `path` cannot be a recording, from its size alone (cheap enough for the loop)."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return f"recording {path.name} is missing: no such file in {path.parent}"
    except OSError as exc:
        return f"recording {path.name} cannot be read: {exc.strerror}"
    if size <= _WAV_HEADER_BYTES:
        return f"recording {path.name} is empty ({size} bytes): MixMonitor wrote no audio"
    return None


def read_pcm(path: Path) -> Pcm:
    suffix = path.suffix.lower()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RecordingError(f"recording {path.name} is missing in {path.parent}") from None
    except OSError as exc:
        raise RecordingError(f"recording {path.name} cannot be read: {exc.strerror}") from None
    if suffix in RAW_RATES:
        pcm = Pcm(data[: len(data) - len(data) % 2], RAW_RATES[suffix], 1)
    else:
        pcm = _parse_wav(path.name, data)
    if not pcm.samples:
        raise RecordingError(f"recording {path.name} holds no audio (0 samples)")
    return pcm


def _parse_wav(name: str, data: bytes) -> Pcm:
    """PCM from a RIFF/WAVE file; a data size of 0 or -1 (a header MixMonitor had not
    finished) means "up to the end of the file", as sox and ffmpeg read it."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise RecordingError(f"recording {name} is not a WAV file (no RIFF/WAVE header)")
    offset = 12
    fmt: tuple[int, int, int, int] | None = None
    while offset + 8 <= len(data):
        chunk_id = data[offset : offset + 4]
        (size,) = struct.unpack_from("<I", data, offset + 4)
        body = offset + 8
        if chunk_id == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise RecordingError(f"recording {name}: its WAV format chunk is cut short")
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise RecordingError(f"recording {name}: WAV data before its format chunk")
            end = len(data) if size in _UNKNOWN_SIZES else min(len(data), body + size)
            return _pcm_of(name, fmt, data[body:end])
        offset = body + size + (size & 1)
    raise RecordingError(f"recording {name}: WAV file without a data chunk (cut short?)")


def _pcm_of(name: str, fmt: tuple[int, int, int, int], samples: bytes) -> Pcm:
    tag, channels, rate, bits = fmt
    if tag not in (_PCM, _EXTENSIBLE):
        kind = _FORMAT_NAMES.get(tag, f"format tag {tag}")
        raise RecordingError(f"recording {name} is {kind} audio; only 16-bit PCM is converted")
    if bits != 16 or channels not in (1, 2) or not 8000 <= rate <= 96000:
        raise RecordingError(
            f"recording {name} is {bits}-bit, {channels} channel(s) at {rate} Hz;"
            " only 16-bit PCM, mono or stereo, 8-96 kHz is converted"
        )
    frame = 2 * channels
    return Pcm(samples[: len(samples) - len(samples) % frame], rate, channels)


def encode_mp3(pcm: Pcm, bitrate_kbps: int) -> bytes:
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(bitrate_kbps)
    encoder.set_in_sample_rate(pcm.rate)
    encoder.set_channels(pcm.channels)
    encoder.set_quality(5)  # LAME's default speed/quality trade-off ("good", not "best")
    try:
        return bytes(encoder.encode(pcm.samples) + encoder.flush())
    except RuntimeError as exc:  # lameenc reports LAME's failures this way
        raise RecordingError(f"the MP3 encoder failed: {exc}") from None


def convert_to_mp3(source: Path, target: Path, bitrate_kbps: int) -> float:
    """Write `target` (atomically: never a half-written file under the served name) and
    return the seconds of audio converted."""
    pcm = read_pcm(source)
    encoded = encode_mp3(pcm, bitrate_kbps)
    partial = target.with_name(f".{target.name}.partial")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(encoded)
        os.replace(partial, target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise RecordingError(f"cannot write {target}: {exc.strerror}") from None
    return pcm.seconds
