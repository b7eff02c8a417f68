"""Malformed requests get a 4xx that says what is wrong, never a 500 with a logged traceback."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from ari_app.web.deps import HttpDeps
from crm.store.sqlite import Store
from tests.test_http_support import (
    RecordedAmiBackend,
    Server,
    basic,
    bearer,
    make_service,
    make_settings,
    running,
)

# Far deeper than Python's recursion limit, well inside max_body_bytes.
DEEP_ARRAY = b"[" * 20_000 + b"]" * 20_000
DEEP_IN_OBJECT = b'{"extension": "101", "number": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
FORM = "application/x-www-form-urlencoded"


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


CASES = [
    pytest.param(
        "POST",
        "/api/v1/originate",
        {"Content-Type": "application/json"},
        DEEP_ARRAY,
        400,
        id="deep-json-array",
    ),
    pytest.param(
        "POST",
        "/api/v1/originate",
        {"Content-Type": "application/json"},
        DEEP_IN_OBJECT,
        400,
        id="deep-json-in-object",
    ),
    pytest.param(
        "POST",
        "/3cx/crm/journal",
        {"Content-Type": "application/json"},
        DEEP_ARRAY,
        400,
        id="deep-json-3cx",
    ),
    pytest.param(
        "POST",
        "/api/v1/originate",
        {"Content-Type": "application/json; charset=x-no-such-charset"},
        b'{"extension": "101"}',
        400,
        id="unknown-charset-json",
    ),
    pytest.param(
        "POST",
        "/fixdigital/makecall",
        {"Content-Type": FORM + "; charset=x-no-such-charset"},
        b"sExt=101&sNumber=89161234567",
        400,
        id="unknown-charset-form",
    ),
    pytest.param(
        "POST",
        "/3cx/query",
        {"Content-Type": FORM + "; charset=x-no-such-charset"},
        b"cid=89161234567",
        400,
        id="unknown-charset-3cx-form",
    ),
    pytest.param(
        "POST",
        "/fixdigital/makecall",
        {"Content-Type": "multipart/form-data; boundary=xyz"},
        b"--xyz\r\nContent-Disposition: form-data\r\n\r\nbroken",
        400,
        id="broken-multipart",
    ),
    pytest.param(
        "POST",
        "/fixdigital/makecall",
        {"Content-Type": "multipart/form-data"},
        b"no boundary at all",
        400,
        id="multipart-without-boundary",
    ),
    pytest.param(
        "GET",
        "/api/v1/calls",
        {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:\xfd\xfc").decode()},
        None,
        401,
        id="basic-not-utf8",
    ),
    pytest.param(
        "GET",
        "/api/v1/calls",
        {"Authorization": "Basic \u00ff\u00fe=="},
        None,
        401,
        id="basic-not-ascii",
    ),
    pytest.param(
        "GET",
        "/api/v1/calls?number=89161234567&cursor=" + _cursor("[1" + "0" * 330 + ', "lab", "x"]'),
        {},
        None,
        422,
        id="overlong-cursor-number",
    ),
    pytest.param(
        "GET",
        "/api/v1/calls?number=89161234567&cursor=" + _cursor('[NaN, "lab", "x"]'),
        {},
        None,
        422,
        id="nan-cursor-number",
    ),
]


@asynccontextmanager
async def _server(tmp_path) -> AsyncIterator[Server]:
    settings = make_settings(tmp_path)
    store = await Store.open(settings.store)
    service = make_service(settings, RecordedAmiBackend("click_to_call_originate"))
    try:
        async with running(
            HttpDeps(settings=settings, store=store, originate_service=service)
        ) as server:
            yield server
    finally:
        await service.close()
        await store.close()


@pytest.mark.parametrize(("method", "path", "headers", "body", "status"), CASES)
async def test_malformed_input_is_a_client_error_not_a_500(
    tmp_path, caplog, method, path, headers, body, status
):
    caplog.set_level(logging.WARNING)
    creds = basic() if path.startswith("/fixdigital") else bearer()
    async with _server(tmp_path) as server:
        async with server.session.request(
            method, server.url(path), data=body, headers={**creds, **headers}
        ) as resp:
            assert resp.status == status, await resp.text()
            assert "error" in await resp.json() or (await resp.json()).get("success") is False
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
