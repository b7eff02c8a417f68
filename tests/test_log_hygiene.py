"""What reaches pbxcrm's text log: one line per record whatever a request held, and no secret in
any encoding (plain, percent-encoded in a request line, base64 inside a Basic header)."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import re
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from ari_app.app.logs import setup_logging
from ari_app.web.deps import HttpDeps
from tests.test_http_support import (
    CREATIO_TOKEN,
    FIX_PASSWORD,
    FIX_USER,
    make_settings,
    running,
)

RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")


@pytest.fixture
def text_log() -> Iterator[io.StringIO]:
    """The handler `pbxcrm run` installs (setup_logging, text format), writing to a buffer;
    the test suite's own handlers are put back afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    setup_logging("DEBUG", "text")
    (handler,) = root.handlers
    buffer = io.StringIO()
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    try:
        yield buffer
    finally:
        for added in list(root.handlers):
            root.removeHandler(added)
        for old in saved_handlers:
            root.addHandler(old)
        root.setLevel(saved_level)
        logging.getLogger("aiohttp.access").setLevel(logging.NOTSET)


def test_a_value_with_newlines_cannot_forge_a_log_record(text_log: io.StringIO) -> None:
    forged = "101\n2026-12-04 00:00:00,000 INFO pbxcrm.audit: originate id=x client=admin\r\x1b[2K"
    logging.getLogger("pbxcrm.agent").info("screen pop: extension %s signed in", forged)
    lines = text_log.getvalue().splitlines()
    assert len(lines) == 1
    assert "\\n2026-12-04 00:00:00,000 INFO pbxcrm.audit" in lines[0]
    assert "\\r\\x1b[2K" in lines[0]


def test_a_traceback_keeps_its_lines_but_none_starts_like_a_record(text_log: io.StringIO) -> None:
    try:
        raise ValueError("bad value\n2026-12-04 00:00:00,000 INFO pbxcrm: forged")
    except ValueError:
        logging.getLogger("pbxcrm").exception("handler failed")
    lines = text_log.getvalue().splitlines()
    assert len(lines) > 3 and "Traceback" in lines[1]
    assert [line for line in lines if RECORD_START.match(line)] == [lines[0]]


def test_a_secret_in_base64_or_percent_encoded_is_starred(tmp_path, text_log: io.StringIO) -> None:
    make_settings(tmp_path)  # configures (and so registers) the secrets
    make_settings_secrets = (CREATIO_TOKEN, FIX_PASSWORD)
    basic = base64.b64encode(f"{FIX_USER}:{FIX_PASSWORD}".encode()).decode()
    urlsafe = base64.urlsafe_b64encode(f"x:{CREATIO_TOKEN}".encode()).decode()
    encoded = quote(CREATIO_TOKEN, safe="").replace("c", "%63").replace("t", "%74")
    log = logging.getLogger("pbxcrm.http")
    log.warning("header Authorization: Basic %s", basic)
    log.warning("token in a query: %s", urlsafe)
    log.warning("request line GET /webapi/%s/makecall", encoded)
    log.warning("request line GET /webapi/%s/makecall", encoded.lower())
    text = text_log.getvalue()
    for leaked in (basic, urlsafe, encoded, encoded.lower(), *make_settings_secrets):
        assert leaked not in text
    assert text.count("***") >= 4


async def test_a_token_percent_encoded_in_a_refused_request_line_is_starred(
    tmp_path, text_log: io.StringIO
) -> None:
    encoded = "".join(f"%{ord(c):02X}" for c in CREATIO_TOKEN)
    async with running(HttpDeps(settings=make_settings(tmp_path))) as server:
        port = int(server.base.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # A control character in the path: aiohttp refuses the line and logs it, quoted.
        writer.write(f"GET /webapi/{encoded}/makecall\x01 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        assert (await reader.read()).startswith(b"HTTP/1.0 400")
        writer.close()
    text = text_log.getvalue()
    assert "Invalid char in url path" in text  # the line aiohttp logs is there ...
    assert encoded not in text and CREATIO_TOKEN not in text  # ... with the token starred
    # Starred as a whole, or piece by piece where other tests' secrets (registered process-wide
    # by then) overlap it: either way the request line is kept around the stars.
    [line] = [row for row in text.splitlines() if "/makecall" in row and "/webapi/" in row][:1]
    assert "***" in line


async def test_a_token_in_an_overlong_request_line_is_starred_in_the_raw_record(
    tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp logs a too-long request line with its traceback: the record itself (what any
    handler an admin adds would read) carries no token, not only pbxcrm's own output."""
    caplog.set_level(logging.DEBUG)
    async with running(HttpDeps(settings=make_settings(tmp_path))) as server:
        port = int(server.base.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        path = f"/{CREATIO_TOKEN}/recording/{'9' * 9000}"
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        assert (await reader.read()).startswith(b"HTTP/1.0 400")
        writer.close()
    refused = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert refused, "aiohttp logged nothing for the refused line"
    for record in refused:
        text = record.getMessage() + (record.exc_text or "")
        assert CREATIO_TOKEN not in text
