"""Classic AGI handed to the running daemon: the call's stdin/stdout relayed to its FastAGI port.

A classic AGI process is started for every call. Importing the scripts' stack (asyncio,
pydantic, aiohttp, phonenumbers, the lookup chain) costs about ten bare pyst2 scripts; a
relay that only needs a socket costs about one, and the daemon already holds the lookup cache,
the HTTP connections to the CRM and the outbox a survey rating goes to. So `pbxcrm-agi` first
offers the session to `pbxcrm run`'s FastAGI listener and runs the script itself only when
nobody answers there.

Stdlib only, imported on every call: keep it that way.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
from collections.abc import Sequence

CONNECT_TIMEOUT_SECONDS = 1.0
# Asterisk sends ~25 environment lines; anything larger is not an AGI environment, and the
# in-process driver gives the admin the precise error for it.
MAX_ENV_BYTES = 64 * 1024
_CHUNK = 64 * 1024
# The lines that make an environment a FastAGI one; the classic ones are replaced.
_REPLACED = (b"agi_network:", b"agi_network_script:", b"agi_arg_")


def read_environment(stdin_fd: int) -> bytes:
    """Everything Asterisk sent up to and including the blank line that ends `agi_*` (or EOF)."""
    data = b""
    while b"\n\n" not in data and len(data) < MAX_ENV_BYTES:
        chunk = os.read(stdin_fd, _CHUNK)
        if not chunk:
            break
        data += chunk
    return data


def looks_like_environment(data: bytes) -> bool:
    """A cheap shape check; the daemon (or the in-process driver) parses it for real."""
    head, sep, _ = data.partition(b"\n\n")
    lines = head.split(b"\n")
    return bool(sep and head) and all(line.startswith(b"agi_") and b":" in line for line in lines)


def fastagi_environment(classic: bytes, script: str, args: Sequence[str]) -> bytes:
    """The classic environment as FastAGI sends it: script name and its args from our argv.

    Classic AGI's `agi_arg_N` are the program's own argv (the script name first); FastAGI's
    are the script's arguments. A line break in an argument would end the line and start a
    forged one, so control characters become a space, as agi.protocol.quote_arg does.
    """
    head, _, rest = classic.partition(b"\n\n")
    lines = [line for line in head.split(b"\n") if not line.startswith(_REPLACED)]
    lines += [b"agi_network: yes", b"agi_network_script: " + _field(script)]
    lines += [b"agi_arg_%d: %s" % (n, _field(arg)) for n, arg in enumerate(args, start=1)]
    return b"\n".join(lines) + b"\n\n" + rest


def _field(text: str) -> bytes:
    return bytes(b if b >= 0x20 and b != 0x7F else 0x20 for b in os.fsencode(text))


def connect(host: str, port: int) -> socket.socket | None:
    """The daemon's FastAGI listener, or None when nothing answers there (daemon down)."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    try:
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_SECONDS)
    except OSError:
        return None
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Relay:
    """Bytes both ways until the daemon ends the session; SIGHUP becomes a `HANGUP` line.

    Asterisk tells a classic AGI of a hang-up with SIGHUP and a FastAGI one with a `HANGUP`
    line (res_agi.c run_agi), so the daemon learns of it the way it expects. The line goes in
    only between two lines from Asterisk, never inside one.
    """

    def __init__(self, sock: socket.socket, stdin_fd: int, stdout_fd: int) -> None:
        self._sock = sock
        self._stdin_fd = stdin_fd
        self._stdout_fd = stdout_fd
        self._hangup_pending = False
        self._hangup_sent = False
        self._mid_line = False  # the last bytes forwarded from Asterisk did not end a line
        self.answered = False  # the daemon sent at least one byte (a command)

    def _on_sighup(self, signum: int, frame: object) -> None:
        self._hangup_pending = True

    def run(self) -> None:
        wake_read, wake_write = socket.socketpair()
        wake_read.setblocking(False)
        wake_write.setblocking(False)
        previous_handler = signal.signal(signal.SIGHUP, self._on_sighup)
        previous_fd = signal.set_wakeup_fd(wake_write.fileno(), warn_on_full_buffer=False)
        # poll, not epoll: epoll refuses a regular file as stdin (a recorded session replayed
        # from a file), poll reports it readable.
        selector = selectors.PollSelector()
        try:
            selector.register(self._sock, selectors.EVENT_READ, "daemon")
            selector.register(self._stdin_fd, selectors.EVENT_READ, "asterisk")
            selector.register(wake_read, selectors.EVENT_READ, "signal")
            self._loop(selector, wake_read)
        finally:
            selector.close()
            signal.set_wakeup_fd(previous_fd)
            signal.signal(signal.SIGHUP, previous_handler)
            wake_read.close()
            wake_write.close()

    def _loop(self, selector: selectors.BaseSelector, wake_read: socket.socket) -> None:
        stdout_open = True
        while True:
            for key, _ in selector.select():
                if key.data == "signal":
                    try:
                        while wake_read.recv(64):
                            pass
                    except BlockingIOError:
                        pass
                elif key.data == "daemon":
                    try:
                        data = self._sock.recv(_CHUNK)
                    except OSError:
                        data = b""
                    if not data:
                        return  # the script ended (or the daemon went away)
                    self.answered = True
                    if stdout_open:
                        stdout_open = self._write_stdout(data)
                else:
                    data = os.read(self._stdin_fd, _CHUNK)
                    if not data:
                        # Asterisk closed the pipe: the daemon reads end of stream as a
                        # hang-up and ends the script; its last writes go nowhere.
                        selector.unregister(self._stdin_fd)
                        self._send_hangup_if_due()
                        self._shutdown_write()
                        continue
                    self._send_hangup_if_due()
                    self._forward(data)
            self._send_hangup_if_due()

    def _forward(self, data: bytes) -> None:
        # Only whole lines may be followed by a HANGUP line.
        start = 0
        if self._hangup_pending and not self._hangup_sent and self._mid_line:
            end = data.find(b"\n")
            if end >= 0:
                self._send(data[: end + 1])
                self._mid_line = False
                self._send_hangup_if_due()
                start = end + 1
        if start < len(data):
            self._send(data[start:])
            self._mid_line = not data.endswith(b"\n")

    def _send_hangup_if_due(self) -> None:
        if self._hangup_pending and not self._hangup_sent and not self._mid_line:
            self._hangup_sent = True
            self._send(b"HANGUP\n")

    def _send(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError:
            pass  # the daemon closed; the next read returns end of stream

    def _shutdown_write(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _write_stdout(self, data: bytes) -> bool:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._stdout_fd, view) :]
        except OSError:  # EPIPE: Asterisk is gone; the daemon finds out from stdin's end
            return False
        return True


def relay(sock: socket.socket, environment: bytes, stdin_fd: int = 0, stdout_fd: int = 1) -> bool:
    """Run the session through the daemon; False if it closed before sending any command.

    A daemon that closes at once (too many sessions, shutting down, a script it does not
    know) has done nothing to the channel, so the caller can still run the script itself.
    """
    with sock:
        try:
            sock.sendall(environment)
        except OSError:
            return False
        session = Relay(sock, stdin_fd, stdout_fd)
        session.run()
        return session.answered
