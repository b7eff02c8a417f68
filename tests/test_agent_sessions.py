"""Screen-pop sign-in bookkeeping without HTTP: lockouts, their memory bound, and sessions
saved and taken back across a restart."""

from __future__ import annotations

import pytest

from ari_app.agent.sessions import AgentSessions, SignInRefused
from ari_app.agent.settings import AgentSettings

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
    assert board.sign_in("7181", PIN, "10.0.0.99")[0].extension == "7181"


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


def test_saved_sessions_come_back_after_a_restart_without_the_cookie_ever_being_saved() -> None:
    now = [1_795_000_000.0]
    before = sessions(now)
    changes: list[str] = []
    before.on_change = lambda: changes.append(before.dump())
    session, cookie = before.sign_in("7181", PIN, "10.0.0.1")
    saved = changes[-1]
    assert cookie not in saved and session.key in saved

    after = sessions(now)
    assert after.load(saved) == 1
    assert after.get(cookie) == session
    assert after.get("another-cookie") is None
    after.sign_out(cookie)
    assert after.get(cookie) is None


def test_expired_and_unconfigured_sessions_and_damaged_blobs_are_not_taken_back() -> None:
    now = [1_795_000_000.0]
    before = sessions(now)
    _, cookie = before.sign_in("7181", PIN, "10.0.0.1")
    saved = before.dump()
    now[0] += 12 * 3600 + 1  # session_hours defaults to 12
    assert sessions(now).load(saved) == 0
    now[0] -= 12 * 3600
    other = AgentSessions(
        AgentSettings.model_validate({"agents": [{"extension": "7070", "pin": PIN}]}),
        clock=lambda: now[0],
    )
    assert other.load(saved) == 0 and other.get(cookie) is None  # 7181 was removed
    for damaged in ("{", "[1, 2]", '[{"key": "x"}]', "null"):
        assert sessions(now).load(damaged) == 0


def _board(now: list[float], **agent: object) -> AgentSessions:
    settings = AgentSettings.model_validate({"agents": [{"extension": "7181", **agent}]})
    return AgentSessions(settings, clock=lambda: now[0])


TOKEN = "agent-7181-token-0123456789"


def test_a_changed_or_removed_pin_ends_the_sessions_made_with_the_old_one() -> None:
    now = [1_795_000_000.0]
    before = _board(now, pin=PIN, token=TOKEN)
    _, by_pin = before.sign_in("7181", PIN, "10.0.0.1")
    _, by_token = before.sign_in(None, TOKEN, "10.0.0.1")
    saved = before.dump()
    assert PIN not in saved and TOKEN not in saved

    # Restarted with a new PIN: the PIN session is over, the token session is not.
    new_pin = _board(now, pin="770011", token=TOKEN)
    new_pin.load(saved)
    assert new_pin.get(by_pin) is None
    assert new_pin.get(by_token) is not None
    # Restarted with the PIN removed (token only): the same.
    no_pin = _board(now, token=TOKEN)
    no_pin.load(saved)
    assert no_pin.get(by_pin) is None and no_pin.get(by_token) is not None
    # Restarted with a new token: the token session is over.
    new_token = _board(now, pin=PIN, token="agent-7181-token-rotated-000")
    new_token.load(saved)
    assert new_token.get(by_token) is None and new_token.get(by_pin) is not None
    # Unchanged secrets: both survive the restart.
    same = _board(now, pin=PIN, token=TOKEN)
    same.load(saved)
    assert same.get(by_pin) is not None and same.get(by_token) is not None


def test_a_secret_changed_while_running_ends_the_session_at_its_next_request() -> None:
    now = [1_795_000_000.0]
    board = _board(now, pin=PIN)
    _, cookie = board.sign_in("7181", PIN, "10.0.0.1")
    assert board.get(cookie) is not None
    board.settings = AgentSettings.model_validate(
        {"agents": [{"extension": "7181", "pin": "770011"}]}
    )
    assert board.get(cookie) is None
    assert board.active == 0


def test_sessions_saved_without_a_proof_of_their_secret_are_not_taken_back() -> None:
    now = [1_795_000_000.0]
    old_blob = (
        '[{"key": "'
        + "a" * 64
        + '", "extension": "7181", "name": "", "expires": '
        + str(now[0] + 3600)
        + "}]"
    )
    assert _board(now, pin=PIN).load(old_blob) == 0
