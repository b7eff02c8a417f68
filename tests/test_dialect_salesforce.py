"""Salesforce dialect against a fake org that enforces the 3CX web-services spec and OAuth."""

from __future__ import annotations

import logging

import pytest

from crm.dialects.base import DeliveryError
from tests.fakes import crm_scenarios as scenarios
from tests.fakes.crm_harness import adapter_from_toml, client_session, deliver_wanted, key
from tests.fakes.crm_salesforce import DROPPED, EVENT, SURVEY, TOKEN, WRAPUP, FakeSalesforce
from tests.fakes.crm_server import HTML_ERROR_PAGE


def config(url: str, grant: str = "client_credentials", extra: str = "", timeout: float = 2) -> str:
    return f"""
[[crm]]
type = "salesforce"
name = "sf"
base_url = "{url}"
timeout_seconds = {timeout}
{extra}
[crm.auth]
mode = "oauth2"
token_url = "{url}{TOKEN}"
grant_type = "{grant}"
client_id = "3MVG9-client"
client_secret = "sf-client-secret"
username = "integration@example.com"
password = "sf-password"
"""


@pytest.fixture
async def http():
    async with client_session() as session:
        yield session


@pytest.fixture
async def org():
    async with FakeSalesforce() as fake:
        yield fake


async def test_the_recorded_calls_reach_salesforce_as_the_spec_shows_them(org, http):
    adapter = adapter_from_toml(config(org.url), http)
    events = [
        *scenarios.answered_recorded(),
        *scenarios.voicemail(),
        *scenarios.abandoned(),
        *scenarios.survey(),
    ]
    await deliver_wanted(adapter, events)

    assert org.rejections == []
    assert [(r.method, r.path) for r in org.requests] == [
        ("POST", TOKEN),
        ("POST", WRAPUP),
        ("POST", EVENT),
        ("POST", DROPPED),
        ("POST", SURVEY),
    ]
    bodies = [r.json() for r in org.requests[1:]]
    assert bodies[0] == {
        "callType": "Inbound",
        "startTime": "2026-11-23T07:29:27Z",
        "endTime": "2026-11-23T07:29:34Z",
        "terminatingParty": "Customer",
        "calledNumber": "4951112234",
        "callingNumber": "+79037654321",
        "agentExtension": "7181",
        "callRecordingURL": "https://pbx.example.com/recordings/1795418967.2.wav",
    }
    assert bodies[1] == {
        "Subject": "Voicemail from +79262223344",
        "StartDateTime": "2026-11-23T07:13:10Z",
        "EndDateTime": "2026-11-23T07:13:39Z",
        "IsAllDayEvent": False,
        "Description": "Voicemail from +79262223344 for extension 7181",
    }
    assert bodies[2] == {
        "dateAndTime": "2026-11-23T07:13:43Z",
        "calledNumber": "4951112233",
        "callingNumber": "+79853334455",
        "creExtension": "7181",
    }
    assert bodies[3] == {
        "callingNumber": "+79031234567",
        "extension": "7070",
        "calledDateTime": "2026-11-23T07:14:04Z",
        "rating": "7",
    }
    assert all(r.headers["Authorization"] == "Bearer 00Dfake!1" for r in org.requests[1:])


async def test_unanswered_inbound_calls_get_no_wrapup_but_outbound_calls_do(org, http):
    adapter = adapter_from_toml(config(org.url), http)
    await deliver_wanted(adapter, [*scenarios.abandoned(), *scenarios.outbound_agent_dials()])

    wrapups = [r.json() for r in org.requests_to("rocverification")]
    assert [w["callType"] for w in wrapups] == ["Outbound"]
    assert wrapups[0]["terminatingParty"] == "Agent"
    assert wrapups[0]["calledNumber"] == "89161234567"
    assert wrapups[0]["callRecordingURL"] == ""


async def test_the_password_flow_sends_username_and_password_plus_security_token(http):
    async with FakeSalesforce(security_token="SECTOK") as org:
        text = config(org.url, grant="password") + 'security_token = "SECTOK"\n'
        adapter = adapter_from_toml(text, http)
        [*_, completed] = scenarios.answered_recorded()
        outcome = await adapter.deliver(completed, key(adapter, completed))

    assert outcome.matched is True
    assert org.token_requests[0]["grant_type"] == "password"
    assert org.token_requests[0]["password"] == "sf-passwordSECTOK"


async def test_an_expired_token_is_refreshed_once_and_the_post_retried(org, http):
    adapter = adapter_from_toml(config(org.url), http)
    [*_, completed] = scenarios.answered_recorded()
    await adapter.deliver(completed, key(adapter, completed))
    org.expire_tokens()

    outcome = await adapter.deliver(completed, key(adapter, completed))

    assert outcome.status == 200
    assert [r.path for r in org.requests] == [TOKEN, WRAPUP, WRAPUP, TOKEN, WRAPUP]
    assert org.requests[2].headers["Authorization"] == "Bearer 00Dfake!1"
    assert org.requests[4].headers["Authorization"] == "Bearer 00Dfake!2"


async def test_the_token_is_fetched_once_for_many_deliveries(org, http):
    adapter = adapter_from_toml(config(org.url), http)
    await deliver_wanted(adapter, [*scenarios.voicemail(), *scenarios.abandoned()])
    assert len(org.requests_to(TOKEN)) == 1


async def test_unmatched_is_kept_on_the_outcome_not_treated_as_failure(org, http):
    org.wrapup_status = "unmatched"
    adapter = adapter_from_toml(config(org.url), http)
    [*_, completed] = scenarios.answered_recorded()

    outcome = await adapter.deliver(completed, key(adapter, completed))

    assert outcome.matched is False
    assert outcome.crm_data["status"] == "unmatched"


async def test_an_error_code_in_the_answer_is_a_final_failure_with_the_message(org, http):
    adapter = adapter_from_toml(config(org.url), http)
    [*_, completed] = scenarios.answered_recorded()
    await adapter.deliver(completed, key(adapter, completed))  # fetch the token first
    org.fail_next(
        200,
        '{"status": "", "errorMessage": "Agent 7181 not found", "errorCode": "E_AGENT"}',
    )
    with pytest.raises(DeliveryError) as caught:
        await adapter.deliver(completed, key(adapter, completed))
    assert caught.value.retryable is False
    assert "E_AGENT: Agent 7181 not found" in str(caught.value)


@pytest.mark.parametrize(
    ("status", "body", "content_type", "words"),
    [
        (500, '{"message": "boom"}', "application/json", "answered HTTP 500"),
        (503, HTML_ERROR_PAGE, "text/html", "HTML page (503 Service Unavailable)"),
        (200, "", "application/json", "empty body"),
        (200, HTML_ERROR_PAGE, "text/html", "HTML page"),
        (200, "OK thanks", "text/plain", "not JSON"),
    ],
)
async def test_server_errors_html_and_garbage_are_retryable_errors_with_the_status_kept(
    org, http, status, body, content_type, words
):
    adapter = adapter_from_toml(config(org.url), http)
    [*_, completed] = scenarios.answered_recorded()
    await adapter.deliver(completed, key(adapter, completed))
    org.fail_next(status, body, content_type)

    with pytest.raises(DeliveryError) as caught:
        await adapter.deliver(completed, key(adapter, completed))

    assert caught.value.retryable is True
    assert caught.value.status == status
    assert words in str(caught.value)


async def test_a_429_passes_retry_after_to_the_outbox(org, http):
    adapter = adapter_from_toml(config(org.url), http)
    [*_, completed] = scenarios.answered_recorded()
    await adapter.deliver(completed, key(adapter, completed))
    org.fail_next(429, '{"message": "slow down"}', headers={"Retry-After": "17"})
    with pytest.raises(DeliveryError) as caught:
        await adapter.deliver(completed, key(adapter, completed))
    assert (caught.value.retryable, caught.value.retry_after) == (True, 17.0)


async def test_a_slow_salesforce_is_a_retryable_timeout(org, http):
    adapter = adapter_from_toml(config(org.url, timeout=0.3), http)
    [*_, completed] = scenarios.answered_recorded()
    await adapter.deliver(completed, key(adapter, completed))
    org.hang_next()
    with pytest.raises(DeliveryError) as caught:
        await adapter.deliver(completed, key(adapter, completed))
    assert caught.value.retryable is True
    assert "timed out after 0.3s" in str(caught.value)


async def test_wrong_client_secret_dead_letters_without_leaking_the_secret(org, http, caplog):
    text = config(org.url).replace('"sf-client-secret"', '"not-the-secret-xyz"')
    adapter = adapter_from_toml(text, http)
    [*_, completed] = scenarios.answered_recorded()
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DeliveryError) as caught:
        await adapter.deliver(completed, key(adapter, completed))
    assert caught.value.retryable is False
    assert caught.value.status == 400
    assert "not-the-secret-xyz" not in str(caught.value)
    assert "not-the-secret-xyz" not in caplog.text
    assert "not-the-secret-xyz" not in repr(adapter.config)


async def test_timestamp_format_and_zone_are_configurable(org, http):
    extra = 'timestamp_format = "%d/%m/%Y %H:%M:%S"\ntimezone = "Europe/Moscow"'
    adapter = adapter_from_toml(config(org.url, extra=extra), http)
    [*_, dropped, _completed] = scenarios.abandoned()
    await adapter.deliver(dropped, key(adapter, dropped))
    assert org.requests_to("recordDroppedCall")[0].json()["dateAndTime"] == "23/11/2026 10:13:43"


def test_a_bad_timestamp_format_is_a_config_error():
    from crm.dialects.registry import parse_adapter_config

    with pytest.raises(ValueError, match="strftime"):
        parse_adapter_config({"type": "salesforce", "base_url": "x", "timestamp_format": "ymd"})
