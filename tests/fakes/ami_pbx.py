"""The fake PBX of the tests: the product's (ari_app/app/fake_pbx.py, which `pbxcrm demo` and
`pbxcrm replay` run) plus what only tests ask of it.

* A credential check: a wrong Username/Secret gets `Response: Error` / `Message: Authentication
  failed` and the server closes, as Asterisk 22's manager.c does.
* `strip_timestamps=True`: every `Timestamp:` header is removed (a PBX without timestampevents).
* `cut_after_bytes=N`: the first connection is closed after N bytes, mid-frame.
* `hold_open=True`: never answers Ping and never closes (a half-open connection).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Collection
from pathlib import Path

from ari_app.app import fake_pbx
from ari_app.app.fake_pbx import Block, Part, Reply, build_frame, parse_headers

log = logging.getLogger("ari_app.app.fake_pbx")

_TIMESTAMP_LINE = re.compile(rb"(?m)^Timestamp: [^\r\n]*\r\n?")


def _without_timestamps(block: Block) -> Block:
    raw = _TIMESTAMP_LINE.sub(b"", block.raw)
    return Block(raw, parse_headers(raw))


def _strip_timestamps(part: Part) -> None:
    if part.login is not None:
        part.login = _without_timestamps(part.login)
    for index, item in enumerate(part.items):
        if isinstance(item, Reply):
            item.blocks = [_without_timestamps(block) for block in item.blocks]
        else:
            part.items[index] = _without_timestamps(item)


class FaultySession(fake_pbx.Session):
    """A session that checks the login and may cut the stream or never let go."""

    def __init__(
        self,
        pbx: FakePbx,
        part: Part | None,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        last: bool,
        cut_after: int | None,
    ) -> None:
        super().__init__(pbx, part, reader, writer, last)
        self.faulty = pbx
        self.cut_after = cut_after
        self.sent_bytes = 0

    def send(self, data: bytes) -> None:
        if self.cut_after is None or self.closed or self.writer.transport.is_closing():
            super().send(data)
            return
        if self.sent_bytes + len(data) >= self.cut_after:
            self.writer.write(data[: max(0, self.cut_after - self.sent_bytes)])
            self.sent_bytes = self.cut_after
            log.info("fake PBX: cutting the connection after %d bytes", self.cut_after)
            self.closed = True
            self.writer.close()  # flushes the partial frame first, then EOF
            return
        self.sent_bytes += len(data)
        super().send(data)

    def pong(self, id_line: list[str]) -> None:
        if not self.faulty.hold_open:
            super().pong(id_line)

    async def login(self, action: dict[str, str], id_line: list[str]) -> None:
        pbx = self.faulty
        if action.get("Username") != pbx.username or action.get("Secret") != pbx.password:
            self.send(build_frame("Response: Error", *id_line, "Message: Authentication failed"))
            await self.close()
            return
        await super().login(action, id_line)

    async def close_as_recorded(self) -> None:
        if not self.faulty.hold_open:
            await super().close_as_recorded()


class FakePbx(fake_pbx.FakePbx):
    """ari_app.app.fake_pbx.FakePbx with the test options of the module docstring."""

    def __init__(
        self,
        recording: bytes | Path,
        *,
        username: str = "crm",
        password: str = "crmsecret",
        host: str = "127.0.0.1",
        port: int = 0,
        pace: float = 0.0,
        max_gap: float = 3600.0,
        sent: bytes | Path | None = None,
        await_actions: bool | Collection[str] = True,
        strip_timestamps: bool = False,
        cut_after_bytes: int | None = None,
        hold_open: bool = False,
    ) -> None:
        super().__init__(
            recording,
            host=host,
            port=port,
            pace=pace,
            max_gap=max_gap,
            sent=sent,
            await_actions=await_actions,
        )
        if strip_timestamps:
            for part in self._parts:
                _strip_timestamps(part)
        self.username = username
        self.password = password
        self.cut_after_bytes = cut_after_bytes
        self.hold_open = hold_open

    def session(
        self,
        index: int,
        part: Part | None,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> fake_pbx.Session:
        cut = self.cut_after_bytes if index == 0 else None
        return FaultySession(self, part, reader, writer, index == len(self._parts) - 1, cut)
