"""Secrets in config: literal, `env:NAME` or `file:/path`, and kept out of every log line."""

from __future__ import annotations

import base64
import logging
import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, SecretStr, ValidationInfo
from pydantic_core import PydanticCustomError

_known_secrets: set[str] = set()

# The error type of a secret that cannot be read here, so `check-config` can tell it from a
# mistake in the file: the service's environment may well have what the admin's shell lacks.
SECRET_UNAVAILABLE = "secret_unavailable"
# Validation context key: "skip" leaves `env:`/`file:` references unread (a block that is
# switched off, or `check-config` summarising a file whose secrets live elsewhere).
SECRETS_CONTEXT_KEY = "secrets"


def _resolve(value: object, info: ValidationInfo | None) -> object:
    if isinstance(value, SecretStr):
        # Already read when its config block was validated (a dialect passing it on into its
        # own auth settings): reading it again would read a secret's value as a reference.
        return value
    if not isinstance(value, str):
        return value
    context = info.context if info is not None and isinstance(info.context, dict) else {}
    if context.get(SECRETS_CONTEXT_KEY) == "skip" and value.startswith(("env:", "file:")):
        return value
    if value.startswith("env:"):
        name = value[4:]
        if name not in os.environ:
            raise PydanticCustomError(
                SECRET_UNAVAILABLE, "environment variable {name} is not set", {"name": name}
            )
        value = os.environ[name]
    elif value.startswith("file:"):
        path = Path(value[5:])
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise PydanticCustomError(
                SECRET_UNAVAILABLE,
                "cannot read secret file {path}: {reason}",
                {"path": str(path), "reason": exc.strerror or "unreadable"},
            ) from None
    if len(value) >= 4:
        _known_secrets.add(value)
    return value


Secret = Annotated[SecretStr, BeforeValidator(_resolve)]
"""A config value that is a password or token: `str(secret)` prints stars."""


def known_secrets() -> frozenset[str]:
    return frozenset(_known_secrets)


class RedactSecretsFilter(logging.Filter):
    """Last line of defence: any configured secret that reaches a log record is starred."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _known_secrets:
            return True
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg = redacted
            record.args = None
        # A traceback quotes exception messages (a URL with a token, a request line): format
        # it now, starred, so formatters print this text instead of formatting it again.
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def redact(text: str) -> str:
    """`text` with every configured secret starred, as typed and in the encoded forms a secret
    takes in a request (percent-encoded, base64 inside a Basic header): the one place that
    does it, for log records, stored CRM answers and printed requests alike."""
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, "***")
    # A secret may also arrive encoded: percent-encoded in a request line, base64 inside a
    # Basic header.
    percent, base64_forms = _encoded_patterns()
    if "%" in text or "+" in text:
        for pattern in percent:
            text = pattern.sub("***", text)
    if base64_forms is not None:
        text = base64_forms.sub("***", text)
    return text


_Patterns = tuple[list[re.Pattern[str]], re.Pattern[str] | None]
_encoded_cache: tuple[frozenset[str], _Patterns] = (frozenset(), ([], None))


def _encoded_patterns() -> _Patterns:
    global _encoded_cache
    secrets = frozenset(_known_secrets)
    if secrets != _encoded_cache[0]:
        percent = [_percent_pattern(secret) for secret in secrets]
        inner = sorted({form for secret in secrets for form in _base64_inner(secret)}, key=len)
        base64_forms = (
            re.compile("|".join(re.escape(form) for form in reversed(inner))) if inner else None
        )
        _encoded_cache = (secrets, (percent, base64_forms))
    return _encoded_cache[1]


def _percent_pattern(secret: str) -> re.Pattern[str]:
    """The secret with any of its characters percent-encoded (either hex case), `+` for space."""
    parts = []
    for char in secret:
        encoded = "".join(
            "%" + "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in f"{byte:02x}")
            for byte in char.encode("utf-8")
        )
        options = [re.escape(char), encoded]
        if char == " ":
            options.append(r"\+")
        parts.append("(?:" + "|".join(options) + ")")
    return re.compile("".join(parts))


def _base64_inner(secret: str) -> list[str]:
    """The part of base64(anything + secret + anything) that depends on the secret alone, for
    each of the three alignments, in the standard and the URL-safe alphabet: what shows in
    `Authorization: Basic base64(user:password)` whatever the user name is."""
    raw = secret.encode("utf-8")
    forms = []
    for shift in range(3):
        skip = (3 - shift) % 3  # secret bytes that share a group with what comes before
        body = raw[skip:]
        whole = len(body) - len(body) % 3
        if whole < 6:
            continue  # too short to tell from chance
        encoded = base64.b64encode(body[:whole]).decode("ascii")
        forms += [encoded, encoded.replace("+", "-").replace("/", "_")]
    return forms
