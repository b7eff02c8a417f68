"""Which file name a recording link carries: the MixMonitor file's, or its converted one's.

The call tracker knows only MixMonitor's file name; the link is rendered from the template
the tracker is handed. When `[recordings] format = "mp3"`, that template is a
`ServedUrlTemplate`, which carries the format, so `linked_name` can rename the file without
the tracker knowing about conversion.
"""

from __future__ import annotations

import posixpath

# MixMonitor's formats that pbxcrm converts (signed linear PCM, in a WAV or raw).
RAW_RATES = {
    ".sln": 8000,
    ".sln12": 12000,
    ".sln16": 16000,
    ".sln24": 24000,
    ".sln32": 32000,
    ".sln44": 44100,
    ".sln48": 48000,
    ".sln96": 96000,
}
WAV_SUFFIXES = (".wav", ".wav16")
SOURCE_SUFFIXES = (*WAV_SUFFIXES, *RAW_RATES)


class ServedUrlTemplate(str):
    """A recording URL template that knows the format the files are served in."""

    served_format: str

    def __new__(cls, template: str, served_format: str) -> ServedUrlTemplate:
        value = super().__new__(cls, template)
        value.served_format = served_format
        return value


def served_name(original: str, served_format: str) -> str:
    """`1795418967.2.wav` -> `1795418967.2.mp3` when serving MP3; unchanged for ""."""
    if not served_format or not original:
        return original
    stem, suffix = posixpath.splitext(original)
    if suffix not in SOURCE_SUFFIXES:
        # Already the served format, or one pbxcrm cannot convert (`.WAV` is GSM, `.gsm`):
        # linked as it is.
        return original
    return f"{stem}.{served_format}"


def linked_name(original: str, template: str) -> str:
    """The file name a link rendered from `template` carries (see ServedUrlTemplate)."""
    return served_name(original, getattr(template, "served_format", ""))
