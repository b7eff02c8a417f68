"""Creatio CC360 dialect against a fake that enforces login cookies, BPMCSRF and the query."""

from __future__ import annotations

import pytest

from crm.dialects.base import DeliveryError
from tests.fakes import crm_scenarios as scenarios
from tests.fakes.crm_creatio import LOGIN, FakeCreatio
from tests.fakes.crm_harness import adapter_from_toml, client_session, deliver_wanted, key
from tests.fakes.crm_server import HTML_ERROR_PAGE

TOKEN = "who-calls-token-42"


def config(url: str, mode: str = "login", password: str = "creatio-pass") -> str:
    return f"""
[[crm]]
type = "creatio"
base_url = "{url}"
token = "{TOKEN}"
auth_mode = "{mode}"
username = "Supervisor"
password = "{password}"
timeout_seconds = 2
"""


@pytest.fixture
async def http():
    async with client_session() as session:
        yield session


@pytest.fixture
async def creatio():
    async with FakeCreatio(token=TOKEN) as fake:
        yield fake


REST = f"/0/rest/OmniWhoCallsService/{TOKEN}"


async def test_a_recorded_answered_recorded_call_reaches_creatio_in_order(creatio, http):
    adapter = adapter_from_toml(config(creatio.url), http)
    await deliver_wanted(adapter, scenarios.answered_recorded())

    assert creatio.rejections == []
    assert [(r.method, r.raw_path) for r in creatio.requests] == [
        ("POST", LOGIN),
        (
            "GET",
            f"{REST}/RingingEventHandler?id=1795418967.2&eventName=ringing"
            "&callerid=79037654321&user=7181",
        ),
        (
            "GET",
            f"{REST}/RingingEventHandler?id=1795418967.2&eventName=answer"
            "&callerid=79037654321&user=7181",
        ),
        (
            "GET",
            f"{REST}/RingingEventHandler?id=1795418967.2&eventName=hangup"
            "&callerid=79037654321&user=7181",
        ),
        (
            "POST",
            f"{REST}/PushHistoryData?id=1795418967.2&callerid=79037654321&user=7181"
            "&event=incoming&duration=5",
        ),
    ]
    assert creatio.requests[-1].json() == {
        "FILES": ["https://pbx.example.com/recordings/1795418967.2.wav"]
    }
    for request in creatio.requests[1:]:
        assert request.headers["BPMCSRF"] == "csrf0001"
        assert request.cookies[".ASPXAUTH"] == "ASPXAUTH0001"


async def test_an_expired_session_logs_in_again_once_and_retries(creatio, http):
    adapter = adapter_from_toml(config(creatio.url), http)
    [ringing, *_] = scenarios.answered_recorded()
    await adapter.deliver(ringing, key(adapter, ringing))
    creatio.expire_sessions()

    outcome = await adapter.deliver(ringing, key(adapter, ringing))

    assert outcome.status == 200
    paths = [r.path.rsplit("/", 1)[-1] for r in creatio.requests]
    assert paths == [
        "Login",
        "RingingEventHandler",
        "RingingEventHandler",
        "Login",
        "RingingEventHandler",
    ]
    assert creatio.requests[-1].headers["BPMCSRF"] == "csrf0002"


async def test_a_wrong_password_is_a_final_error_that_does_not_show_it(creatio, http):
    adapter = adapter_from_toml(config(creatio.url, password="wrong-pass-123"), http)
    [ringing, *_] = scenarios.answered_recorded()
    with pytest.raises(DeliveryError) as caught:
        await adapter.deliver(ringing, key(adapter, ringing))
    assert caught.value.retryable is False
    assert "Invalid username or password" in str(caught.value)
    assert "wrong-pass-123" not in str(caught.value)


async def test_anonymous_mode_uses_the_token_url_and_no_login(creatio, http):
    adapter = adapter_from_toml(config(creatio.url, mode="anonymous"), http)
    await deliver_wanted(adapter, scenarios.abandoned())

    assert creatio.rejections == []
    assert [r.raw_path for r in creatio.requests] == [
        f"/0/ServiceModel/OmniWhoCallsService.svc/{TOKEN}/RingingEventHandler"
        "?id=1795418023.6&eventName=ringing&callerid=79853334455&user=7181",
        f"/0/ServiceModel/OmniWhoCallsService.svc/{TOKEN}/RingingEventHandler"
        "?id=1795418023.6&eventName=hangup&callerid=79853334455&user=7181",
        f"/0/ServiceModel/OmniWhoCallsService.svc/{TOKEN}/PushHistoryData"
        "?id=1795418023.6&callerid=79853334455&user=7181&event=incoming&duration=0",
    ]
    assert creatio.requests[-1].json() == {"FILES": []}


async def test_an_outbound_call_is_outgoing_with_the_dialled_client_as_callerid(creatio, http):
    adapter = adapter_from_toml(config(creatio.url), http)
    await deliver_wanted(adapter, scenarios.outbound_agent_dials())
    history = creatio.requests_to("PushHistoryData")[0]
    assert dict(history.query) == {
        "id": "1795418982.4",
        "callerid": "79161234567",
        "user": "7070",
        "event": "outgoing",
        "duration": "4",
    }


async def test_an_html_error_page_is_a_retryable_error_and_the_token_stays_hidden(creatio, http):
    adapter = adapter_from_toml(config(creatio.url), http)
    [ringing, *_] = scenarios.answered_recorded()
    await adapter.deliver(ringing, key(adapter, ringing))
    creatio.html_error_next(502)
    with pytest.raises(DeliveryError) as caught:
        await adapter.deliver(ringing, key(adapter, ringing))
    assert (caught.value.retryable, caught.value.status) == (True, 502)
    assert "HTML page" in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert HTML_ERROR_PAGE[:20] in (caught.value.response or "")


def test_login_mode_without_a_password_is_a_config_error():
    from crm.dialects.registry import parse_adapter_config

    with pytest.raises(ValueError, match="username and password"):
        parse_adapter_config({"type": "creatio", "base_url": "x", "token": "tttt"})
