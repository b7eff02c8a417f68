"""The one rule for links from CRM records that become clickable."""

from __future__ import annotations

import pytest

from ari_app.web.safe_links import safe_web_link


@pytest.mark.parametrize(
    "url",
    [
        "https://crm.example/contacts/42",
        "http://crm.example:8080/c?id=1#x",
        "/crm/contacts/42",
        "HTTPS://crm.example/x",
    ],
)
def test_web_addresses_and_paths_here_pass(url: str) -> None:
    assert safe_web_link(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "  javascript:alert(1)",
        "JAVASCRIPT:alert(1)",
        "vbscript:x",
        "data:text/html;base64,PHNjcmlwdD4=",
        "//evil.example/x",
        "/\\evil.example",
        "\\\\evil.example",
        "/\t/evil.example",
        "/\n/evil.example",
        "https:evil.example",
        "https:/evil.example",
        "https:\\\\evil.example",
        "https://",
        "ftp://evil.example/x",
        "https://crm.example/a b",
        "https://crm.example/\x00",
        "https://[::1",
        42,
        None,
        "",
    ],
)
def test_everything_else_is_refused(url: object) -> None:
    assert safe_web_link(url) is None


def test_3cx_gets_absolute_addresses_only() -> None:
    assert safe_web_link("/crm/contacts/42", allow_path=False) is None
    assert safe_web_link("https://crm.example/1", allow_path=False) == "https://crm.example/1"
