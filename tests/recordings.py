"""Reading the recorded AMI captures in tests (format: fixtures/asterisk/README.md)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures" / "asterisk"
AMI_DIR = FIXTURES / "ami"
RECONNECT_MARKER = b"# --- connection closed by server; reconnected ---"


def ami_path(scenario: str) -> Path:
    return AMI_DIR / f"{scenario}.ami"


def recorded_frames(scenario: str) -> Iterator[dict[str, str]]:
    """Every frame of a capture as a header dict, first occurrence of a header wins."""
    data = ami_path(scenario).read_bytes().replace(RECONNECT_MARKER + b"\r\n", b"")
    for block in data.decode().split("\r\n\r\n"):
        headers: dict[str, str] = {}
        for line in block.split("\r\n"):
            key, sep, value = line.partition(":")
            if sep:
                headers.setdefault(key, value.removeprefix(" "))
        if headers:
            yield headers
