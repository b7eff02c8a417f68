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


class Watchdog:
    """Cancels a session's task when one wait (its environment, one reply) outlasts its limit.

    One timer per session, moved only when it fires: an `asyncio.timeout()` per wait created
    and cancelled a timer each time, ~4 us of a session's ~200 us CPU, four times a session.
    """

    __slots__ = ("_deadline", "_fired", "_loop", "_task", "_timer")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._fired = False

    def start(self, seconds: float) -> None:
        deadline = self._deadline = self._loop.time() + seconds
        if self._timer is not None and self._timer.when() > deadline:
            self._timer.cancel()  # a shorter limit than the one the timer was set for
            self._timer = None
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._check)

    def stop(self) -> None:
        self._deadline = None

    def fired(self) -> bool:
        """After a CancelledError: True if it was this watchdog (the task is then uncancelled)."""
        if not self._fired:
            return False
        self._fired = False
        self._task.uncancel()
        return True

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        if self._deadline is None:
            return  # not waiting; the next start() sets a new timer
        if self._loop.time() < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._check)
            return
        self._deadline = None
        self._fired = True
        self._task.cancel()


class FastAgiChannel(CommandChannel):
    def __init__(
        self,
        env: AgiEnvironment,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        reply_timeout: float,
        watchdog: Watchdog,
    ) -> None:
        super().__init__(env)
        self._reader = reader
        self._writer = writer
        self._reply_timeout = reply_timeout
        self._watchdog = watchdog
        # Asked once per session: the wire trace's arguments cost more than the check.
        self._trace = log.isEnabledFor(logging.DEBUG)

    async def command(self, verb: str, *args: object) -> AgiReply:
        line = format_command(verb, *args)
        if self._trace:
            log.debug("AGI %s >> %s", self.env.uniqueid, line)
        writer = self._writer
        try:
            writer.write(line.encode("utf-8", errors="replace") + b"\n")
            # Only a full socket buffer needs waiting for (a lost connection shows at the read).
            if writer.transport.get_write_buffer_size():
                await writer.drain()
        except (ConnectionError, OSError) as exc:
            raise AgiHangup(f"connection lost while sending: {exc}") from None
        self._watchdog.start(self._reply_timeout)
        try:
            while True:
                text = await read_line(self._reader)
                if self._trace:
                    log.debug("AGI %s << %s", self.env.uniqueid, text)
                if (reply := self._replies.feed(text)) is not None:
                    return reply
        except asyncio.CancelledError:
            if self._watchdog.fired():
                raise AgiProtocolError(
                    f"no reply to {verb} within {self._reply_timeout:g} s"
                ) from None
            raise
        finally:
            self._watchdog.stop()


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
    """The `agi_*` block, in three reads instead of one per line (a tenth of a session's CPU).

    The first line is judged alone so that a port scan or an HTTP request is refused at once;
    after it, a single `\n` is a one-line environment's end, anything else starts a block
    that runs to the blank line.
    """
    parser = EnvParser()
    try:
        if parser.feed(_text(await reader.readuntil(b"\n"))):
            return parser.result()
        after_first = await reader.readexactly(1)
        block = b"" if after_first == b"\n" else after_first + await reader.readuntil(b"\n\n")
    except asyncio.IncompleteReadError as exc:
        for line in exc.partial.split(b"\n")[:-1]:  # the lines that did arrive whole
            parser.feed(_text(line))
        raise AgiProtocolError(
            f"connection closed after {parser.lines} environment lines"
        ) from None
    except asyncio.LimitOverrunError:
        raise AgiProtocolError(f"AGI environment longer than {LINE_LIMIT} bytes") from None
    except (ConnectionError, OSError) as exc:
        raise AgiProtocolError(
            f"connection lost after {parser.lines} environment lines: {exc}"
        ) from None
    if block:
        parser.feed_block(block[:-1].decode("utf-8", errors="replace"))
    parser.feed("")
    return parser.result()


def _text(line: bytes) -> str:
    return line.decode("utf-8", errors="replace").rstrip("\r\n")


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
        watchdog = Watchdog()
        try:
            await self._run(reader, writer, watchdog)
        finally:
            watchdog.close()

    async def _run(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, watchdog: Watchdog
    ) -> None:
        watchdog.start(self.settings.env_timeout_seconds)
        try:
            env = await read_environment(reader)
        except asyncio.CancelledError:
            if not watchdog.fired():
                raise
            log.warning(
                "FastAGI %s: no complete AGI environment within %g s; closed",
                writer.get_extra_info("peername"),
                self.settings.env_timeout_seconds,
            )
            return
        except AgiProtocolError as exc:
            log.warning("FastAGI %s: %s; closed", writer.get_extra_info("peername"), exc)
            return
        finally:
            watchdog.stop()
        channel = FastAgiChannel(env, reader, writer, self.settings.reply_timeout_seconds, watchdog)
        await run_script(env.script, channel, self.context)


async def start_fastagi(settings: AgiSettings, context: ScriptContext) -> FastAgiServer:
    """What `pbxcrm run` calls; `await server.stop()` on shutdown."""
    server = FastAgiServer(settings, context)
    await server.start()
    return server
