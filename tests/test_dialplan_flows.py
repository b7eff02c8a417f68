"""dialplan/extensions_pbxcrm.conf executed call by call: the runner (tests/dialplan_runner.py)
plays the channel through the dialplan, and every AGI() it reaches is a real FastAGI session
over TCP to pbxcrm's own FastAGI server, which runs the real scripts and lookup sources.

The Asterisk side of those sessions answers each command from the channel's state (GET
VARIABLE from its variables, SET VARIABLE into them, GET DATA with the digit the test's
caller presses), as res_agi does; the environment is the recorded caller_check one with the
channel's own values. What the runner cannot know about Asterisk (how Local channels pass the
caller's number after an attended transfer) is set by the test's Wait hook, and said there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from agi.classic import DEFAULT_CONFIG
from agi.context import SurveyResult, build_script_context
from agi.fastagi import FastAgiServer, start_fastagi
from agi.settings import AgiSettings
from tests.dialplan_runner import Channel, DialplanRunner, pattern_matches
from tests.fakes.agi_asterisk import asterisk_parse_args, load_recording, with_env
from tests.test_agi_dialplan import OURS, Dialplan, parse

PLAN = parse(OURS.read_text())
CALLER = "+79031234567"
AGENT_CHANNEL = "PJSIP/7181-0000000a"

CONTACTS = [
    {"number": CALLER, "name": "Ivan Petrov", "owner_extension": "7181"},
    {"number": "+79161112233", "name": "Trunk owner", "owner_extension": "trunk"},
    {"number": "+79262223344", "name": "No owner"},
]


@dataclass
class FakeAsterisk:
    """res_agi's side of FastAGI sessions, answering from the channel; records every command."""

    port: int
    keypad: list[str] = field(default_factory=list)  # digits the caller presses, in order
    commands: list[str] = field(default_factory=list)

    async def agi(self, channel: Channel, args: list[str]) -> dict[str, str]:
        url, *script_args = args
        if not url.startswith("agi://"):
            raise AssertionError(f"AGI({url}) is not FastAGI")
        script = url.rsplit("/", 1)[1]
        changes: dict[str, str | None] = {
            "agi_network_script": script,
            "agi_request": url,
            "agi_channel": channel.name,
            "agi_callerid": channel.callerid,
            "agi_extension": channel.variables.get("EXTEN", ""),
        }
        for n, value in enumerate(script_args, start=1):
            changes[f"agi_arg_{n}"] = value
        env = with_env(load_recording("caller_check").env, **changes)
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(env)
            while line := await asyncio.wait_for(reader.readline(), 10):
                command = line.decode().rstrip("\n")
                self.commands.append(command)
                writer.write(self.reply(channel, asterisk_parse_args(command)).encode())
                await writer.drain()
        finally:
            writer.close()
        return {}

    def reply(self, channel: Channel, argv: list[str]) -> str:
        verb = " ".join(argv[:2]).upper()
        if verb == "GET VARIABLE":
            name = argv[2]
            if name == "CALLERID(num)":
                return f"200 result=1 ({channel.callerid})\n"
            if name in channel.variables:
                return f"200 result=1 ({channel.variables[name]})\n"
            return "200 result=0\n"
        if verb == "SET VARIABLE":
            channel.variables[argv[2]] = argv[3]
            return "200 result=1\n"
        if verb == "GET DATA":
            digit = self.keypad.pop(0) if self.keypad else ""
            return f"200 result={digit}\n" if digit else "200 result= (timeout)\n"
        if verb == "STREAM FILE":
            return "200 result=0 endpos=3520\n"
        if argv[0].upper() == "VERBOSE":
            return "200 result=1\n"
        raise AssertionError(f"the fake Asterisk does not know {argv}")


class Site:
    def __init__(self) -> None:
        self.surveys: list[SurveyResult] = []
        self.dialled: list[list[str]] = []

    async def sink(self, result: SurveyResult) -> None:
        self.surveys.append(result)

    async def dial(self, channel: Channel, args: list[str]) -> str:
        self.dialled.append(args)
        return "ANSWER"


@pytest.fixture
async def site() -> AsyncIterator[tuple[Site, FakeAsterisk]]:
    state = Site()
    settings = AgiSettings.model_validate({"port": 0})
    async with aiohttp.ClientSession() as http:
        lookups = [{"type": "local", "name": "book", "contacts": CONTACTS}]
        context = build_script_context(settings, lookups, http, state.sink)
        server: FastAgiServer = await start_fastagi(settings, context)
        try:
            yield state, FakeAsterisk(server.port)
        finally:
            await server.stop()


def runner(state: Site, asterisk: FakeAsterisk, **hooks: object) -> DialplanRunner:
    return DialplanRunner(PLAN, agi=asterisk.agi, dial=state.dial, **hooks)  # type: ignore[arg-type]


async def inbound(state: Site, asterisk: FakeAsterisk, caller: str, did: str) -> Channel:
    channel = Channel("PJSIP/trunk-00000000", caller)
    return await runner(state, asterisk).run(channel, "pbxcrm-inbound", did)


# ---- inbound IVR ------------------------------------------------------------------------


async def test_a_known_caller_rings_the_owner_with_transfers_allowed(site) -> None:
    state, asterisk = site
    channel = await inbound(state, asterisk, CALLER, "4951110000")
    assert asterisk.commands[0] == "GET VARIABLE CALLERID(num)"
    assert channel.variables["CRM_OWNER_EXTENSION"] == "7181"
    assert state.dialled == [["PJSIP/7181", "20", "t"]]
    assert channel.answered and channel.hung_up
    assert channel.apps("Queue") == []


async def test_a_did_arriving_as_e164_runs_the_same_ivr(site) -> None:
    state, asterisk = site
    channel = await inbound(state, asterisk, CALLER, "+74951110000")
    assert channel.variables["CRM_DID"] == "+74951110000"
    assert state.dialled == [["PJSIP/7181", "20", "t"]]


@pytest.mark.parametrize("did", ["4951110000", "+74951110000", "84951110000"])
def test_every_inbound_context_matches_both_did_forms(did: str) -> None:
    for name in ("pbxcrm-inbound", "pbxcrm-inbound-classic"):
        assert any(pattern_matches(p, did) for p in PLAN.contexts[name]), (name, did)
        assert not any(pattern_matches(p, "s") for p in PLAN.contexts[name])


async def test_an_owner_that_is_not_digits_goes_to_the_queue_not_to_dial(site) -> None:
    state, asterisk = site
    channel = await inbound(state, asterisk, "+79161112233", "4951110000")
    assert "CRM_OWNER_EXTENSION" not in channel.variables  # the script dropped it ...
    assert state.dialled == []
    assert channel.apps("Queue") == [["support", "t", "", "", "60"]]


async def test_an_owner_value_the_script_did_not_check_is_refused_by_the_dialplan_too() -> None:
    # A FastAGI server of another make (or an older pbxcrm) might set any text.
    async def loose_agi(channel: Channel, args: list[str]) -> dict[str, str]:
        return {"CRM_FOUND": "1", "CRM_LOOKUP_STATUS": "FOUND", "CRM_OWNER_EXTENSION": "trunk"}

    state = Site()
    channel = Channel("PJSIP/trunk-00000000", CALLER)
    await DialplanRunner(PLAN, agi=loose_agi, dial=state.dial).run(
        channel, "pbxcrm-inbound", "4951110000"
    )
    assert state.dialled == []
    assert channel.apps("Queue") == [["support", "t", "", "", "60"]]


async def test_a_known_caller_without_owner_goes_to_the_queue(site) -> None:
    state, asterisk = site
    channel = await inbound(state, asterisk, "+79262223344", "4951110000")
    assert channel.variables["CRM_FOUND"] == "1"
    assert state.dialled == [] and channel.apps("Queue")


async def test_an_unknown_caller_takes_the_exit(site) -> None:
    state, asterisk = site
    channel = await inbound(state, asterisk, "+79990000000", "4951110000")
    assert channel.variables["CRM_LOOKUP_STATUS"] == "NOTFOUND"
    assert channel.apps("Playback") == [["vm-goodbye"]] and channel.apps("Queue") == []


async def test_an_agi_that_never_connected_sends_the_caller_to_the_queue() -> None:
    async def unreachable(channel: Channel, args: list[str]) -> dict[str, str]:
        return {}  # Asterisk: AGI failed, no variable set

    state = Site()
    channel = Channel("PJSIP/trunk-00000000", CALLER)
    await DialplanRunner(PLAN, agi=unreachable, dial=state.dial).run(
        channel, "pbxcrm-inbound", "4951110000"
    )
    assert channel.apps("Queue") and state.dialled == []


async def test_the_classic_path_passes_the_small_agi_config_pbxcrm_agi_reads_by_default() -> None:
    seen: list[list[str]] = []

    async def classic(channel: Channel, args: list[str]) -> dict[str, str]:
        seen.append(args)
        return {"CRM_FOUND": "1", "CRM_LOOKUP_STATUS": "FOUND", "CRM_OWNER_EXTENSION": "7181"}

    state = Site()
    await DialplanRunner(PLAN, agi=classic, dial=state.dial).run(
        Channel("PJSIP/trunk-00000000", CALLER), "pbxcrm-inbound-classic", "4951110000"
    )
    assert seen == [["pbxcrm-agi", f"--config={DEFAULT_CONFIG}", "caller_check"]]
    assert state.dialled == [["PJSIP/7181", "20", "t"]]


def test_the_fastagi_address_is_a_url_the_scripts_are_appended_to() -> None:
    [(_line, app, args)] = PLAN.contexts["pbxcrm-config"]["s"].apps[:1]
    assert app == "Set" and args == "PBXCRM_AGI=agi://127.0.0.1:4573"
    comment = OURS.read_text().split("[pbxcrm-config]")[1].split("exten =>")[0]
    assert "pbxcrm-agi" not in comment.split("Classic AGI")[0]  # not suggested as a value


# ---- the *77 survey ---------------------------------------------------------------------


async def test_a_blindly_transferred_caller_rates_the_transferring_agent(site) -> None:
    state, asterisk = site
    asterisk.keypad = ["9"]
    channel = Channel("PJSIP/trunk-00000009", CALLER, {"BLINDTRANSFER": AGENT_CHANNEL})
    await runner(state, asterisk).run(channel, "pbxcrm-survey", "*77")
    [survey] = state.surveys
    assert (survey.number, survey.extension, survey.rating) == (CALLER, "7181", 9)


async def test_an_attended_transfer_waits_for_the_caller_and_rates_the_caller(site) -> None:
    """The consult leg is Local/*77@...;2 with the agent's caller ID. Asterisk gives it the
    caller's number once the agent completes the transfer (core_unreal.c copies the
    connected line of ;1 into ;2's caller ID): the Wait hook does that after 3 seconds."""
    state, asterisk = site
    asterisk.keypad = ["8"]
    channel = Channel("Local/*77@from-internal-00000000;2", "7181")
    answered_while_consulting: list[bool] = []

    async def agent_completes_after_3_s(channel: Channel, seconds: float) -> None:
        answered_while_consulting.append(channel.answered or bool(asterisk.commands))
        if len(answered_while_consulting) == 3:
            channel.callerid = CALLER

    await runner(state, asterisk, wait=agent_completes_after_3_s).run(
        channel, "pbxcrm-survey", "*77"
    )
    assert answered_while_consulting == [False, False, False]  # no prompt to the agent
    [survey] = state.surveys
    assert (survey.number, survey.extension, survey.rating) == (CALLER, "7181", 8)


async def test_an_agent_dialling_the_survey_directly_is_refused(site) -> None:
    state, asterisk = site
    asterisk.keypad = ["9"]
    channel = Channel("PJSIP/7181-0000000c", "7181")
    await runner(state, asterisk).run(channel, "pbxcrm-survey", "*77")
    assert state.surveys == [] and asterisk.commands == []
    assert not channel.answered and channel.hung_up
    assert len(channel.apps("Wait")) == 30  # PBXCRM_SURVEY_JOIN_TIMEOUT


async def test_the_survey_script_refuses_to_rate_the_agent_s_own_number(site) -> None:
    """A dialplan of the site's own that calls survey on the consult leg at once."""
    state, asterisk = site
    asterisk.keypad = ["9"]
    channel = Channel("Local/*77@from-internal-00000000;2", "7181")
    await asterisk.agi(channel, ["agi://127.0.0.1:4573/survey", "7181", "q1", "7181"])
    assert state.surveys == [] and asterisk.commands == []


async def test_a_survey_from_the_recorded_ivr_without_an_agent_still_counts(site) -> None:
    state, asterisk = site
    asterisk.keypad = ["7"]
    channel = Channel("PJSIP/trunk-0000000a", CALLER)
    await asterisk.agi(channel, ["agi://127.0.0.1:4573/survey", CALLER, "q1"])
    [survey] = state.surveys
    assert (survey.number, survey.extension, survey.rating) == (CALLER, None, 7)


def test_the_shipped_agi_config_is_a_small_file_with_no_crm_section() -> None:
    import tomllib

    path = Path(__file__).resolve().parents[1] / "config" / "pbxcrm-agi.example.toml"
    raw = tomllib.loads(path.read_text())
    assert set(raw) == {"agi", "lookup"}


# ---- the Stasis caller check of docs/ari.md ----------------------------------------------

ARI_DOC = Path(__file__).resolve().parents[1] / "docs" / "ari.md"


def docs_stasis_example() -> Dialplan:
    """The docs' ```ini block, in a context, beside the shipped dialplan it #includes."""
    block = ARI_DOC.read_text().split("```ini\nexten => 4951110000,1,Gosub")[1].split("```")[0]
    return parse(OURS.read_text() + "\n[from-trunk]\nexten => 4951110000,1,Gosub" + block)


STASIS_OUTCOMES = {
    "owner": {"STASISSTATUS": "SUCCESS", "CRM_FOUND": "1", "CRM_LOOKUP_STATUS": "FOUND",
              "CRM_OWNER_EXTENSION": "7181"},
    "multiple": {"STASISSTATUS": "SUCCESS", "CRM_FOUND": "1", "CRM_LOOKUP_STATUS": "MULTIPLE"},
    "not connected": {"STASISSTATUS": "FAILED"},
    "script failed": {"STASISSTATUS": "SUCCESS"},
    "owner not digits": {"STASISSTATUS": "SUCCESS", "CRM_FOUND": "1",
                         "CRM_LOOKUP_STATUS": "FOUND", "CRM_OWNER_EXTENSION": "trunk"},
    "unknown": {"STASISSTATUS": "SUCCESS", "CRM_FOUND": "0", "CRM_LOOKUP_STATUS": "NOTFOUND"},
}  # fmt: skip


@pytest.mark.parametrize(
    ("outcome", "dialled", "queued", "exited"),
    [
        ("owner", [["PJSIP/7181", "20", "t"]], False, False),
        ("multiple", [], True, False),
        ("not connected", [], True, False),
        ("script failed", [], True, False),
        ("owner not digits", [], True, False),
        ("unknown", [], False, True),
    ],
)
async def test_the_documented_stasis_caller_check_never_dials_an_empty_owner(
    outcome: str, dialled: list[list[str]], queued: bool, exited: bool
) -> None:
    seen: list[list[str]] = []

    async def stasis(channel: Channel, args: list[str]) -> dict[str, str]:
        seen.append(args)
        return dict(STASIS_OUTCOMES[outcome])

    state = Site()
    channel = Channel("PJSIP/trunk-00000000", CALLER)
    plan = docs_stasis_example()
    await DialplanRunner(plan, stasis=stasis, dial=state.dial).run(
        channel, "from-trunk", "4951110000"
    )
    assert seen == [["pbxcrm", "caller_check"]]
    assert state.dialled == dialled
    assert bool(channel.apps("Queue")) is queued
    assert bool(channel.apps("Playback")) is exited
