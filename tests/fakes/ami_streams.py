"""AMI streams for benchmarks and soak tests, made from the recorded calls."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from ari_app.app.fake_pbx import DEFAULT_BANNER, Block, parse_recording, read_recording

_EOL = b"\r\n"
_SEP = b"\r\n\r\n"

_UNIQUEID_LINE = re.compile(
    rb"(?m)^(Uniqueid|Linkedid|DestUniqueid|DestLinkedid|BridgeUniqueid|BridgeId|BridgeID): "
    rb"([^\r\n]*)"
)
_CHANNEL_SUFFIX = re.compile(rb"(/[\w.+@-]*?-)([0-9a-f]{8})(?![0-9a-f])")


def replicate(recording: bytes | Path | Sequence[bytes | Path], copies: int) -> bytes:
    """One AMI stream holding `copies` copies of the recordings' events, each copy with its
    own Uniqueids, Linkedids, bridge ids and channel names, so that a tracker sees
    `copies` times as many distinct calls (benchmarks). Banner and login response come from
    the first recording; responses to other actions and `Shutdown` events are dropped; ends
    with `Response: Goodbye`.
    """
    sources = [recording] if isinstance(recording, bytes | Path) else list(recording)
    events: list[bytes] = []
    banner = DEFAULT_BANNER
    login = b"Response: Success\r\nActionID: login-1\r\nMessage: Authentication accepted"
    for n, source in enumerate(sources):
        for k, part in enumerate(parse_recording(read_recording(source), None)):
            if n == 0 and k == 0:
                banner = part.banner
                if part.login is not None:
                    login = part.login.raw
            # A Shutdown in the middle of a benchmark stream would make clients reconnect.
            events.extend(
                item.raw
                for item in part.items
                if isinstance(item, Block) and item.headers.get("Event") != "Shutdown"
            )
    body = b"".join(block + _SEP for block in events)
    out = [banner + _EOL, login + _SEP]
    for copy in range(copies):

        def rewrite_id(match: re.Match[bytes], copy: int = copy) -> bytes:
            return match.group(1) + b": " + _new_id(match.group(2), copy)

        def rewrite_channel(match: re.Match[bytes], copy: int = copy) -> bytes:
            number = int(match.group(2), 16) + copy * 0x10000
            return match.group(1) + b"%08x" % (number & 0xFFFFFFFF)

        out.append(_CHANNEL_SUFFIX.sub(rewrite_channel, _UNIQUEID_LINE.sub(rewrite_id, body)))
    out.append(b"Response: Goodbye\r\nActionID: logoff-1\r\nMessage: Thanks for all the fish.")
    out.append(_SEP)
    return b"".join(out)


def _new_id(value: bytes, copy: int) -> bytes:
    if copy == 0 or not value:
        return value
    epoch, dot, seq = value.partition(b".")
    if dot and epoch.isdigit() and seq.isdigit():
        return epoch + b"." + str(int(seq) + copy * 100000).encode()
    if len(value) == 36 and value.count(b"-") == 4:  # a bridge uuid
        return b"%08x" % copy + value[8:]
    return value + b"-" + str(copy).encode()
