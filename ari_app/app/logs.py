"""Log set-up: one line per record, text or JSON, with every configured secret starred."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

from crm.secrets import RedactSecretsFilter


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info or record.exc_text:
            # exc_text first: RedactSecretsFilter left the starred traceback there.
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
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


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactSecretsFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiohttp's access log repeats what our own per-route lines say.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
