"""FastAGI: the recorded sessions replayed over TCP against pbxcrm's server and scripts.

A fake Asterisk (tests/fakes/agi_asterisk.py) connects to the server on 127.0.0.1, sends the
recorded environment bytes and answers each command with the recorded reply. Where a script
sends more commands than the lab script that was recorded, the extra replies are written by
hand from the AGI command reference (SET VARIABLE / VERBOSE -> `200 result=1`, GET VARIABLE
-> `200 result=1 (value)`, STREAM FILE -> `200 result=0 endpos=N`), and each test says so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from agi.context import ScriptContext, SurveyResult, build_script_context
from agi.fastagi import FastAgiServer, start_fastagi
from agi.scripts import SCRIPTS, Script
from agi.settings import AgiSettings
from tests.fakes.agi_asterisk import (
    asterisk_parse_args,
    converse,
    fastagi_session,
    load_recording,
    with_env,
)
from tests.fakes.agi_crm import JtelForAgi

OK = b"200 result=1\n"  # SET VARIABLE / VERBOSE, as recorded


class Harness:
    def __init__(self) -> None:
        self.surveys: list[SurveyResult] = []
        self.server: FastAgiServer | None = None
        self.http: aiohttp.ClientSession | None = None

    async def sink(self, result: SurveyResult) -> None:
        self.surveys.append(result)

    async def start(self, lookups: list[dict], **agi: object) -> FastAgiServer:
        settings = AgiSettings.model_validate({"port": 0, **agi})
        self.http = aiohttp.ClientSession()
        context = build_script_context(settings, lookups, self.http, self.sink)
        self.server = await start_fastagi(settings, context)
        return self.server

    async def stop(self) -> None:
        if self.server:
            await self.server.stop()
        if self.http:
            await self.http.close()


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    yield h
    await h.stop()


@pytest.fixture
async def jtel() -> AsyncIterator[JtelForAgi]:
    crm = JtelForAgi({})
    await crm.start()
    yield crm
    await crm.stop()


LOCAL_CONTACTS = {
    "type": "local",
    "name": "contacts",
    "contacts": [
        {"number": "+79031234567", "name": "Ivan Petrov", "owner_extension": "7181"},
    ],
}


async def test_recorded_caller_check_sets_found_and_the_contact_for_a_known_caller(harness):
    """The recorded lab script sent the first two lines; pbxcrm then also sets the status
    and the contact (their replies are SET VARIABLE's recorded `200 result=1`)."""
    rec = load_recording("caller_check")
    server = await harness.start([LOCAL_CONTACTS])
    talk = await fastagi_session(server.port, rec.env, [*rec.replies, OK, OK, OK])
    assert talk.commands[:2] == rec.sent
    assert talk.commands == [
        "GET VARIABLE CALLERID(num)",
        "SET VARIABLE CRM_FOUND 1",
        "SET VARIABLE CRM_LOOKUP_STATUS FOUND",
        'SET VARIABLE CRM_CONTACT_NAME "Ivan Petrov"',
        "SET VARIABLE CRM_OWNER_EXTENSION 7181",
    ]
    assert talk.closed_by_server


async def test_an_unknown_caller_gets_found_0_and_notfound(harness):
    rec = load_recording("caller_check")
    server = await harness.start([{**LOCAL_CONTACTS, "contacts": []}])
    talk = await fastagi_session(server.port, rec.env, [*rec.replies, OK])
    assert talk.commands == [
        "GET VARIABLE CALLERID(num)",
        "SET VARIABLE CRM_FOUND 0",
        "SET VARIABLE CRM_LOOKUP_STATUS NOTFOUND",
    ]


async def test_a_crm_that_is_down_gives_error_and_the_fallback_branch(harness, caplog):
    rec = load_recording("caller_check")
    # A port that was just free: connection refused.
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    server = await harness.start([{"type": "jtel", "url": f"http://127.0.0.1:{port}/lookup"}])
    with caplog.at_level(logging.WARNING, "pbxcrm.agi"):
        talk = await fastagi_session(server.port, rec.env, [*rec.replies, OK])
    assert talk.commands[1:] == [
        "SET VARIABLE CRM_FOUND 0",
        "SET VARIABLE CRM_LOOKUP_STATUS ERROR",
    ]
    assert "fallback" in caplog.text


async def test_a_crm_that_never_answers_is_cut_off_by_the_time_budget(harness, jtel):
    rec = load_recording("caller_check")
    jtel.hang = True
    server = await harness.start(
        [{"type": "jtel", "url": jtel.url, "timeout_seconds": 30}], lookup_budget_seconds=0.3
    )
    started = time.monotonic()
    talk = await fastagi_session(server.port, rec.env, [*rec.replies, OK])
    assert time.monotonic() - started < 2.0
    assert talk.commands[-1] == "SET VARIABLE CRM_LOOKUP_STATUS ERROR"
    assert len(jtel.requests) == 1


async def test_crm_values_with_quotes_and_newlines_stay_inside_one_argument(harness):
    rec = load_recording("caller_check")
    evil = 'Ivan "Vanya" Petrov\\\nHANGUP\r\nEXEC Dial PJSIP/666'
    contacts = {**LOCAL_CONTACTS, "contacts": [{"number": "+79031234567", "name": evil}]}
    server = await harness.start([contacts])
    talk = await fastagi_session(server.port, rec.env, [*rec.replies, OK, OK])
    assert len(talk.commands) == 4  # nothing injected: one command line per variable
    line = talk.commands[3]
    assert line == (
        'SET VARIABLE CRM_CONTACT_NAME "Ivan \\"Vanya\\" Petrov\\\\ HANGUP EXEC Dial PJSIP/666"'
    )
    assert asterisk_parse_args(line) == [
        "SET",
        "VARIABLE",
        "CRM_CONTACT_NAME",
        'Ivan "Vanya" Petrov\\ HANGUP EXEC Dial PJSIP/666',
    ]


async def test_an_owner_extension_that_is_not_dialable_is_not_set(harness):
    rec = load_recording("caller_check")
    contacts = {
        **LOCAL_CONTACTS,
        "contacts": [{"number": "+79031234567", "owner_extension": "7181&PJSIP/666"}],
    }
    server = await harness.start([contacts])
    talk = await fastagi_session(server.port, rec.env, [*rec.replies, OK])
    assert talk.commands[-1] == "SET VARIABLE CRM_LOOKUP_STATUS FOUND"


CRM_LOOKUP_ENV = dict(
    agi_network_script="crm_lookup",
    agi_request="agi://127.0.0.1:4573/crm_lookup",
    agi_arg_1="ticket",
    agi_arg_2="vip",
)


async def test_crm_lookup_posts_the_jtel_parameters_and_flattens_the_record(harness, jtel):
    """Environment: the recorded caller_check one, renamed to crm_lookup with two arguments
    (not recorded as such); replies are SET VARIABLE's recorded `200 result=1`."""
    rec = load_recording("caller_check")
    jtel.records["79031234567"] = {
        "Contact": {"Name": 'O"Brien\nLtd', "Phones": ["+7903", "+7916"]},
        "Case": {"Id": 42, "Open": True},
    }
    server = await harness.start(
        [{"type": "jtel", "name": "crm", "url": jtel.url}],
        crm_lookup={"source": "crm", "service_names": {"4951110000": "Support line"}},
    )
    env = with_env(rec.env, **CRM_LOOKUP_ENV)
    talk = await fastagi_session(server.port, env, [OK] * 8)
    assert jtel.requests == [
        {
            "CallerID": "79031234567",
            "ServiceNumber": "4951110000",
            "ServiceName": "Support line",
            "Function": "ticket",
            "UserData": "vip",
            "UserData2": "",
            "UserData3": "",
        }
    ]
    assert talk.commands == [
        "SET VARIABLE CRM_LOOKUP_STATUS FOUND",
        "SET VARIABLE CRM_FOUND 1",
        'SET VARIABLE CRM_CONTACT_NAME "O\\"Brien Ltd"',
        "SET VARIABLE CRM_CONTACT_PHONES_COUNT 2",
        "SET VARIABLE CRM_CONTACT_PHONES_1 +7903",
        "SET VARIABLE CRM_CONTACT_PHONES_2 +7916",
        "SET VARIABLE CRM_CASE_ID 42",
        "SET VARIABLE CRM_CASE_OPEN 1",
    ]


@pytest.mark.parametrize(
    ("record", "status"), [(["a", "b"], "MULTIPLE"), (None, "NOTFOUND")], ids=["300", "404"]
)
async def test_crm_lookup_maps_300_and_404_without_record_variables(harness, jtel, record, status):
    rec = load_recording("caller_check")
    if record is not None:
        jtel.records["79031234567"] = record
    server = await harness.start([{"type": "jtel", "name": "crm", "url": jtel.url}])
    talk = await fastagi_session(server.port, with_env(rec.env, **CRM_LOOKUP_ENV), [OK, OK])
    assert talk.commands == [
        f"SET VARIABLE CRM_LOOKUP_STATUS {status}",
        "SET VARIABLE CRM_FOUND 0",
    ]


async def test_recorded_survey_reads_the_digit_and_queues_the_rating(harness):
    """The first four commands are the recorded ones. Then pbxcrm reads the agent extension
    and the Linkedid and thanks the caller: those replies are hand-written."""
    rec = load_recording("survey")
    server = await harness.start([])
    extra = [
        b"200 result=1 (7070)\n",
        b"200 result=1 (1795418044.10)\n",
        b"200 result=0 endpos=9120\n",
    ]
    talk = await fastagi_session(server.port, rec.env, [*rec.replies, *extra])
    assert talk.commands[:4] == rec.sent
    assert talk.commands[4:] == [
        "GET VARIABLE SURVEY_AGENT",
        "GET VARIABLE CHANNEL(linkedid)",
        'STREAM FILE auth-thankyou ""',
    ]
    [survey] = harness.surveys
    assert (survey.number, survey.extension, survey.rating, survey.question) == (
        "+79031234567",
        "7070",
        7,
        "q1",
    )
    assert survey.linkedid == "1795418044.10"
    assert set(survey.event_data()) == {"rating", "extension", "number", "question", "at"}


async def test_survey_retries_an_invalid_digit_and_a_timeout(harness):
    """GET DATA's timeout reply `200 result= (timeout)` is from the AGI reference, not recorded."""
    rec = load_recording("survey")
    server = await harness.start([], survey={"attempts": 3})
    replies = [
        rec.replies[0],
        b"200 result=0\n",  # pressed 0: out of 1-9
        b"200 result=0 endpos=5000\n",  # the invalid prompt
        b"200 result= (timeout)\n",
        b"200 result=3\n",
        OK,
        OK,
        b"200 result=0\n",  # SURVEY_AGENT not set
        b"200 result=0\n",
        b"200 result=0 endpos=9120\n",
    ]
    talk = await fastagi_session(server.port, rec.env, replies)
    assert talk.commands == [
        'STREAM FILE beep ""',
        "GET DATA beep 5000 1",
        'STREAM FILE option-is-invalid ""',
        "GET DATA beep 5000 1",
        "GET DATA beep 5000 1",
        "SET VARIABLE SURVEY_RESULT 3",
        'VERBOSE "survey answer 3" 1',
        "GET VARIABLE SURVEY_AGENT",
        "GET VARIABLE CHANNEL(linkedid)",
        'STREAM FILE auth-thankyou ""',
    ]
    assert [s.rating for s in harness.surveys] == [3]
    assert harness.surveys[0].extension is None


async def test_a_caller_hanging_up_mid_survey_is_logged_not_an_error(harness, caplog):
    """The recorded caller_hangs_up_mid_script session, with its script name changed to survey
    and the intro prompt set to the recorded vm-intro: STREAM FILE answers -1 (caller gone
    while it played), the next command gets the recorded HANGUP + 511."""
    rec = load_recording("caller_hangs_up_mid_script")
    server = await harness.start([], survey={"intro_prompts": ["vm-intro"]})
    env = with_env(rec.env, agi_network_script="survey")
    with caplog.at_level(logging.INFO, "pbxcrm.agi"):
        talk = await fastagi_session(server.port, env, rec.replies)
    assert talk.commands == ['STREAM FILE vm-intro ""', "GET DATA beep 5000 1"]
    assert talk.closed_by_server
    assert harness.surveys == []
    assert "hung up before rating" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_the_recorded_hangup_transcript_replays_command_for_command(harness):
    """The lab's own `long_prompt` script, rebuilt on the channel interface, sends exactly the
    recorded lines; after HANGUP each command reads its own reply, not the one before."""
    rec = load_recording("caller_hangs_up_mid_script")
    seen: list[object] = []

    async def long_prompt(channel, context: ScriptContext) -> str:
        for name, call in [
            ("play", lambda: channel.stream_file("vm-intro")),
            ("play", lambda: channel.stream_file("vm-intro")),
            ("get", lambda: channel.get_variable("CALLERID(num)")),
            ("play", lambda: channel.stream_file("beep")),
            ("set", lambda: channel.set_variable("CRM_NOTE", "caller_left")),
            ("hangup", lambda: channel.hangup()),
        ]:
            try:
                seen.append((name, await call()))
            except Exception as exc:
                seen.append((name, type(exc).__name__))
        return "ok"

    SCRIPTS["long_prompt"] = Script("long_prompt", long_prompt)
    try:
        server = await harness.start([])
        talk = await fastagi_session(server.port, rec.env, rec.replies)
    finally:
        del SCRIPTS["long_prompt"]
    assert talk.commands == rec.sent
    assert seen == [
        ("play", "PlaybackFailed"),
        ("play", "AgiHangup"),
        ("get", "+79094445566"),
        ("play", "AgiHangup"),
        ("set", None),
        ("hangup", "AgiHangup"),
    ]


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    return await asyncio.wait_for(reader.read(), 5) == b""


@pytest.mark.parametrize(
    ("garbage", "client_closes"),
    [
        (b"", True),  # port scan: connect and close
        (b"agi_network: yes\nagi_network_script: caller_check\n", True),  # cut off
        (b"GET / HTTP/1.1\r\nHost: pbx\r\n\r\n", False),
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(256)), False),
        (b"\n", False),
    ],
    ids=["portscan", "cut-off", "http", "tls-binary", "blank"],
)
async def test_garbage_connections_are_closed_and_logged_without_disturbing_others(
    harness, garbage, client_closes, caplog
):
    rec = load_recording("caller_check")
    server = await harness.start([LOCAL_CONTACTS])
    with caplog.at_level(logging.WARNING, "pbxcrm.agi"):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(garbage)
        await writer.drain()
        if client_closes:
            writer.write_eof()
        assert await _closed_by_server(reader)
        writer.close()
        talk = await fastagi_session(server.port, rec.env, [*rec.replies, OK, OK, OK])
    assert talk.commands[1] == "SET VARIABLE CRM_FOUND 1"
    assert "FastAGI" in caplog.text


async def test_a_silent_connection_is_dropped_after_the_environment_timeout(harness):
    server = await harness.start([], env_timeout_seconds=0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    assert await _closed_by_server(reader)
    writer.close()


async def test_a_port_scan_storm_keeps_the_event_loop_responsive(harness):
    rec = load_recording("caller_check")
    server = await harness.start([LOCAL_CONTACTS])
    worst = 0.0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal worst
        while not stop.is_set():
            before = time.monotonic()
            await asyncio.sleep(0)
            worst = max(worst, time.monotonic() - before)

    async def scan() -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.close()

    tick = asyncio.create_task(ticker())
    await asyncio.gather(*(scan() for _ in range(200)))
    talk = await fastagi_session(server.port, rec.env, [*rec.replies, OK, OK, OK])
    stop.set()
    await tick
    assert talk.commands[1] == "SET VARIABLE CRM_FOUND 1"
    assert worst < 0.5
    assert server.sessions_total >= 201


async def test_an_unknown_script_is_logged_and_the_call_goes_on(harness, caplog):
    rec = load_recording("caller_hangs_up_mid_script")  # asks for long_prompt
    server = await harness.start([])
    with caplog.at_level(logging.ERROR, "pbxcrm.agi"):
        talk = await fastagi_session(server.port, rec.env, [])
    assert talk.commands == [] and talk.closed_by_server
    assert "unknown script 'long_prompt'" in caplog.text


async def test_a_script_bug_still_gives_the_dialplan_its_error_status(harness, caplog):
    rec = load_recording("caller_check")

    async def broken(channel, context) -> str:
        raise RuntimeError("bug")

    original = SCRIPTS["caller_check"]
    SCRIPTS["caller_check"] = Script("caller_check", broken, original.on_failure)
    try:
        server = await harness.start([])
        talk = await fastagi_session(server.port, rec.env, [OK, OK])
    finally:
        SCRIPTS["caller_check"] = original
    assert talk.commands == [
        "SET VARIABLE CRM_FOUND 0",
        "SET VARIABLE CRM_LOOKUP_STATUS ERROR",
    ]


async def test_each_session_is_counted_by_script_and_outcome(harness):
    from crm.metrics import agi_sessions_total

    counter = agi_sessions_total.labels(script="caller_check", outcome="found")
    before = counter._value.get()
    rec = load_recording("caller_check")
    server = await harness.start([LOCAL_CONTACTS])
    await fastagi_session(server.port, rec.env, [*rec.replies, OK, OK, OK])
    assert counter._value.get() == before + 1


async def test_a_reply_that_never_comes_ends_the_session_after_the_reply_timeout(harness, caplog):
    rec = load_recording("caller_check")
    server = await harness.start([LOCAL_CONTACTS], reply_timeout_seconds=0.3)
    with caplog.at_level(logging.ERROR, "pbxcrm.agi"):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(rec.env)
        assert await asyncio.wait_for(reader.readline(), 5) == b"GET VARIABLE CALLERID(num)\n"
        assert await _closed_by_server(reader)  # no reply from us: the server gives up
        writer.close()
        # The server is still there for the next call.
        talk = await fastagi_session(server.port, rec.env, [*rec.replies, OK, OK, OK])
    assert "no reply to GET VARIABLE within 0.3 s" in caplog.text
    assert talk.commands[1] == "SET VARIABLE CRM_FOUND 1"


async def test_each_reply_has_its_own_timeout_not_the_whole_session(harness, caplog):
    """Every reply comes within the limit, all of them together do not: the session goes on.

    (The server moves one timer per session instead of setting one per command.)"""
    rec = load_recording("caller_check")
    server = await harness.start([LOCAL_CONTACTS], reply_timeout_seconds=1.5)
    replies = [*rec.replies, OK, OK, OK]
    with caplog.at_level(logging.DEBUG, "pbxcrm.agi"):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(rec.env)
        commands = []
        while line := await asyncio.wait_for(reader.readline(), 5):
            commands.append(line.decode().rstrip("\n"))
            await asyncio.sleep(0.5)
            writer.write(replies.pop(0))
        writer.close()
    assert len(commands) == 5 and commands[-1] == "SET VARIABLE CRM_OWNER_EXTENSION 7181"
    assert "no reply" not in caplog.text
    assert "is FOUND" in caplog.text  # the script's own end-of-session line


@pytest.mark.parametrize("piece", [1, 7, 10_000], ids=["byte-by-byte", "7-byte-pieces", "whole"])
async def test_the_environment_is_read_whole_however_it_is_cut(harness, piece):
    rec = load_recording("caller_check")
    server = await harness.start([LOCAL_CONTACTS])
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    for start in range(0, len(rec.env), piece):
        writer.write(rec.env[start : start + piece])
        await writer.drain()
    talk = await converse(reader, writer, b"", [*rec.replies, OK, OK, OK])
    writer.close()
    assert talk.commands[:2] == rec.sent


@pytest.mark.parametrize("lines", [1, 2])
async def test_a_short_environment_ends_at_its_blank_line(harness, lines):
    env = [b"agi_network_script: caller_check\n", b"agi_callerid: +79031234567\n"][:lines]
    server = await harness.start([LOCAL_CONTACTS])
    talk = await fastagi_session(server.port, b"".join(env) + b"\n", [OK] * 5, "127.0.0.1")
    assert talk.commands[0] == "GET VARIABLE CALLERID(num)"
    assert talk.closed_by_server


async def test_the_lookup_budget_covers_every_source_together(harness):
    rec = load_recording("caller_check")
    first, second = JtelForAgi({}), JtelForAgi({})
    await first.start()
    await second.start()
    try:
        first.hang = second.hang = True
        lookups = [
            {"type": "jtel", "name": "a", "url": first.url, "timeout_seconds": 30},
            {"type": "jtel", "name": "b", "url": second.url, "timeout_seconds": 30},
        ]
        server = await harness.start(lookups, lookup_budget_seconds=0.3)
        talk = await fastagi_session(server.port, rec.env, [*rec.replies, OK])
    finally:
        await first.stop()
        await second.stop()
    assert talk.commands[-1] == "SET VARIABLE CRM_LOOKUP_STATUS ERROR"
    assert len(first.requests) == 1
    assert second.requests == []  # the first one spent the whole budget
