"""The `[recordings]` section: which format the CRM gets, and how long files are kept."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from crm.recordings.names import ServedUrlTemplate

# The constant bit rates an MP3 encoder can write (MPEG-1, -2 and -2.5 together; LAME picks
# the MPEG version from the sample rate, 8 kHz telephone audio becoming MPEG-2.5).
MP3_BITRATES = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 192, 224, 256, 320)


class RecordingsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # "mp3": each finished recording is converted and the CRM's link names the .mp3;
    # "wav": the MixMonitor file is served as it is.
    format: Literal["wav", "mp3"] = "wav"
    bitrate_kbps: int = 32  # 32 kbit/s mono is ~240 KB a minute and clear for speech
    # Where converted files go; empty: beside the originals in `[calls] recording_dir`.
    # A separate folder suits a pbxcrm user that may not write to Asterisk's spool.
    folder: str = ""
    # Files (converted and original) older than this are deleted; 0 keeps them forever.
    keep_days: float = Field(default=0.0, ge=0)
    # False: the MixMonitor original is deleted by the next sweep once it is converted.
    keep_original: bool = True
    sweep_interval_minutes: float = Field(default=60.0, gt=0)
    # Wait after the call's end before converting: MixMonitor closes the file (and writes
    # the WAV header's sizes) in its own thread, just after the channel is gone.
    settle_seconds: float = Field(default=1.0, ge=0)
    # How long a download or upload of a file still being converted waits for it.
    ready_wait_seconds: float = Field(default=30.0, gt=0)

    @field_validator("bitrate_kbps")
    @classmethod
    def _bitrate(cls, value: int) -> int:
        if value not in MP3_BITRATES:
            allowed = ", ".join(str(rate) for rate in MP3_BITRATES)
            raise ValueError(f"not an MP3 bit rate; use one of {allowed} (kbit/s)")
        return value


def apply_recordings(
    recordings: RecordingsSettings | None, calls: Any, crm_blocks: Sequence[Any]
) -> None:
    """Compose `[recordings]` with the sections it touches: the link template learns the
    served format, and a `[[crm]]` block that uploads files needs the section at all."""
    if recordings is not None and recordings.format != "wav":
        calls.recording_url_template = ServedUrlTemplate(
            str(calls.recording_url_template), recordings.format
        )
    if recordings is None:
        for block in crm_blocks:
            if getattr(block, "uploads_recordings", False):
                raise ValueError(
                    f"[[crm]] {block.name!r} uploads recording files: add a [recordings]"
                    " section (format, folder) so pbxcrm knows where they are"
                )
