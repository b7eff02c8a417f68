"""The one small async interface the IVR scripts are written against.

Drivers: FastAGI (agi/fastagi.py), classic AGI through pyst2 (agi/classic.py) and, built by the
ARI engineer, a Stasis driver. The first two speak AGI commands, so they share `CommandChannel`,
which turns each operation into one command and its reply; a driver only supplies `command()`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from agi.protocol import (
    AgiCommandError,
    AgiEnvironment,
    AgiError,
    AgiHangup,
    AgiReply,
    parse_reply,
)


class PlaybackFailed(AgiError):
    """STREAM FILE answered result=-1: the file is missing or the caller hung up while it played.

    Asterisk uses the same answer for both; the next command tells them apart (HANGUP / 511).
    """


@runtime_checkable
class AgiChannel(Protocol):
    env: AgiEnvironment

    @property
    def hung_up(self) -> bool: ...

    async def answer(self) -> None: ...

    async def get_variable(self, name: str) -> str | None: ...

    async def set_variable(self, name: str, value: str) -> None: ...

    async def set_variables(self, values: Mapping[str, str]) -> None: ...

    async def stream_file(self, name: str, escape_digits: str = "") -> str: ...

    async def get_data(self, prompt: str, timeout_ms: int, max_digits: int) -> str: ...

    async def verbose(self, message: str, level: int = 1) -> None: ...

    async def hangup(self) -> None: ...


class ReplyReader:
    """Turns the lines that follow one command into its reply.

    `feed` returns None while it needs another line: after an unsolicited `HANGUP` line (the
    reply to the command still follows it — reading it as the reply is the bug this avoids)
    and inside a `520-` usage block.
    """

    __slots__ = ("_usage", "hung_up")

    def __init__(self) -> None:
        self.hung_up = False
        self._usage: list[str] | None = None

    def feed(self, line: str) -> AgiReply | None:
        if self._usage is not None:
            self._usage.append(line)
            if line.startswith("520 "):
                usage, self._usage = "\n".join(self._usage), None
                raise AgiCommandError(usage)
            return None
        if line == "HANGUP":
            self.hung_up = True
            return None
        if line.startswith("520-"):
            self._usage = [line]
            return None
        try:
            return parse_reply(line)
        except AgiHangup:
            self.hung_up = True
            raise


class CommandChannel:
    """Every channel operation as one AGI command; subclasses implement `command`."""

    env: AgiEnvironment

    def __init__(self, env: AgiEnvironment) -> None:
        self.env = env
        self._replies = ReplyReader()

    @property
    def hung_up(self) -> bool:
        return self._replies.hung_up

    async def command(self, verb: str, *args: object) -> AgiReply:
        raise NotImplementedError

    async def answer(self) -> None:
        reply = await self.command("ANSWER")
        if reply.result == "-1":
            raise AgiHangup("ANSWER failed")

    async def get_variable(self, name: str) -> str | None:
        # `200 result=0` = not set; `200 result=1 (value)` = set (possibly to "").
        reply = await self.command("GET VARIABLE", name)
        return reply.data if reply.result == "1" else None

    async def set_variable(self, name: str, value: str) -> None:
        await self.command("SET VARIABLE", name, value)

    async def set_variables(self, values: Mapping[str, str]) -> None:
        for name, value in values.items():
            await self.set_variable(name, value)

    async def stream_file(self, name: str, escape_digits: str = "") -> str:
        reply = await self.command("STREAM FILE", name, escape_digits)
        if reply.result == "-1":
            raise PlaybackFailed(f"STREAM FILE {name} failed (endpos={reply.endpos})")
        code = reply.result_int
        return chr(code) if code else ""

    async def get_data(self, prompt: str, timeout_ms: int, max_digits: int) -> str:
        """The digits typed ("" on timeout with none). -1 means the caller hung up."""
        reply = await self.command("GET DATA", prompt, timeout_ms, max_digits)
        if reply.result == "-1":
            raise AgiHangup("GET DATA: caller hung up")
        return reply.result

    async def verbose(self, message: str, level: int = 1) -> None:
        await self.command("VERBOSE", message, level)

    async def hangup(self) -> None:
        await self.command("HANGUP")
