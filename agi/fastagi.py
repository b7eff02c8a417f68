"""FastAGI server on asyncio streams: `AGI(agi://127.0.0.1:4573/<script>,args...)`.

Written by hand rather than with panoramisk's FastAGI server, which spins the event loop when a
client connects and closes before its environment, and reads the previous command's reply
after a HANGUP line. Here end-of-stream, HANGUP, 511 and 520 are each handled as what they are.

One command per write, then its reply: Asterisk's run_agi() polls the socket and then reads
with fgets() from a buffered FILE, so a second command arriving in the same segment would sit
in that buffer unseen. Pipelining is therefore not an option.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from agi.channel import CommandChannel
from agi.context import ScriptContext
from agi.protocol import (
    AgiEnvironment,
    AgiHangup,
    AgiProtocolError,
    AgiReply,
    EnvParser,
    format_command,
)
from agi.runner import run_script
from agi.settings import AgiSettings
from crm.shutdown import cancel_and_wait, finish_within

log = logging.getLogger("pbxcrm.agi")

LINE_LIMIT = 64 * 1024  # one reply line (a long GET VARIABLE value) must fit


class FastAgiChannel(CommandChannel):
    def __init__(
        self,
        env: AgiEnvironment,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        reply_timeout: float,
    ) -> None:
        super().__init__(env)
        self._reader = reader
        self._writer = writer
        self._reply_timeout = reply_timeout

    async def command(self, verb: str, *args: object) -> AgiReply:
        line = format_command(verb, *args)
        log.debug("AGI %s >> %s", self.env.uniqueid, line)
        try:
            self._writer.write(line.encode("utf-8", errors="replace") + b"\n")
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            raise AgiHangup(f"connection lost while sending: {exc}") from None
        try:
            async with asyncio.timeout(self._reply_timeout):
                while True:
                    text = await read_line(self._reader)
                    log.debug("AGI %s << %s", self.env.uniqueid, text)
                    if (reply := self._replies.feed(text)) is not None:
                        return reply
        except TimeoutError:
            raise AgiProtocolError(f"no reply to {verb} within {self._reply_timeout:g} s") from None


async def read_line(reader: asyncio.StreamReader) -> str:
    """One LF-terminated line; end of stream (or a cut-off last line) is AgiHangup."""
    try:
        raw = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError:
        raise AgiHangup("Asterisk closed the connection") from None
    except asyncio.LimitOverrunError:
        raise AgiProtocolError(f"line longer than {LINE_LIMIT} bytes") from None
    except (ConnectionError, OSError) as exc:
        raise AgiHangup(f"connection lost: {exc}") from None
    return raw.decode("utf-8", errors="replace").rstrip("\r\n")


async def read_environment(reader: asyncio.StreamReader) -> AgiEnvironment:
    parser = EnvParser()
    while True:
        try:
            line = await read_line(reader)
        except AgiHangup:
            raise AgiProtocolError(
                f"connection closed after {parser.lines} environment lines"
            ) from None
        if parser.feed(line):
            return parser.result()


class FastAgiServer:
    def __init__(self, settings: AgiSettings, context: ScriptContext) -> None:
        self.settings = settings
        self.context = context
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        self.sessions_total = 0

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("FastAGI server is not listening")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.settings.host, self.settings.port, limit=LINE_LIMIT
        )
        log.info("FastAGI listening on %s:%d", self.settings.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await cancel_and_wait(list(self._sessions), "FastAGI sessions")
        if self._server is not None:
            await finish_within(self._server.wait_closed(), "closing the FastAGI listener")
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        self.sessions_total += 1
        try:
            if len(self._sessions) > self.settings.max_sessions:
                log.error("FastAGI: %d sessions open, refusing one more", len(self._sessions) - 1)
                return
            await self._session(reader, writer)
        finally:
            self._sessions.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            async with asyncio.timeout(self.settings.env_timeout_seconds):
                env = await read_environment(reader)
        except TimeoutError:
            log.warning(
                "FastAGI %s: no complete AGI environment within %g s; closed",
                peer,
                self.settings.env_timeout_seconds,
            )
            return
        except AgiProtocolError as exc:
            log.warning("FastAGI %s: %s; closed", peer, exc)
            return
        channel = FastAgiChannel(env, reader, writer, self.settings.reply_timeout_seconds)
        await run_script(env.script, channel, self.context)


async def start_fastagi(settings: AgiSettings, context: ScriptContext) -> FastAgiServer:
    """What `pbxcrm run` calls; `await server.stop()` on shutdown."""
    server = FastAgiServer(settings, context)
    await server.start()
    return server
