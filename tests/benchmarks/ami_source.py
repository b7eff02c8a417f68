"""The load side of the AMI benchmarks: an AMI server on 127.0.0.1 that streams a built stream.

The banner and the Login response are the recorded ones; replies the recordings do not hold are
built the way `ari_app.app.fake_pbx` builds them from Asterisk 22's manager.c (Ping, an empty
CoreShowChannels list, Logoff), and an Originate is answered as recorded in
`click_to_call_originate.ami` (`Response: Success`, `Message: Originate successfully queued`).

Modes: `blast` writes the whole stream as fast as the client reads it (throughput); `paced`
sends `rate` frames a second and notes when chosen frames were written (latency).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.benchmarks.streams import CALL_SCENARIOS, SEP, Stream, build_stream
from tests.benchmarks.worker import Link, role

CHUNK_BYTES = 256 * 1024


def _frame(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("utf-8", "replace").split("\r\n"):
        key, sep, value = line.partition(": ")
        if sep:
            headers.setdefault(key, value)
    return headers


def _with_action_id(block: bytes, action_id: str | None) -> bytes:
    lines = [line for line in block.split(b"\r\n") if not line.startswith(b"ActionID:")]
    if action_id is not None:
        lines.insert(1, b"ActionID: " + action_id.encode())
    return b"\r\n".join(lines)


class AmiLoadServer:
    """Streams `stream` to the first client that logs in; later clients get a quiet PBX."""

    def __init__(
        self,
        stream: Stream,
        *,
        mode: str = "blast",
        rate: float = 0.0,
        marks: set[int] | None = None,
    ) -> None:
        self.stream = stream
        self.mode = mode
        self.rate = rate
        self.marks = marks or set()
        self.mark_times: dict[int, float] = {}  # frame index -> monotonic time written
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.finished = asyncio.Event()
        self.originates = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._streaming = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in list(self._writers):
            writer.close()  # the session handlers then see end of stream and return
        await asyncio.sleep(0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        writer.write(self.stream.banner + b"\r\n")
        buffer = b""
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                buffer += chunk.replace(b"\r\n", b"\n")
                *blocks, buffer = buffer.split(b"\n\n")
                for block in blocks:
                    if block.strip() and not self._on_action(
                        _headers(block.replace(b"\n", b"\r\n")), writer
                    ):
                        writer.close()
                        return
        except ConnectionError:
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    def _on_action(self, action: dict[str, str], writer: asyncio.StreamWriter) -> bool:
        name = action.get("Action", "").lower()
        action_id = action.get("ActionID")
        id_line = [f"ActionID: {action_id}"] if action_id is not None else []
        if name == "login":
            writer.write(_with_action_id(self.stream.login, action_id) + SEP)
            if not self._streaming:
                self._streaming = True
                task = asyncio.create_task(self._send_stream(writer))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        elif name == "ping":
            writer.write(
                _frame("Response: Success", *id_line, "Ping: Pong", f"Timestamp: {time.time():.6f}")
            )
        elif name == "coreshowchannels":
            writer.write(
                _frame(
                    "Response: Success",
                    *id_line,
                    "EventList: start",
                    "Message: Channels will follow",
                )
                + _frame(
                    "Event: CoreShowChannelsComplete",
                    *id_line,
                    "EventList: Complete",
                    "ListItems: 0",
                )
            )
        elif name == "originate":
            self.originates += 1
            writer.write(
                _frame("Response: Success", *id_line, "Message: Originate successfully queued")
            )
        elif name == "logoff":
            writer.write(_frame("Response: Goodbye", *id_line, "Message: Thanks for all the fish."))
            return False
        else:
            writer.write(
                _frame(
                    "Response: Error",
                    *id_line,
                    f"Message: Invalid/unknown command: {action.get('Action', '')}. "
                    "Use Action: ListCommands to show available commands.",
                )
            )
        return True

    async def _send_stream(self, writer: asyncio.StreamWriter) -> None:
        try:
            if self.mode == "paced":
                await self._paced(writer)
            else:
                await self._blast(writer)
        except ConnectionError:
            pass
        finally:
            self.finished_at = time.monotonic()
            self.finished.set()

    async def _blast(self, writer: asyncio.StreamWriter) -> None:
        frames = self.stream.frames
        self.started_at = time.monotonic()
        chunk: list[bytes] = []
        size = 0
        for frame in frames:
            chunk.append(frame)
            size += len(frame) + 4
            if size >= CHUNK_BYTES:
                chunk.append(b"")
                writer.write(SEP.join(chunk))
                await writer.drain()
                chunk, size = [], 0
        if chunk:
            chunk.append(b"")
            writer.write(SEP.join(chunk))
        await writer.drain()

    async def _paced(self, writer: asyncio.StreamWriter) -> None:
        """An open loop: frame i goes out at start + i/rate, whatever the client does."""
        frames = self.stream.frames
        marks = self.marks
        start = self.started_at = time.monotonic()
        sent = 0
        while sent < len(frames):
            due = min(len(frames), int((time.monotonic() - start) * self.rate) + 1)
            if due > sent:
                batch = frames[sent:due]
                now = time.monotonic()
                for index in range(sent, due):
                    if index in marks:
                        self.mark_times[index] = now
                writer.write(SEP.join(batch) + SEP)
                sent = due
            # The generator's clock tick; pacing, not waiting for a condition.
            next_at = start + sent / self.rate
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))


def stream_from_args(args: dict[str, Any]) -> Stream:
    return build_stream(
        int(args["copies"]),
        interleave=int(args.get("interleave", 1)),
        scenarios=tuple(args.get("scenarios") or CALL_SCENARIOS),
        open_calls_only=bool(args.get("open_calls_only", False)),
    )


@role("ami_source")
async def ami_source(link: Link, args: dict[str, Any]) -> dict[str, Any]:
    """Serve the stream until told to stop; reports when it started and finished writing."""
    stream = stream_from_args(args)
    server = AmiLoadServer(stream, mode=args.get("mode", "blast"), rate=float(args.get("rate", 0)))
    await server.start()
    link.send(ready={"port": server.port, "frames": len(stream.frames)})
    await link.command()  # stop
    await server.stop()
    return {
        "started_at": server.started_at,
        "finished_at": server.finished_at,
        "originates": server.originates,
    }


async def wait_until(condition: Any, timeout: float, interval: float = 0.005) -> None:
    """Poll `condition()` until true; TimeoutError after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(interval)
