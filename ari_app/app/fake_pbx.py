"""A fake Asterisk: an AMI server on 127.0.0.1 that replays a recorded AMI byte stream.

What `pbxcrm demo` and `pbxcrm replay FILE.ami` need; the tests extend it with fault modes
(tests/fakes/ami_pbx.py). The recording is sent as recorded (banner, login response, events);
only what depends on the client is rewritten: the `ActionID` of the responses (the client picks
its own), and the recorded answers to the client's actions are sent when the client actually
asks for them. Any login is accepted: pbxcrm is given the credentials it logs in with.

Replies the recordings do not contain are built the way Asterisk 22's manager.c builds
them: `Ping` (`Ping: Pong` + `Timestamp`), an action before login (`Permission denied`), an
unknown action (`Invalid/unknown command: X. Use Action: ListCommands ...`) and an empty
`CoreShowChannels`/`Status` list (`EventList: start` ... `...Complete` with `ListItems: 0`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from crm.shutdown import cancel_and_wait, finish_within

log = logging.getLogger(__name__)

RECONNECT_MARKER = b"# --- connection closed by server; reconnected ---"
_EOL = b"\r\n"
_SEP = b"\r\n\r\n"
DEFAULT_BANNER = b"Asterisk Call Manager/11.0.0"

# Which recorded action a response answers, when no `.sent.ami` file says so.
_GUESS_BY_MESSAGE = {
    "Channels will follow": "CoreShowChannels",
    "Channel status will follow": "Status",
    "Originate successfully queued": "Originate",
    "Authentication accepted": "Login",
    "Thanks for all the fish.": "Logoff",
}

_EMPTY_LISTS = {
    # action -> (response Message, complete event name); Asterisk 22 manager.c / action_status.
    "coreshowchannels": ("Channels will follow", "CoreShowChannelsComplete"),
    "status": ("Channel status will follow", "StatusComplete"),
}


def parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("utf-8", "backslashreplace").replace("\r\n", "\n").split("\n"):
        key, sep, value = line.partition(":")
        if sep and key not in headers:
            headers[key.strip()] = value[1:] if value[:1] == " " else value
    return headers


def build_frame(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _with_action_id(block: bytes, action_id: str | None) -> bytes:
    """The block with its ActionID header set to the client's (or removed if it sent none)."""
    lines = block.split(_EOL)
    for i, line in enumerate(lines):
        if line.startswith(b"ActionID:"):
            if action_id is None:
                del lines[i]
            else:
                lines[i] = b"ActionID: " + action_id.encode()
            break
    return _EOL.join(lines)


@dataclass(slots=True)
class Block:
    raw: bytes  # one frame, CRLF lines, without the blank line that ends it
    headers: dict[str, str]

    @property
    def action_id(self) -> str | None:
        return self.headers.get("ActionID")

    @property
    def ts(self) -> float | None:
        try:
            return float(self.headers["Timestamp"])
        except (KeyError, ValueError):
            return None


@dataclass(slots=True)
class Reply:
    """A recorded response and the list events that followed it, answering one action."""

    action: str  # lower-case action name
    recorded_id: str
    blocks: list[Block]


@dataclass(slots=True)
class Part:
    """One recorded connection."""

    banner: bytes
    login: Block | None
    items: list[Block | Reply] = field(default_factory=list)
    closed_by_server: bool = False


def _split_blocks(data: bytes) -> list[bytes]:
    data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return [b for b in data.split(_SEP) if b.strip()]


def read_recording(source: bytes | Path) -> bytes:
    return source.read_bytes() if isinstance(source, Path) else source


def _sent_names(sent: bytes | None) -> dict[str, str]:
    names: dict[str, str] = {}
    if not sent:
        return names
    for block in _split_blocks(sent.replace(RECONNECT_MARKER + _EOL, b"")):
        headers = parse_headers(block)
        if "Action" in headers and "ActionID" in headers:
            names[headers["ActionID"]] = headers["Action"].lower()
    return names


def split_connections(recording: bytes) -> list[bytes]:
    """The recorded connections of a file (split at the reconnect marker)."""
    pieces = recording.split(RECONNECT_MARKER)
    return [p[2:] if i and p.startswith(_EOL) else p for i, p in enumerate(pieces)]


def parse_recording(recording: bytes, sent: bytes | None) -> list[Part]:
    names = _sent_names(sent)
    pieces = split_connections(recording)
    parts: list[Part] = []
    for index, piece in enumerate(pieces):
        banner = DEFAULT_BANNER
        if piece.startswith(b"Asterisk Call Manager/"):
            line_end = piece.find(b"\n")
            banner = piece[:line_end].rstrip(b"\r") if line_end >= 0 else piece
            piece = piece[line_end + 1 :] if line_end >= 0 else b""
        part = Part(banner=banner, login=None, closed_by_server=index < len(pieces) - 1)
        current: Reply | None = None
        for raw in _split_blocks(piece):
            if raw.startswith(b"Asterisk Call Manager/"):
                # Captures joined end to end: a later banner is not a frame.
                raw = raw.partition(_EOL)[2]
                if not raw.strip():
                    continue
            block = Block(raw, parse_headers(raw))
            action_id = block.action_id
            # OriginateResponse events carry a Response header too: the first line decides.
            if raw.startswith(b"Response:"):
                action = names.get(action_id or "") or _GUESS_BY_MESSAGE.get(
                    block.headers.get("Message", ""), ""
                )
                if action.lower() == "login":
                    # The first one answers the client's Login; later ones (joined captures)
                    # answer nothing this client sends.
                    part.login = part.login or block
                    current = None
                    continue
                current = Reply(action.lower(), action_id or "", [block])
                part.items.append(current)
                continue
            if current is not None and action_id == current.recorded_id:
                current.blocks.append(block)
                continue
            current = None
            part.items.append(block)
        parts.append(part)
    return parts


class Session:
    """One client session: a reader of the client's actions and a streamer of the recording."""

    def __init__(
        self,
        pbx: FakePbx,
        part: Part | None,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        last: bool,
    ) -> None:
        self.pbx = pbx
        self.last = last  # the last recorded connection: its end is the end of the replay
        self.part = part
        self.reader = reader
        self.writer = writer
        self.closed = False
        self.logged_in = asyncio.Event()
        self.progress = asyncio.Event()  # a reply was claimed: the streamer may go on
        self.id_map: dict[str, str | None] = {}  # recorded ActionID -> the client's
        self.claims: dict[int, str | None] = {}  # index of a claimed Reply -> client's id
        self.position = 0

    def send(self, data: bytes) -> None:
        if self.closed:
            return
        if self.writer.transport.is_closing():
            self.closed = True  # the client went away; writing on would only warn
            return
        self.writer.write(data)

    def abort(self) -> None:
        self.closed = True
        self.writer.transport.abort()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()
        self.writer.close()

    async def run(self) -> None:
        banner = self.part.banner if self.part else self.pbx.banner
        self.send(banner + _EOL)
        streamer = asyncio.create_task(self._stream())
        try:
            await self._read_actions()
        finally:
            streamer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await streamer
            if not self.closed:
                self.abort()

    async def _read_actions(self) -> None:
        buffer = b""
        while not self.closed:
            try:
                chunk = await self.reader.read(65536)
            except ConnectionError:
                return
            if not chunk:
                return
            buffer += chunk.replace(b"\r\n", b"\n")
            *blocks, buffer = buffer.split(b"\n\n")
            for block in blocks:
                if block.strip():
                    await self._on_action(parse_headers(block))
                if self.closed:
                    return

    async def _on_action(self, action: dict[str, str]) -> None:
        self.pbx.received_actions.append(action)
        name = action.get("Action", "").lower()
        action_id = action.get("ActionID")
        id_line = [f"ActionID: {action_id}"] if action_id is not None else []
        if name == "login":
            await self.login(action, id_line)
            return
        if name == "logoff":
            reply = self._claim("logoff", action_id, next_only=True)
            if reply is None:
                self.send(
                    build_frame("Response: Goodbye", *id_line, "Message: Thanks for all the fish.")
                )
                await self.close()
            # else the streamer sends the recorded Goodbye and closes.
            return
        if not self.logged_in.is_set():
            self.send(build_frame("Response: Error", *id_line, "Message: Permission denied"))
            return
        if name == "ping":
            self.pong(id_line)
            return
        if self._claim(name, action_id) is not None:
            return
        if name in _EMPTY_LISTS:
            message, complete = _EMPTY_LISTS[name]
            self.send(
                build_frame(
                    "Response: Success", *id_line, "EventList: start", f"Message: {message}"
                )
                + build_frame(f"Event: {complete}", *id_line, "EventList: Complete", "ListItems: 0")
            )
            return
        self.send(
            build_frame(
                "Response: Error",
                *id_line,
                f"Message: Invalid/unknown command: {action.get('Action', '')}. "
                "Use Action: ListCommands to show available commands.",
            )
        )

    def pong(self, id_line: list[str]) -> None:
        self.send(
            build_frame(
                "Response: Success", *id_line, "Ping: Pong", f"Timestamp: {time.time():.6f}"
            )
        )

    async def login(self, action: dict[str, str], id_line: list[str]) -> None:
        login = self.part.login if self.part else None
        if login is not None:
            self.send(_with_action_id(login.raw, action.get("ActionID")) + _SEP)
        else:
            self.send(
                build_frame("Response: Success", *id_line, "Message: Authentication accepted")
            )
        self.logged_in.set()

    def _claim(self, name: str, action_id: str | None, *, next_only: bool = False) -> Reply | None:
        """The first recorded reply still ahead in the stream that answers `name`."""
        if self.part is None:
            return None
        items = self.part.items
        for index in range(self.position, len(items)):
            item = items[index]
            if isinstance(item, Reply) and index not in self.claims and item.action == name:
                self.claims[index] = action_id
                self.progress.set()
                return item
            if next_only:
                return None
        return None

    async def _send_run(self, items: list[Block | Reply]) -> None:
        """Unpaced: the events up to the next reply in few large writes (the fake must
        outrun the client in benchmarks)."""
        chunk: list[bytes] = []
        size = 0
        while self.position < len(items) and size < 256 * 1024:
            item = items[self.position]
            if isinstance(item, Reply):
                break
            self.position += 1
            raw = item.raw
            if item.action_id is not None and item.action_id in self.id_map:
                raw = _with_action_id(raw, self.id_map[item.action_id])
            chunk.append(raw)
            size += len(raw)
        chunk.append(b"")
        self.send(_SEP.join(chunk))
        await self.writer.drain()  # let a slow reader push back

    async def _stream(self) -> None:
        await self.logged_in.wait()
        part = self.part
        if part is None:
            return  # an extra connection: a quiet PBX
        pace = self.pbx.pace
        last_ts: float | None = None
        items = part.items
        while self.position < len(items):
            index = self.position
            item = items[index]
            if isinstance(item, Reply):
                while index not in self.claims and self.pbx.awaits(item.action):
                    self.progress.clear()
                    await self.progress.wait()
                self.position += 1
                if index not in self.claims:
                    continue
                claimed_by = self.claims[index]
                self.id_map[item.recorded_id] = claimed_by
                self.send(b"".join(_with_action_id(b.raw, claimed_by) + _SEP for b in item.blocks))
                if item.action == "logoff":
                    await self.close()
                    break
                continue
            if pace == 0:
                await self._send_run(items)
                if self.closed:
                    return
                continue
            self.position += 1
            ts = item.ts
            if pace > 0 and ts is not None:
                if last_ts is not None and ts > last_ts:
                    await asyncio.sleep(min((ts - last_ts) * pace, self.pbx.max_gap))
                last_ts = ts
            raw = item.raw
            if item.action_id is not None and item.action_id in self.id_map:
                raw = _with_action_id(raw, self.id_map[item.action_id])
            self.send(raw + _SEP)
            if self.closed:
                return
        if self.last:
            self.pbx._finished.set()
        if part.closed_by_server:
            await self.close_as_recorded()

    async def close_as_recorded(self) -> None:
        """The recorded server closed this connection here."""
        log.info("fake PBX: end of recorded connection, closing as the server did")
        await self.close()


class FakePbx:
    """An AMI server replaying a recording; see the module docstring.

    `await_actions=True` (tests): the stream pauses at a recorded response until the client
    sends that action. `False` (demo): recorded responses nobody asked for are skipped. A set
    of action names (replay): the stream pauses only for those, the actions the client is
    known to send by itself (pbxcrm's CoreShowChannels after every login); the others are
    answered from the recording when asked for in time, else skipped.
    """

    def __init__(
        self,
        recording: bytes | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        pace: float = 0.0,
        max_gap: float = 3600.0,
        sent: bytes | Path | None = None,
        await_actions: bool | Collection[str] = True,
    ) -> None:
        if sent is None and isinstance(recording, Path):
            sibling = recording.with_name(recording.name.removesuffix(".ami") + ".sent.ami")
            if sibling.exists():
                sent = sibling
        self._recording = read_recording(recording)
        self._sent = read_recording(sent) if sent is not None else None
        self._parts = parse_recording(self._recording, self._sent)
        self.banner = self._parts[0].banner if self._parts else DEFAULT_BANNER
        self.host = host
        self.port = port
        self.pace = pace
        # Captures joined end to end have minutes between calls: a demo caps each pause.
        self.max_gap = max_gap
        self.await_actions: bool | frozenset[str] = (
            await_actions
            if isinstance(await_actions, bool)
            else frozenset(name.lower() for name in await_actions)
        )
        self.received_actions: list[dict[str, str]] = []
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        self._finished = asyncio.Event()

    def awaits(self, action: str) -> bool:
        """Whether the stream pauses at a recorded reply to `action` until the client asks."""
        if isinstance(self.await_actions, bool):
            return self.await_actions
        return action.lower() in self.await_actions

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("fake PBX listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await cancel_and_wait(list(self._sessions), "fake PBX sessions")
        if self._server is not None:
            await finish_within(self._server.wait_closed(), "closing the fake PBX listener")
            self._server = None

    async def __aenter__(self) -> FakePbx:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_finished(self, timeout: float) -> None:
        """Until the last recorded connection has been streamed (its recorded replies
        included: with await_actions=True that means until the client logged off)."""
        await asyncio.wait_for(self._finished.wait(), timeout)

    def session(
        self,
        index: int,
        part: Part | None,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> Session:
        """The session of the `index`-th connection (from 0), playing `part` of the recording."""
        return Session(self, part, reader, writer, index == len(self._parts) - 1)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = self.connections
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        parts = self._parts
        part = parts[index] if index < len(parts) else None
        connection = self.session(index, part, reader, writer)
        try:
            await connection.run()
        except ConnectionError as exc:
            log.info("fake PBX: client of connection %d went away: %s", index + 1, exc)
        except Exception:
            log.exception("fake PBX: connection %d failed", index + 1)
        finally:
            self._sessions.discard(task)
