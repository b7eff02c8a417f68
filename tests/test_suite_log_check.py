"""The suite-wide secrets check (tests/conftest.py) can fail: it sees records raw, before any
redaction, and finds a secret percent-encoded or inside a base64 token, not only as typed."""

from __future__ import annotations

import base64
import logging
import urllib.parse
from pathlib import Path

from pydantic import TypeAdapter

from crm.secrets import Secret
from tests.conftest import SuiteLogs, leaks

SECRET = "s3cr+t/with:odd chars"
SECRETS = frozenset({SECRET})
RAW_SECRET = "planted-raw-secret-7731"


def test_a_secret_in_a_basic_auth_header_is_found() -> None:
    header = base64.b64encode(f"crm:{SECRET}".encode()).decode()
    assert leaks([f"GET /x Authorization: Basic {header}"], SECRETS)


def test_a_percent_encoded_secret_is_found() -> None:
    assert leaks([f"POST /login?password={urllib.parse.quote(SECRET, safe='')}"], SECRETS)
    assert leaks([f"body: user=crm&password={urllib.parse.quote_plus(SECRET)}"], SECRETS)


def test_a_line_without_the_secret_is_clean() -> None:
    assert (
        leaks(["AMI connected to 127.0.0.1:5038 as crm (Asterisk Call Manager/11.0.0)"], SECRETS)
        == []
    )


def test_the_suite_handler_records_what_the_code_logged_unredacted(tmp_path: Path) -> None:
    # Configured (the production filter would star it); logged on a logger that does not
    # reach the suite's own handler, so this test's planted leak fails nothing else.
    TypeAdapter(Secret).validate_python(RAW_SECRET)
    logs = SuiteLogs(tmp_path / "suite.log")
    logger = logging.getLogger("tests.suite_log_check")
    logger.propagate = False
    logger.addHandler(logs)
    try:
        logger.error("login failed with secret %s", RAW_SECRET)
    finally:
        logger.removeHandler(logs)
        logger.propagate = True
        logs.close()
    assert leaks(logs.take_test_lines(), frozenset({RAW_SECRET}))
