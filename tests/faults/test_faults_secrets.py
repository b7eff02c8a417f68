"""Secrets never reach a log line, tracebacks included, in text and JSON log formats.

The suite-wide check (tests/conftest.py) greps every log line of every test; these tests pin
the paths it found: an exception whose message quotes a token (aiohttp's "Error handling
request" quotes the whole request line, path token and query included) used to be printed
unredacted, because the filter starred only the message, not the traceback.
"""

from __future__ import annotations

import io
import json
import logging

from pydantic import TypeAdapter

from ari_app.app.logs import JsonFormatter
from crm.secrets import RedactSecretsFilter, Secret

TOKEN = "faults-token-in-a-traceback-0123"


def logged(formatter: logging.Formatter) -> str:
    TypeAdapter(Secret).validate_python(TOKEN)  # configured, as a [crm] or [http] token
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecretsFilter())
    handler.setFormatter(formatter)
    logger = logging.getLogger("faults.secrets")
    logger.addHandler(handler)
    try:
        try:
            raise ValueError(f"Invalid request line b'/webapi/{TOKEN}/makecall?x=1'")
        except ValueError:
            logger.exception("Error handling request from %s", "127.0.0.1")
        logger.warning("stack", stack_info=True, extra={"note": "stack of a call quoting it"})
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_a_traceback_quoting_a_token_is_starred_in_text_logs() -> None:
    text = logged(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    assert "Traceback" in text and "/webapi/***/makecall" in text
    assert TOKEN not in text


def test_a_traceback_quoting_a_token_is_starred_in_json_logs() -> None:
    text = logged(JsonFormatter())
    entries = [json.loads(line) for line in text.splitlines()]
    assert "/webapi/***/makecall" in entries[0]["exception"]
    assert TOKEN not in text
