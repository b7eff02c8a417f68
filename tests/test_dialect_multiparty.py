"""The multi-party recordings through every dialect that keeps per-agent state, over real HTTP
to fakes that enforce the vendor documents (tests/fakes/crm_*.py).

The call events come from the tracker run over the recorded AMI bytes (the ARI recordings give
the same events: tests/test_ari_events.py); each adapter delivers the ones it wants, in order,
as its outbox would.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

from ari_app.calls.rules import CallRules
from ari_app.calls.tracker import CallTracker
from ari_app.pbx.ami.events import PbxClock, frame_to_event
from crm.model import CallEvent
from tests.fakes.crm_creatio import FakeCreatio
from tests.fakes.crm_fixdigital import FakeFixDigital
from tests.fakes.crm_harness import adapter_from_toml, client_session, deliver_wanted
from tests.fakes.crm_salesforce import TOKEN, WRAPUP, FakeSalesforce
from tests.recordings import recorded_frames
from tests.test_ari_events import ami_call_events
from tests.test_e2e_ami_to_crm import WebhookCrm

MULTIPARTY = [
    "ring_group_three_agents",
    "attended_transfer_target_hangs_up",
    "blind_transfer_ami_target_hangs_up",
    "queue_ringall_second_member_answers",
    "queue_ringall_abandoned",
    "queue_local_members_answered",
    "ring_group_local_channels",
    "call_pickup",
    "internal_call_no_answer",
    "click_to_call_client_busy",
    "ari_burst_ten_inbound",
]
CREATIO_TOKEN = "who-calls-token-42"


def creatio_toml(url: str, extra: str = "") -> str:
    return f"""
[[crm]]
type = "creatio"
base_url = "{url}"
token = "{CREATIO_TOKEN}"
username = "Supervisor"
password = "creatio-pass"
{extra}
"""


async def creatio_requests(scenario: str, extra: str = "") -> list[tuple[str, dict[str, str]]]:
    async with FakeCreatio(token=CREATIO_TOKEN) as creatio, client_session() as http:
        adapter = adapter_from_toml(creatio_toml(creatio.url, extra), http)
        await deliver_wanted(adapter, ami_call_events(scenario))
    assert creatio.rejections == []
    return [
        (r.path.rsplit("/", 1)[-1], dict(r.query))
        for r in creatio.requests
        if "OmniWhoCallsService" in r.path
    ]


def ringing_cards(requests: list[tuple[str, dict[str, str]]]) -> dict[tuple[str, str], list[str]]:
    """(call id, user) -> the eventNames that user's card got, in order."""
    cards: dict[tuple[str, str], list[str]] = defaultdict(list)
    for method, query in requests:
        if method == "RingingEventHandler":
            cards[(query["id"], query["user"])].append(query["eventName"])
    return cards


@pytest.mark.parametrize("scenario", MULTIPARTY)
async def test_creatio_closes_every_card_it_opened(scenario: str) -> None:
    cards = ringing_cards(await creatio_requests(scenario))
    assert cards, "Creatio got no card at all"
    for (call_id, user), names in cards.items():
        assert names[-1] == "hangup", (call_id, user, names)
        assert names.count("hangup") == 1, (call_id, user, names)
        assert names.count("answer") <= 1, (call_id, user, names)


async def test_creatio_sees_the_attended_transfer_as_two_agents_and_the_whole_talk() -> None:
    requests = await creatio_requests("attended_transfer_target_hangs_up")
    assert [(m, q.get("eventName"), q["user"]) for m, q in requests] == [
        ("RingingEventHandler", "ringing", "7181"),
        ("RingingEventHandler", "answer", "7181"),
        ("RingingEventHandler", "ringing", "7070"),
        ("RingingEventHandler", "answer", "7070"),
        ("RingingEventHandler", "hangup", "7181"),
        ("RingingEventHandler", "hangup", "7070"),
        ("PushHistoryData", None, "7070"),
    ]
    history = requests[-1][1]
    # 9.5 s from 7181's answer to 7070's hang-up, not the 5 s up to 7181's transfer.
    assert (history["event"], history["duration"], history["callerid"]) == (
        "incoming",
        "10",
        "79035550033",
    )


async def test_creatio_ring_group_members_who_did_not_answer_get_their_hangup() -> None:
    cards = ringing_cards(await creatio_requests("ring_group_three_agents"))
    assert cards == {
        ("1796144484.0", "7070"): ["ringing", "hangup"],
        ("1796144484.0", "7181"): ["ringing", "hangup"],
        ("1796144484.0", "517"): ["ringing", "answer", "hangup"],
    }


async def test_creatio_gets_no_history_for_an_internal_call_unless_asked() -> None:
    plain = await creatio_requests("internal_call_no_answer")
    assert [m for m, _ in plain] == ["RingingEventHandler", "RingingEventHandler"]
    asked = await creatio_requests("internal_call_no_answer", "internal_history = true")
    assert [(m, q.get("event")) for m, q in asked][-1] == ("PushHistoryData", "outgoing")


@pytest.mark.parametrize("scenario", ["ivr_agi_survey", "ivr_agi_caller_hangs_up"])
async def test_creatio_history_of_a_call_no_agent_touched_needs_a_fallback_user(
    scenario: str,
) -> None:
    assert await creatio_requests(scenario) == []  # user="" is refused by Creatio's contract
    [(method, query)] = await creatio_requests(scenario, 'fallback_user = "500"')
    assert (method, query["user"], query["event"]) == ("PushHistoryData", "500", "incoming")


async def test_creatio_click_to_call_ringing_names_the_client_pbxcrm_dialled() -> None:
    tracker = CallTracker(CallRules(), pbx_id="lab")
    tracker.expect_originate("c2c-0002", "89161234567")  # what pbxcrm's Originate dialled
    clock = PbxClock()
    events: list[CallEvent] = []
    for frame in recorded_frames("click_to_call_agent_no_answer"):
        mapped = frame_to_event(frame, clock.stamp(frame))
        if mapped is not None:
            events.extend(tracker.handle(mapped))
    assert events[-1].call.called_number == "89161234567"
    async with FakeCreatio(token=CREATIO_TOKEN) as creatio, client_session() as http:
        adapter = adapter_from_toml(creatio_toml(creatio.url), http)
        await deliver_wanted(adapter, events)
    assert creatio.rejections == []
    ringing = [dict(r.query) for r in creatio.requests if r.path.endswith("RingingEventHandler")]
    # The client's number in Creatio's format (E.164 digits), never empty.
    assert [(q["eventName"], q["callerid"]) for q in ringing] == [
        ("ringing", "79161234567"),
        ("hangup", "79161234567"),
    ]


async def fixdigital_requests(scenario: str, extra: str = "") -> list[str]:
    async with FakeFixDigital(close_operation="incomingCallEnded") as fd, client_session() as h:
        adapter = adapter_from_toml(
            f"""
[[crm]]
type = "fixdigital"
url = "{fd.url}/webservice.php"
client_id = "10"
default_region = "RU"
{extra}
""",
            h,
        )
        await deliver_wanted(adapter, ami_call_events(scenario))
    assert fd.rejections == []
    return [r.raw_path.removeprefix("/webservice.php?") for r in fd.requests]


async def test_fixdigital_hears_the_transfer_target_answer() -> None:
    for scenario in ("attended_transfer_target_hangs_up", "blind_transfer_ami_target_hangs_up"):
        requests = await fixdigital_requests(scenario)
        assert [r.split("&sNumber", 1)[0] for r in requests] == [
            "operation=incomingCall&sExt=7181",
            "operation=incomingCallAnswered&sExt=7181",
            "operation=incomingCall&sExt=7070",
            "operation=incomingCallAnswered&sExt=7070",
        ], scenario


async def test_fixdigital_closes_every_ring_when_the_crm_names_an_operation_for_it() -> None:
    requests = await fixdigital_requests(
        "ring_group_three_agents", 'leg_ended_operation = "incomingCallEnded"'
    )
    ops = [(r.split("&")[0].split("=")[1], r.split("&")[1].split("=")[1]) for r in requests]
    assert ops == [
        ("incomingCall", "7070"),
        ("incomingCall", "7181"),
        ("incomingCall", "517"),
        ("incomingCallAnswered", "517"),
        ("incomingCallEnded", "7070"),
        ("incomingCallEnded", "7181"),
        ("incomingCallEnded", "517"),
    ]


async def test_fixdigital_hears_nothing_of_an_internal_call() -> None:
    assert await fixdigital_requests("internal_call_no_answer") == []


async def test_salesforce_wrapup_of_an_attended_transfer_names_the_final_agent_and_party() -> None:
    async with FakeSalesforce() as sf, client_session() as http:
        adapter = adapter_from_toml(
            f"""
[[crm]]
type = "salesforce"
base_url = "{sf.url}"
[crm.auth]
mode = "oauth2"
token_url = "{sf.url}{TOKEN}"
client_id = "3MVG9-client"
client_secret = "sf-client-secret"
""",
            http,
        )
        await deliver_wanted(adapter, ami_call_events("attended_transfer_target_hangs_up"))
    assert sf.rejections == []
    [wrapup] = [r.json() for r in sf.requests if r.path == WRAPUP]
    assert (wrapup["agentExtension"], wrapup["terminatingParty"], wrapup["callType"]) == (
        "7070",
        "Agent",
        "Inbound",
    )


async def test_webhook_gets_a_leg_end_for_every_ring_with_its_reason() -> None:
    async with WebhookCrm() as hook, client_session() as http:
        adapter = adapter_from_toml(
            f'[[crm]]\ntype = "webhook"\nname = "hook"\nurl = "{hook.url}/events"\n', http
        )
        await deliver_wanted(adapter, ami_call_events("queue_local_members_answered"))
    steps = hook.events()
    legs = [(s["extension"], s["data"]["reason"]) for s in steps if s["kind"] == "leg_ended"]
    assert legs == [("7181", "answered-elsewhere"), ("7070", "completed")]
    rang = [s["extension"] for s in steps if s["kind"] == "ringing"]
    assert sorted(rang) == ["7070", "7181"]  # the phones, never the Local channels
