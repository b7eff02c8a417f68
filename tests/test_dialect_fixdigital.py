"""FixDigital dialect, and the same CRM expressed purely in config (declarative dialect)."""

from __future__ import annotations

import pytest

from crm.dialects.base import DeliveryError
from tests.fakes import crm_scenarios as scenarios
from tests.fakes.crm_fixdigital import FakeFixDigital
from tests.fakes.crm_harness import adapter_from_toml, client_session, deliver_wanted, key


def builtin(url: str, client_id: str = "10") -> str:
    return f"""
[[crm]]
type = "fixdigital"
url = "{url}/webservice.php"
client_id = "{client_id}"
default_region = "RU"
"""


def declarative(url: str) -> str:
    return f"""
[[crm]]
type = "declarative"
name = "fixdigital-by-config"
default_region = "RU"

[crm.requests.ringing]
method = "GET"
url = "{url}/webservice.php"
directions = ["inbound"]
query = {{ operation = "incomingCall", sExt = "{{extension}}", sNumber = "{{caller_number|national}}", ClientId = "10" }}

[crm.requests.answered]
method = "GET"
url = "{url}/webservice.php"
directions = ["inbound"]
query = {{ operation = "incomingCallAnswered", sExt = "{{extension}}", sNumber = "{{caller_number|national}}", ClientId = "10" }}

[crm.success]
status = [200]
json_field = "success"
json_equals = [true]
"""  # noqa: E501 - a config line as an admin writes it


@pytest.fixture
async def http():
    async with client_session() as session:
        yield session


@pytest.fixture
async def fixdigital():
    async with FakeFixDigital() as fake:
        yield fake


async def test_a_recorded_inbound_call_sends_incoming_call_then_answered(fixdigital, http):
    adapter = adapter_from_toml(builtin(fixdigital.url), http)
    await deliver_wanted(adapter, scenarios.answered_caller_hangs_up())

    assert fixdigital.rejections == []
    assert [(r.method, r.raw_path) for r in fixdigital.requests] == [
        ("GET", "/webservice.php?operation=incomingCall&sExt=7181&sNumber=89031234567&ClientId=10"),
        (
            "GET",
            "/webservice.php?operation=incomingCallAnswered&sExt=7181&sNumber=89031234567"
            "&ClientId=10",
        ),
    ]


async def test_the_questionnaire_sample_number_is_sent_as_the_sample_shows_it(fixdigital, http):
    text = builtin(fixdigital.url).replace('"RU"', '"IL"')
    adapter = adapter_from_toml(text, http)
    [ringing, *_] = scenarios.answered_caller_hangs_up()
    ringing.call.caller_number = "+97233004799"
    ringing.extension = "777"
    await adapter.deliver(ringing, key(adapter, ringing))
    assert fixdigital.requests[0].raw_path == (
        "/webservice.php?operation=incomingCall&sExt=777&sNumber=033004799&ClientId=10"
    )


async def test_a_foreign_caller_keeps_the_international_prefix_israel_dials(fixdigital, http):
    text = builtin(fixdigital.url).replace('"RU"', '"IL"')
    adapter = adapter_from_toml(text, http)
    [ringing, *_] = scenarios.answered_caller_hangs_up()
    ringing.call.caller_number = "+79853334455"
    await adapter.deliver(ringing, key(adapter, ringing))
    assert "&sNumber=0079853334455&" in fixdigital.requests[0].raw_path


async def test_outbound_calls_are_not_sent_to_fixdigital(fixdigital, http):
    adapter = adapter_from_toml(builtin(fixdigital.url), http)
    assert await deliver_wanted(adapter, scenarios.outbound_agent_dials()) == []
    assert fixdigital.requests == []


async def test_success_false_is_a_final_error_with_the_answer_kept(fixdigital, http):
    adapter = adapter_from_toml(builtin(fixdigital.url, client_id="99"), http)
    [ringing, *_] = scenarios.answered_caller_hangs_up()
    with pytest.raises(DeliveryError) as caught:
        await adapter.deliver(ringing, key(adapter, ringing))
    assert caught.value.retryable is False
    assert "ACCESS_DENIED" in (caught.value.response or "")


async def test_a_500_is_retried_later(fixdigital, http):
    adapter = adapter_from_toml(builtin(fixdigital.url), http)
    [ringing, *_] = scenarios.answered_caller_hangs_up()
    fixdigital.fail_next(500, "Internal Server Error", "text/plain")
    with pytest.raises(DeliveryError) as caught:
        await adapter.deliver(ringing, key(adapter, ringing))
    assert (caught.value.retryable, caught.value.status) == (True, 500)


async def test_fixdigital_in_config_alone_sends_byte_identical_requests(http):
    events = [
        *scenarios.answered_caller_hangs_up(),
        *scenarios.abandoned(),
        *scenarios.voicemail(),
        *scenarios.outbound_agent_dials(),
    ]
    async with FakeFixDigital() as first:
        # One server for both, so even the Host header can be compared byte for byte.
        built_in = adapter_from_toml(builtin(first.url), http)
        by_config = adapter_from_toml(declarative(first.url), http)
        await deliver_wanted(built_in, events)
        from_builtin = list(first.requests)
        first.requests.clear()
        await deliver_wanted(by_config, events)
        from_config = list(first.requests)

    def wire(r):
        return (r.method, r.raw_path, r.headers, r.body)

    assert len(from_builtin) == 4  # ringing + answered, ringing, ringing
    assert [wire(r) for r in from_config] == [wire(r) for r in from_builtin]
    assert first.rejections == []


async def test_the_declarative_success_rule_rejects_success_false(http):
    async with FakeFixDigital(client_id="11") as fake:
        adapter = adapter_from_toml(declarative(fake.url), http)
        [ringing, *_] = scenarios.answered_caller_hangs_up()
        with pytest.raises(DeliveryError, match="success is false") as caught:
            await adapter.deliver(ringing, key(adapter, ringing))
    assert caught.value.retryable is False
