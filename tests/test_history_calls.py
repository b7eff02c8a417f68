"""Call history over a store filled by replaying recorded calls through the real pipeline."""

from __future__ import annotations

import csv
import io

import pytest

from ari_app.calls.pipeline import Pipeline
from ari_app.calls.rules import CallRules
from ari_app.web.deps import HttpDeps
from crm.store.history import HistoryError, HistoryQuery, query_calls
from crm.store.sqlite import Store
from tests.recordings import recorded_frames
from tests.test_http_support import basic, bearer, make_settings, running

SCENARIOS = [
    "inbound_answered_caller_hangs_up",  # +79031234567
    "ivr_agi_survey",  # +79031234567 again, no agent
    "inbound_answered_recorded",  # +79037654321, recording 1795418967.2.wav
    "outbound_agent_dials",  # 7070 -> 89161234567
    "inbound_no_answer_voicemail",  # +79262223344
]


@pytest.fixture
async def filled(tmp_path):
    settings = make_settings(tmp_path)
    store = await Store.open(settings.store)
    rules = CallRules(recording_url_template="https://pbx.example/recordings/{file}")
    for scenario in SCENARIOS:
        pipeline = Pipeline(rules, store, [], pbx_id="lab")
        for frame in recorded_frames(scenario):
            pipeline.on_ami_frame(frame)
        await pipeline.drain()
    yield settings, store
    await store.close()


async def test_a_number_matches_in_e164_national_and_digit_forms(filled):
    _settings, store = filled
    for number in ("+79031234567", "89031234567", "79031234567", "+7 (903) 123-45-67"):
        page = await query_calls(store.reader, HistoryQuery(number=number), region="RU")
        assert {row.call_id for row in page.calls} == {"1795417965.0", _ivr_call_id()}, number
    page = await query_calls(store.reader, HistoryQuery(number="+79161234567"), region="RU")
    (outbound,) = page.calls
    assert outbound.incoming is False
    assert outbound.extension == "7070"
    assert outbound.number == "89161234567"  # as stored
    assert outbound.disposition == "answered"


def _ivr_call_id() -> str:
    frame = next(f for f in recorded_frames("ivr_agi_survey") if f.get("Event") == "Newchannel")
    return frame["Linkedid"]


async def test_cursor_pages_walk_every_call_once_newest_first(filled):
    _settings, store = filled
    seen: list[str] = []
    starts: list[str] = []
    cursor = None
    while True:
        page = await query_calls(store.reader, HistoryQuery(limit=2, cursor=cursor), region="RU")
        seen += [row.call_id for row in page.calls]
        starts += [row.time for row in page.calls]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == len(SCENARIOS)
    assert starts == sorted(starts, reverse=True)


@pytest.mark.parametrize(
    "evil",
    ["' OR '1'='1", "1; DROP TABLE calls; --", "7903') OR 1=1 --", "\x00", "%' OR 1 --"],
)
async def test_sql_injection_attempts_find_nothing_and_break_nothing(filled, evil):
    _settings, store = filled
    page = await query_calls(store.reader, HistoryQuery(extension=evil), region="RU")
    assert page.calls == []
    with pytest.raises(HistoryError):
        await query_calls(store.reader, HistoryQuery(cursor=evil), region="RU")
    everything = await query_calls(store.reader, HistoryQuery(), region="RU")
    assert len(everything.calls) == len(SCENARIOS)


async def test_the_http_history_answers_json_with_the_recording_url(filled):
    settings, store = filled
    async with running(HttpDeps(settings=settings, store=store)) as server:
        async with server.session.get(
            server.url("/api/v1/calls?number=89037654321"), headers=bearer()
        ) as resp:
            assert resp.status == 200
            body = await resp.json()
    (call,) = body["calls"]
    assert call["incoming"] is True
    assert call["extension"] == "7181"
    assert call["number"] == "+79037654321"
    assert call["recording_file"] == "1795418967.2.wav"
    assert call["recording_url"] == "https://pbx.example/recordings/1795418967.2.wav"
    assert call["duration"] == pytest.approx(5.0, abs=0.1)
    assert body["next_cursor"] is None


async def test_fixdigital_gets_csv_with_basic_auth(filled):
    settings, store = filled
    async with running(HttpDeps(settings=settings, store=store)) as server:
        async with server.session.get(
            server.url("/api/v1/calls?number=%2B79031234567&format=csv"), headers=basic()
        ) as resp:
            assert resp.status == 200
            assert resp.content_type == "text/csv"
            rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert len(rows) == 2
    assert rows[0].keys() >= {"time", "extension", "number", "duration", "incoming"}
    assert {row["number"] for row in rows} == {"'+79031234567"}  # formula-safe cell


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("number=abc", "number"),
        ("number=1'%20OR%201=1", "number"),
        ("limit=0", "limit"),
        ("limit=lots", "limit"),
        ("from=yesterday", "from"),
        ("from=2026-11-24T00:00:00&to=2026-11-23T00:00:00", "(body)"),
        ("cursor=%27%3B--", "cursor"),
        ("cursor=abcd", "cursor"),
        ("format=xml", "format"),
        ("sql=SELECT", "sql"),
        ("limit=501", "limit"),
    ],
)
async def test_bad_history_parameters_get_422_naming_the_field(filled, query, field):
    settings, store = filled
    async with running(HttpDeps(settings=settings, store=store)) as server:
        async with server.session.get(server.url(f"/api/v1/calls?{query}"), headers=bearer()) as r:
            assert r.status == 422
            body = await r.json()
    assert body["error"] == "invalid request"
    assert field in [f["field"] for f in body["fields"]]


async def test_time_window_limits_the_calls(filled):
    settings, store = filled
    async with running(HttpDeps(settings=settings, store=store)) as server:
        async with server.session.get(
            server.url("/api/v1/calls?from=2030-01-01T00:00:00Z"), headers=bearer()
        ) as resp:
            assert (await resp.json())["calls"] == []
        async with server.session.get(
            server.url("/api/v1/calls?from=2026-11-01&to=2026-12-01"), headers=bearer()
        ) as resp:
            assert len((await resp.json())["calls"]) == len(SCENARIOS)


@pytest.mark.parametrize(
    "cell",
    [
        "=1+1",
        "+79031234567",
        "-2+3",
        "@SUM(A1)",
        "\t=1+1",
        "\r=1+1",
        "\n=1+1",
        "\tplain",
        '  =HYPERLINK("http://evil.example")',
        "\u00a0=1+1",
        "\uff1d1+1",
        "\uff0b1",
        "\uff20x",
    ],
)
def test_every_cell_a_spreadsheet_would_evaluate_is_made_plain_text(cell):
    from ari_app.web.calls import _csv

    text = _csv([{"number": cell, "extension": "7181"}])
    (row,) = list(csv.DictReader(io.StringIO(text)))
    assert row["number"] == "'" + cell
    assert row["extension"] == "7181"  # ordinary cells are left alone


async def test_times_are_iso_8601_only_not_a_bare_number_read_as_unix_time(filled):
    settings, store = filled
    async with running(HttpDeps(settings=settings, store=store)) as server:
        for query in ("to=0.5", "from=1795417965", "to=-3e2"):
            async with server.session.get(
                server.url(f"/api/v1/calls?{query}"), headers=bearer()
            ) as resp:
                assert resp.status == 422, query
                assert "ISO 8601" in (await resp.json())["fields"][0]["message"]
        async with server.session.get(
            server.url("/api/v1/calls?from=2026-01-01T00:00:00Z"), headers=bearer()
        ) as resp:
            assert resp.status == 200
