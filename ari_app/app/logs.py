"""Log set-up: one line per record, text or JSON, with every configured secret starred."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from datetime import UTC, datetime
from typing import TextIO

from crm.secrets import RedactSecretsFilter


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        # exc_text first: RedactSecretsFilter left the starred traceback there.
        if record.exc_text:
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}
# Line breaks a log viewer may honour besides CR and LF, and the other control characters.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\\]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _ESCAPES:
        return _ESCAPES[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def one_line(text: str) -> str:
    """`text` with every line break and control character escaped (`\\n`, `\\x1b` ...)."""
    return _UNSAFE.sub(_escape, text)


class TextFormatter(logging.Formatter):
    """One physical line per record: a value from a request holding a newline cannot start a
    line that looks like a record of its own (log forging). A traceback keeps its lines, each
    indented, so every line that starts at column 0 starts a real record."""

    _second: int = -1
    _second_text: str = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        # A busy PBX logs a line per call step, many a second: strftime once a second.
        second = int(record.created)
        if second != self._second:
            self._second_text = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        # None is the base class's way to leave the milliseconds out.
        if self.default_msec_format is None:
            return self._second_text
        return self.default_msec_format % (self._second_text, record.msecs)

    def formatMessage(self, record: logging.LogRecord) -> str:
        original = record.message
        record.message = one_line(original)
        try:
            return super().formatMessage(record)
        finally:
            record.message = original

    def format(self, record: logging.LogRecord) -> str:
        first, *rest = super().format(record).split("\n")
        return "\n".join([first, *("    " + line for line in rest)])


class LoopBatchedStreamHandler(logging.StreamHandler[TextIO]):
    """A stream handler that writes the lines of one event-loop turn with one write.

    A busy PBX makes a line per call step, hundreds per loop turn: a write (a system call)
    each was a tenth of the ingest path. Lines logged on the loop's thread are written once
    the turn ends, in the order they were logged; a WARNING or worse, a line from another
    thread or from outside a loop is written at once, after whatever is waiting, so what
    matters is never held back and the order is kept.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        self._flush_scheduled = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self._lines.append(line)
        if record.levelno < logging.WARNING and self._later():
            return
        self.flush()

    def _later(self) -> bool:
        """Whether the waiting lines will be written at the end of this loop turn."""
        if self._flush_scheduled:
            return True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        loop.call_soon(self.flush)
        self._flush_scheduled = True
        return True

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._flush_scheduled = False
            lines, self._lines = self._lines, []
            try:
                if lines:
                    self.stream.write("".join(lines))
                if hasattr(self.stream, "flush"):
                    self.stream.flush()
            except Exception:
                # A batch has no one record to blame: report it the way logging reports any.
                self.handleError(
                    logging.makeLogRecord({"msg": "writing %d log lines", "args": (len(lines),)})
                )

    def setStream(self, stream: TextIO) -> TextIO | None:
        self.flush()
        return super().setStream(stream)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    # Neither format prints the caller's file and line, thread or process: not collecting
    # them saves a frame walk and three lookups per record (the logging HOWTO's advice).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = LoopBatchedStreamHandler(sys.stderr)
    handler.addFilter(RedactSecretsFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        old.flush()
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiohttp's access log repeats what our own per-route lines say.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
