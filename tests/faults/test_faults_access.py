"""Wrong credentials are compared in constant time: every comparison of a presented token or
password with a configured one goes through `hmac.compare_digest`, against every client (no
early exit on the first mismatch or the first match), whatever the presented value's length.
"""

from __future__ import annotations

import hmac

import pytest

from ari_app.web import auth
from ari_app.web.auth import Presented, match_client
from tests.test_http_support import CRM_TOKEN, FIX_PASSWORD, FIX_USER, make_settings


@pytest.mark.parametrize(
    "presented",
    [
        Presented("header_token", token=CRM_TOKEN),  # right
        Presented("header_token", token=CRM_TOKEN[:-1] + "x"),  # one character off
        Presented("header_token", token="x"),  # short
        Presented("header_token", token="y" * 10_000),  # long
        Presented("basic", username=FIX_USER, password=FIX_PASSWORD + "!"),
    ],
)
def test_every_credential_comparison_is_compare_digest_over_equal_length_digests(
    tmp_path, monkeypatch: pytest.MonkeyPatch, presented: Presented
) -> None:
    clients = make_settings(tmp_path).http.clients
    calls: list[tuple[int, int]] = []
    original = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return original(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    match_client(clients, [presented])
    with_tokens = sum(1 for c in clients if c.token is not None)
    with_passwords = sum(1 for c in clients if c.password is not None)
    expected = with_tokens if presented.token is not None else 2 * with_passwords
    assert len(calls) == expected  # every client of that kind, match or not
    assert all(a == b == 32 for a, b in calls)  # SHA-256 digests: the length leaks nothing
