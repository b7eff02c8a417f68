"""Lookup sources (local, dbn, jtel) and the chain: order, formats, timeouts, TTL cache."""

from __future__ import annotations

import pytest

from crm.lookup import build_lookup_chain, parse_lookup_config
from crm.lookup.base import LookupRequest, LookupStatus
from tests.fakes.crm_dbn import FakeDbn
from tests.fakes.crm_harness import client_session
from tests.fakes.crm_jtel import FakeJtel

DBN_TOKEN = "d6bcfeee-8eea-65cd-f4d6-166585973ea2"
RECORDED_CALLER = "+79031234567"  # agi/caller_check.txt: a known client


@pytest.fixture
async def http():
    async with client_session() as session:
        yield session


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_local_contact_is_found_in_whatever_form_the_caller_id_comes(http, tmp_path):
    csv_file = tmp_path / "contacts.csv"
    csv_file.write_text(
        "number,name,company,owner_extension,tier\n"
        "8 (916) 123-45-67,Olga Petrova,Acme,7181,gold\n"
        ",no number here,,,\n",
        encoding="utf-8",
    )
    chain = build_lookup_chain(
        [
            {
                "type": "local",
                "csv_path": str(csv_file),
                "contacts": [{"number": "+79031234567", "name": "Ivan Ivanov"}],
            }
        ],
        http,
    )
    ivan = await chain.lookup(LookupRequest(number="89031234567"))
    olga = await chain.lookup(LookupRequest(number="+79161234567"))
    nobody = await chain.lookup(LookupRequest(number="+79990000000"))

    assert (ivan.status, ivan.contact_name) == (LookupStatus.FOUND, "Ivan Ivanov")
    assert (olga.contact_name, olga.company, olga.owner_extension) == (
        "Olga Petrova",
        "Acme",
        "7181",
    )
    assert olga.record["tier"] == "gold"
    assert nobody.status == LookupStatus.NOTFOUND


async def test_a_dbn_server_answers_known_and_unknown_callers_in_its_sloppy_json(http):
    async with FakeDbn(token=DBN_TOKEN, known=(RECORDED_CALLER,)) as dbn:
        chain = build_lookup_chain(
            [{"type": "dbn", "base_url": dbn.url, "token": DBN_TOKEN, "cache_ttl_seconds": 0}],
            http,
        )
        known = await chain.lookup(LookupRequest(number=RECORDED_CALLER))
        unknown = await chain.lookup(LookupRequest(number="+79990000000"))
    assert known.status == LookupStatus.FOUND
    assert unknown.status == LookupStatus.NOTFOUND
    assert dbn.requests[0].raw_path == f"/3cx/query?cid=%2B79031234567&token={DBN_TOKEN}"


async def test_a_dbn_html_page_is_an_error_result_not_an_exception(http):
    async with FakeDbn(token=DBN_TOKEN) as dbn:
        dbn.html_error_next(200)
        chain = build_lookup_chain([{"type": "dbn", "base_url": dbn.url, "token": DBN_TOKEN}], http)
        result = await chain.lookup(LookupRequest(number=RECORDED_CALLER))
    assert result.status == LookupStatus.ERROR
    assert "HTML page" in (result.error or "")
    assert DBN_TOKEN not in (result.error or "")


def jtel_block(url: str, **extra) -> dict:
    return {"type": "jtel", "url": f"{url}/lookup", "name_field": "Account.Name", **extra}


async def test_jtel_200_is_one_record_kept_as_json_and_300_404_mean_several_and_none(http):
    record = {"Account": {"Name": "Acme", "Id": "001"}, "Open": 2}
    async with FakeJtel({"79031234567": record, "79161234567": [record, record]}) as jtel:
        chain = build_lookup_chain([jtel_block(jtel.url)], http)
        one = await chain.lookup(
            LookupRequest(
                number=RECORDED_CALLER,
                service_number="4951110000",
                service_name="Hotline",
                function="search",
                user_data=["a", "b"],
            )
        )
        several = await chain.lookup(LookupRequest(number="89161234567"))
        none = await chain.lookup(LookupRequest(number="+79990000000"))

    assert jtel.rejections == []
    assert (one.status, one.record, one.contact_name) == (LookupStatus.FOUND, record, "Acme")
    assert several.status == LookupStatus.MULTIPLE
    assert none.status == LookupStatus.NOTFOUND
    assert jtel.requests[0].form() == [
        ("CallerID", "79031234567"),
        ("ServiceNumber", "4951110000"),
        ("ServiceName", "Hotline"),
        ("Function", "search"),
        ("UserData", "a"),
        ("UserData2", "b"),
        ("UserData3", ""),
    ]


async def test_jtel_as_json_posts_a_json_object(http):
    async with FakeJtel({"79031234567": {"Name": "Ivan"}}) as jtel:
        chain = build_lookup_chain([jtel_block(jtel.url, encoding="json")], http)
        result = await chain.lookup(LookupRequest(number=RECORDED_CALLER))
    assert result.status == LookupStatus.FOUND
    assert jtel.requests[0].json()["CallerID"] == "79031234567"


@pytest.mark.parametrize("trouble", ["500", "html", "garbage", "hang"])
async def test_jtel_trouble_is_an_error_result_with_the_reason(http, trouble):
    async with FakeJtel({"79031234567": {"Name": "Ivan"}}) as jtel:
        if trouble == "500":
            jtel.fail_next(500, '{"error": "db down"}')
        elif trouble == "html":
            jtel.html_error_next(200)
        elif trouble == "garbage":
            jtel.fail_next(200, "Name=Ivan", "text/plain")
        else:
            jtel.hang_next()
        chain = build_lookup_chain([jtel_block(jtel.url, timeout_seconds=0.3)], http)
        result = await chain.lookup(LookupRequest(number=RECORDED_CALLER))
    assert result.status == LookupStatus.ERROR
    expected = {"500": "HTTP 500", "html": "HTML page", "garbage": "not JSON", "hang": "0.3s"}
    assert expected[trouble] in (result.error or "")


async def test_the_chain_asks_sources_in_order_and_the_first_answer_wins(http):
    async with FakeJtel({"79031234567": {"Name": "From jtel"}}) as jtel:
        chain = build_lookup_chain(
            [
                {"type": "local", "contacts": [{"number": "+79161234567", "name": "Local"}]},
                jtel_block(jtel.url, name_field="Name"),
            ],
            http,
        )
        from_jtel = await chain.lookup(LookupRequest(number=RECORDED_CALLER))
        from_local = await chain.lookup(LookupRequest(number="+79161234567"))
    assert (from_jtel.source, from_jtel.contact_name) == ("jtel", "From jtel")
    assert (from_local.source, from_local.contact_name) == ("local", "Local")
    assert len(jtel.requests) == 1  # the local hit never reached jtel


async def test_a_failing_source_does_not_hide_a_later_one(http):
    async with FakeJtel({"79031234567": {"Name": "Ivan"}}) as jtel:
        chain = build_lookup_chain(
            [
                {"type": "dbn", "base_url": "http://127.0.0.1:9", "token": "tttt"},
                jtel_block(jtel.url, name_field="Name"),
            ],
            http,
        )
        result = await chain.lookup(LookupRequest(number=RECORDED_CALLER))
    assert (result.status, result.contact_name) == (LookupStatus.FOUND, "Ivan")


async def test_every_configured_number_format_is_tried_until_one_matches(http):
    async with FakeJtel({"89031234567": {"Name": "Stored nationally"}}) as jtel:
        chain = build_lookup_chain(
            [jtel_block(jtel.url, name_field="Name", number_formats=["e164_no_plus", "national"])],
            http,
        )
        result = await chain.lookup(LookupRequest(number=RECORDED_CALLER))
    assert result.contact_name == "Stored nationally"
    assert [r.form()[0] for r in jtel.requests] == [
        ("CallerID", "79031234567"),
        ("CallerID", "89031234567"),
    ]


async def test_answers_are_cached_for_their_ttl_and_asked_again_after(http):
    clock = Clock()
    async with FakeJtel({"79031234567": {"Name": "Ivan"}}) as jtel:
        chain = build_lookup_chain([jtel_block(jtel.url, cache_ttl_seconds=30)], http)
        chain._clock = clock
        await chain.lookup(LookupRequest(number=RECORDED_CALLER))
        clock.now += 29
        await chain.lookup(LookupRequest(number=RECORDED_CALLER))
        assert len(jtel.requests) == 1
        clock.now += 2
        await chain.lookup(LookupRequest(number=RECORDED_CALLER))
        assert len(jtel.requests) == 2


async def test_the_cache_keeps_at_most_cache_max_entries_answers(http):
    async with FakeJtel({"79031234567": {"Name": "Ivan"}}) as jtel:
        block = jtel_block(jtel.url, cache_ttl_seconds=3600, cache_max_entries=50)
        chain = build_lookup_chain([block], http)
        for n in range(500):  # 500 different callers, each asked once
            await chain.lookup(LookupRequest(number=f"+7903{n:07d}"))
        assert [len(cache) for cache in chain._caches.values()] == [50]
        await chain.lookup(LookupRequest(number=RECORDED_CALLER))
        await chain.lookup(LookupRequest(number=RECORDED_CALLER))
        assert len(jtel.requests) == 501  # the recent answer still comes from the cache


async def test_errors_are_not_cached(http):
    async with FakeJtel({"79031234567": {"Name": "Ivan"}}) as jtel:
        jtel.fail_next(503, "")
        chain = build_lookup_chain([jtel_block(jtel.url)], http)
        first = await chain.lookup(LookupRequest(number=RECORDED_CALLER))
        second = await chain.lookup(LookupRequest(number=RECORDED_CALLER))
    assert (first.status, second.status) == (LookupStatus.ERROR, LookupStatus.FOUND)


def test_an_unknown_lookup_type_or_number_format_is_a_config_error():
    with pytest.raises(ValueError, match="unknown lookup type 'ldap'"):
        parse_lookup_config({"type": "ldap"})
    with pytest.raises(ValueError, match="unknown number format"):
        parse_lookup_config({"type": "local", "number_formats": ["e.164"]})
