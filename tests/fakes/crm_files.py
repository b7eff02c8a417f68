"""A CRM that takes recording files (a real aiohttp server), and readers for what it got.

Routes: `POST /calls` (a JSON call record with the link), `POST /upload` (multipart/form-data
with a file part), `PUT /raw/<name>` (the file as the body). Parsing is done with the
standard library's email parser and an MP3 frame-header reader written here from the MPEG
audio spec, so nothing of pbxcrm judges pbxcrm's own output.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP

from aiohttp import web

from tests.fakes.crm_server import FakeCrm, Recorded, Rejected, require

# Layer III bit rates (kbit/s) by MPEG version: index 1..14 of the header's bitrate field.
_MPEG1 = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MPEG2 = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


class FilesCrm(FakeCrm):
    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/calls", self._accept)
        router.add_post("/upload", self._upload)
        router.add_put("/raw/{name}", self._accept)

    async def _accept(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _upload(self, request: web.Request) -> web.Response:
        body = self.requests[-1].body
        require(bool(body), "empty upload")
        try:
            parts = multipart_parts(self.requests[-1])
        except ValueError as exc:
            raise Rejected(str(exc)) from None
        require(any(p.get_filename() for p in parts.values()), "no file part in the upload")
        return web.json_response({"ok": True})


def multipart_parts(recorded: Recorded) -> dict[str, Message]:
    """The parts of a multipart/form-data request by field name (stdlib email parser)."""
    content_type = recorded.headers.get("Content-Type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ValueError(f"not multipart/form-data: {content_type!r}")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + recorded.body)
    if not message.is_multipart():
        raise ValueError("the body does not parse as multipart")
    parts: dict[str, Message] = {}
    for part in message.iter_parts():  # type: ignore[attr-defined]
        name = part.get_param("name", header="content-disposition")
        if not name:
            raise ValueError("a part without a field name")
        parts[str(name)] = part
    return parts


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Mp3Stream:
    frames: int
    sample_rate: int
    bitrate_kbps: int
    channels: int

    @property
    def seconds(self) -> float:
        samples_per_frame = 1152 if self.sample_rate >= 32000 else 576
        return self.frames * samples_per_frame / self.sample_rate


def read_mp3(data: bytes) -> Mp3Stream:
    """Walk the MPEG audio frames from the first to the last; raise if any is broken."""
    offset = 0
    if data[:3] == b"ID3":
        size = data[6] << 21 | data[7] << 14 | data[8] << 7 | data[9]
        offset = 10 + size
    frames = 0
    first: tuple[int, int, int] | None = None
    while offset + 4 <= len(data):
        b1, b2, b3 = data[offset + 1], data[offset + 2], data[offset + 3]
        if data[offset] != 0xFF or b1 & 0xE0 != 0xE0:
            raise ValueError(f"no MPEG frame sync at byte {offset}")
        version = (b1 >> 3) & 3
        layer = (b1 >> 1) & 3
        bitrate_index = b2 >> 4
        rate_index = (b2 >> 2) & 3
        if version == 1 or layer != 1 or bitrate_index in (0, 15) or rate_index == 3:
            raise ValueError(f"not a Layer III frame header at byte {offset}")
        bitrate = (_MPEG1 if version == 3 else _MPEG2)[bitrate_index - 1]
        rate = _RATES[version][rate_index]
        padding = (b2 >> 1) & 1
        coefficient = 144 if version == 3 else 72
        length = coefficient * bitrate * 1000 // rate + padding
        channels = 1 if b3 >> 6 == 3 else 2
        if first is None:
            first = (rate, bitrate, channels)
        frames += 1
        offset += length
    if first is None:
        raise ValueError("no MPEG audio frame at all")
    return Mp3Stream(frames, first[0], first[1], first[2])
