"""cal4care DBN dialect: an agent's screen-pop note pushed to an existing DBN server."""

from __future__ import annotations

import pytest

from crm.dialects.base import DeliveryError
from tests.fakes import crm_scenarios as scenarios
from tests.fakes.crm_dbn import FakeDbn
from tests.fakes.crm_harness import adapter_from_toml, client_session, deliver_wanted, key

TOKEN = "d6bcfeee-8eea-65cd-f4d6-166585973ea2"


def config(url: str, method: str = "GET") -> str:
    return f"""
[[crm]]
type = "dbn"
base_url = "{url}"
token = "{TOKEN}"
method = "{method}"
"""


@pytest.fixture
async def http():
    async with client_session() as session:
        yield session


@pytest.fixture
async def dbn():
    async with FakeDbn(token=TOKEN) as fake:
        yield fake


async def test_a_note_is_saved_with_status_comments_and_the_callers_number(dbn, http):
    adapter = adapter_from_toml(config(dbn.url), http)
    outcomes = await deliver_wanted(
        adapter, [*scenarios.answered_caller_hangs_up(), scenarios.note()]
    )

    assert [o.crm_data for o in outcomes] == [{"success": 1}]  # the sloppy ",}" is forgiven
    assert dbn.requests[0].raw_path == (
        f"/3cx/query?cid=%2B79031234567&status=Schedule+Later&comments=Due+to+driving&token={TOKEN}"
    )


async def test_the_specs_scheduled_later_spelling_is_sent_as_the_status_list_spells_it(dbn, http):
    adapter = adapter_from_toml(config(dbn.url, method="POST"), http)
    event = scenarios.note(status="Scheduled Later")
    await adapter.deliver(event, key(adapter, event))
    assert dbn.notes[0]["status"] == "Schedule Later"
    assert dbn.requests[0].method == "POST"


async def test_an_unknown_status_is_a_final_error_and_nothing_is_sent(dbn, http):
    adapter = adapter_from_toml(config(dbn.url), http)
    event = scenarios.note(status="Maybe")
    with pytest.raises(DeliveryError, match="not one of") as caught:
        await adapter.deliver(event, key(adapter, event))
    assert caught.value.retryable is False
    assert dbn.requests == []


async def test_a_refused_token_dead_letters_without_showing_the_token(dbn, http):
    adapter = adapter_from_toml(config(dbn.url).replace(TOKEN, "wrong-token-0000"), http)
    event = scenarios.note()
    with pytest.raises(DeliveryError) as caught:
        await adapter.deliver(event, key(adapter, event))
    assert (caught.value.retryable, caught.value.status) == (False, 401)
    assert "wrong-token-0000" not in str(caught.value)
