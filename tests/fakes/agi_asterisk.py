"""A fake Asterisk for AGI tests: replays recorded FastAGI sessions at the wire level.

It plays Asterisk's side: sends the recorded environment bytes, then answers each command line
with the next recorded reply (an unsolicited `HANGUP` line travels with the reply after it, as
Asterisk sent them). Works over a TCP connection (FastAGI) or a subprocess's stdio (classic).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

AGI_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "asterisk" / "agi"
TIMEOUT = 5.0


@dataclass
class Recording:
    env: bytes  # the agi_* block including its blank line, byte for byte
    replies: list[bytes]  # one entry per command the recorded server sent
    sent: list[str]  # the `S:` lines of the .txt transcript


def split_replies(data: bytes) -> list[bytes]:
    replies: list[bytes] = []
    pending = b""
    usage = False
    for line in data.splitlines(keepends=True):
        pending += line
        if line.startswith(b"520-"):
            usage = True
        if line == b"HANGUP\n" or (usage and not line.startswith(b"520 ")):
            continue
        usage = False
        replies.append(pending)
        pending = b""
    assert not pending, f"dangling reply bytes {pending!r}"
    return replies


def load_recording(name: str) -> Recording:
    raw = (AGI_DIR / f"{name}.from_asterisk.raw").read_bytes()
    head, sep, rest = raw.partition(b"\n\n")
    assert sep, "recording has no end of environment"
    sent = [
        line[3:]
        for line in (AGI_DIR / f"{name}.txt").read_text().splitlines()
        if line.startswith("S: ")
    ]
    return Recording(head + sep, split_replies(rest), sent)


def with_env(env: bytes, **changes: str | None) -> bytes:
    """The recorded environment with some `agi_*` values replaced, added or (None) removed."""
    lines = env.decode().split("\n")[:-2]
    values = dict(line.split(": ", 1) if ": " in line else (line.rstrip(":"), "") for line in lines)
    for key, value in changes.items():
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value
    return "".join(f"{k}: {v}\n" for k, v in values.items()).encode() + b"\n"


@dataclass
class Conversation:
    commands: list[str] = field(default_factory=list)
    closed_by_server: bool = False  # the AGI side ended the session (EOF after its last command)


async def converse(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    env: bytes,
    replies: list[bytes],
    close_when_out_of_replies: bool = False,
) -> Conversation:
    """Send `env`, answer each command with the next reply until the AGI side closes.

    Out of replies, it either fails the test or (`close_when_out_of_replies`) closes its
    side as Asterisk does when the channel is gone, and reads on until the AGI side ends.
    """
    talk = Conversation()
    writer.write(env)
    await writer.drain()
    queue = list(replies)
    if not queue and close_when_out_of_replies:
        writer.close()
    while True:
        line = await asyncio.wait_for(reader.readline(), TIMEOUT)
        if not line:
            talk.closed_by_server = True
            return talk
        assert line.endswith(b"\n"), f"command without line end: {line!r}"
        talk.commands.append(line.decode().rstrip("\n"))
        if not queue and close_when_out_of_replies:
            writer.close()
            continue
        if not queue:
            raise AssertionError(f"no reply left for {talk.commands[-1]!r}; sent {talk.commands}")
        try:
            writer.write(queue.pop(0))
            await writer.drain()
        except (ConnectionError, OSError):
            return talk


async def fastagi_session(
    port: int, env: bytes, replies: list[bytes], host: str = "127.0.0.1"
) -> Conversation:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        return await converse(reader, writer, env, replies)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass


def asterisk_parse_args(line: str) -> list[str]:
    """Asterisk's res_agi.c parse_args(), ported: how Asterisk splits one command line.

    `"` toggles quoting (and starts a word after whitespace), `\\` makes the next character
    literal, space/tab end a word outside quotes.
    """
    argv: list[str] = []
    current: list[str] | None = None
    quoted = escaped = False
    for char in line:
        if char == '"' and not escaped:
            quoted = not quoted
            if quoted and current is None:
                current = []
            continue
        if char in " \t" and not quoted and not escaped:
            if current is not None:
                argv.append("".join(current))
                current = None
            continue
        if char == "\\" and not escaped:
            escaped = True
            continue
        if current is None:
            current = []
        current.append(char)
        escaped = False
    if current is not None:
        argv.append("".join(current))
    return argv
