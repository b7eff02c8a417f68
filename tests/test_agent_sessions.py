"""Screen-pop sign-in bookkeeping without HTTP: lockouts and their memory bound."""

from __future__ import annotations

import pytest

from ari_app.http.agent_sessions import AgentSessions, SignInRefused
from ari_app.http.agent_settings import AgentSettings

PIN = "493817"


def sessions(now: list[float]) -> AgentSessions:
    settings = AgentSettings.model_validate(
        {"agents": [{"extension": "7181", "pin": PIN}], "max_failures": 3, "lockout_seconds": 60}
    )
    return AgentSessions(settings, clock=lambda: now[0])


def test_made_up_extensions_and_addresses_do_not_grow_the_failure_table_forever() -> None:
    now = [0.0]
    board = sessions(now)
    for n in range(5_000):
        now[0] += 0.01
        with pytest.raises(SignInRefused):
            board.sign_in(f"x{n}", "000000", f"10.1.{n // 250}.{n % 250}")
    # Made-up extensions are not counted per extension: only the 5,000 addresses are.
    assert board.failure_keys == 5_000
    now[0] += 61  # past the lockout window: the next sign-in forgets them all
    with pytest.raises(SignInRefused):
        board.sign_in("x", "000000", "10.9.9.9")
    assert board.failure_keys == 1


def test_a_configured_extension_is_still_locked_out_from_any_address() -> None:
    now = [0.0]
    board = sessions(now)
    for n in range(3):
        with pytest.raises(SignInRefused) as refused:
            board.sign_in("7181", "000000", f"10.0.0.{n}")
        assert refused.value.status == 401
    with pytest.raises(SignInRefused) as refused:
        board.sign_in("7181", PIN, "10.0.0.99")  # right PIN, new address: still locked
    assert refused.value.status == 429
    now[0] += 61
    assert board.sign_in("7181", PIN, "10.0.0.99").extension == "7181"


def test_one_address_keeps_only_its_newest_failures() -> None:
    now = [0.0]
    board = sessions(now)
    for _ in range(2):
        with pytest.raises(SignInRefused):
            board.sign_in("7181", "000000", "10.0.0.1")
    for _ in range(50):
        with pytest.raises(SignInRefused):
            board.sign_in(None, "not-a-token", "10.0.0.2")
    assert len(board._failures["ip:10.0.0.2"]) == 3  # max_failures, not 50
