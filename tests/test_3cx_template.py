"""config/3cx/pbxcrm.xml executed, not just parsed: the runner plays 3CX's CRM engine against a
running pbxcrm on 127.0.0.1 (lookup for the screen pop, ReportCall journaling), and the
journaled calls reach a webhook CRM as the same lifecycle an Asterisk call has.

3CX itself is not available to the tests: the variables 3CX fills in ([Number], [CallType],
[Agent], [Duration] as hh:mm:ss, [CallStartTimeUTC] as a DateTime...) are set by hand as its
template documentation describes them.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.test_3cx_support import (
    DBN_TOKEN,
    TEMPLATE,
    TEMPLATE_PASSWORD,
    TEMPLATE_USER,
    Site,
    running_site,
    wait_for,
)
from tests.threecx_runner import Culture, TemplateRunner

BASIC = aiohttp.encode_basic_auth(TEMPLATE_USER, TEMPLATE_PASSWORD)
# .NET's DateTime.MinValue: what a call's time renders as when the call never reached it.
NEVER = datetime(1, 1, 1, tzinfo=UTC)


def runner(
    site: Site, culture: Culture | None = None, missing: str = "empty", **parameters: str
) -> TemplateRunner:
    values = {"BaseUrl": site.base, "Username": TEMPLATE_USER, "Password": TEMPLATE_PASSWORD}
    return TemplateRunner(
        TEMPLATE,
        {**values, **parameters},
        site.session,
        culture=culture or Culture(),
        missing=missing,
    )


def report(call_type: str, ring: int = 10, **overrides: Any) -> dict[str, Any]:
    """What 3CX fills in for ReportCall; the start is a few minutes ago, as for a real call.
    Answered calls ring `ring` seconds, then talk for [Duration] (65 s)."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    answered = call_type in ("Inbound", "Outbound")
    established = start + timedelta(seconds=ring) if answered else NEVER
    end = (established + timedelta(seconds=65)) if answered else start + timedelta(seconds=20)
    variables: dict[str, Any] = {
        "CallType": call_type,
        "Number": "+79031234567",
        "Name": "Ivan Petrov",
        "Agent": "101",
        "AgentEmail": "anna@example.com",
        "AgentFirstName": "Anna",
        "AgentLastName": "Smirnova",
        "Duration": "00:01:05",
        "CallStartTimeUTC": start,
        "CallEstablishedTimeUTC": established,
        "CallEndTimeUTC": end,
        "EntityId": "79031234567",
        "EntityType": "Contacts",
    }
    variables.update(overrides)
    return variables


def kinds(events: list[dict[str, Any]], call_id: str) -> list[str]:
    return [e["kind"] for e in events if e["call_id"] == call_id]


async def test_the_lookup_scenario_pops_the_contact_with_name_company_and_url(
    tmp_path: Path,
) -> None:
    async with running_site(tmp_path) as site:
        assert site.service.store is not None
        await site.service.store.upsert_contact(
            "+7 903 123-45-67",
            name="Ivan Petrov",
            company="Acme LLC",
            url="https://crm.example/contacts/42",
        )
        run = await runner(site).lookup("+79031234567")
        assert run.status == 200
        assert run.matched
        assert run.outputs == [
            {
                "ContactID": "79031234567",
                "FirstName": "Ivan",
                "LastName": "Petrov",
                "CompanyName": "Acme LLC",
                "Email": "",
                "PhoneBusiness": "+79031234567",
                "PhoneBusiness2": "+7 903 123-45-67",
                "ContactUrl": "https://crm.example/contacts/42",
                "EntityId": "79031234567",
                "EntityType": "Contacts",
            }
        ]
        # 3CX keeps the contact only because a phone equals the number it searched.
        assert run.kept_contacts("+79031234567") == run.outputs


async def test_a_contact_stored_in_another_format_is_kept_for_every_searched_format(
    tmp_path: Path,
) -> None:
    async with running_site(tmp_path, threecx={"default_region": "RU"}) as site:
        assert site.service.store is not None
        await site.service.store.upsert_contact("+7 903 123-45-67", name="Ivan Petrov")
        for searched in ("89031234567", "+79031234567", "79031234567"):
            run = await runner(site).lookup(searched)
            assert run.matched, searched
            assert [o["PhoneBusiness"] for o in run.kept_contacts(searched)] == [searched]


async def test_a_contact_without_any_url_gets_pbxcrm_s_own_agent_page(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site:
        assert site.service.store is not None
        await site.service.store.upsert_contact("+79031234567", name="Ivan Petrov")
        run = await runner(site).lookup("+79031234567")
        [output] = run.outputs
        assert output["ContactUrl"] == f"{site.base}/agent"


async def test_behind_a_trusted_tls_proxy_the_fallback_url_is_the_public_https_one(
    tmp_path: Path,
) -> None:
    async with running_site(tmp_path, http={"trusted_proxies": ["127.0.0.1/32"]}) as site:
        assert site.service.store is not None
        await site.service.store.upsert_contact("+79031234567", name="Ivan Petrov")
        headers = {
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "pbx.example.com",
            "Authorization": BASIC,
        }
        async with site.session.get(
            site.url("/3cx/crm/lookup"),
            params={"number": "+79031234567"},
            headers=headers,
        ) as resp:
            [contact] = (await resp.json())["contacts"]
        assert contact["url"] == "https://pbx.example.com/agent"


async def test_forwarded_headers_from_an_untrusted_peer_do_not_change_the_url(
    tmp_path: Path,
) -> None:
    async with running_site(tmp_path) as site:
        assert site.service.store is not None
        await site.service.store.upsert_contact("+79031234567", name="Ivan Petrov")
        async with site.session.get(
            site.url("/3cx/crm/lookup"),
            params={"number": "+79031234567"},
            headers={
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "evil.example",
                "Authorization": BASIC,
            },
        ) as resp:
            [contact] = (await resp.json())["contacts"]
        assert contact["url"] == f"{site.base}/agent"


async def test_an_anonymous_caller_is_looked_up_as_nobody_without_an_error(
    tmp_path: Path,
) -> None:
    async with running_site(tmp_path) as site:
        for withheld in ("", "anonymous", "Withheld"):
            run = await runner(site).lookup(withheld)
            assert (run.status, run.response) == (200, {"contacts": []}), withheld
            assert not run.matched


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "//evil.example/x", "/\\evil.example", "/contacts/42"]
)
async def test_a_contact_link_that_is_not_an_absolute_web_address_is_not_given_to_3cx(
    tmp_path: Path, url: str
) -> None:
    async with running_site(tmp_path) as site:
        assert site.service.store is not None
        await site.service.store.upsert_contact("+7 903 123-45-67", name="Ivan Petrov", url=url)
        run = await runner(site).lookup("+79031234567")
        assert run.matched
        # Not the record's link: the fallback, pbxcrm's own agent page.
        assert run.outputs[0]["ContactUrl"] == site.url("/agent")


async def test_the_lookup_scenario_finds_nobody_for_an_unknown_number(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site:
        run = await runner(site).lookup("+79990000000")
        assert run.status == 200
        assert run.response == {"contacts": []}
        assert not run.matched
        assert run.outputs == []


async def test_a_lookup_source_contact_without_url_gets_the_configured_screen_pop_url(
    tmp_path: Path,
) -> None:
    lookup = [
        {
            "type": "local",
            "name": "book",
            "default_region": "RU",
            "contacts": [{"number": "89031234567", "name": "Ivan", "company": "Acme"}],
        }
    ]
    threecx = {"contact_url_template": "https://crm.example/search?phone={digits}"}
    async with running_site(tmp_path, lookup=lookup, threecx=threecx) as site:
        run = await runner(site).lookup("+79031234567")
        assert run.matched
        [output] = run.outputs
        assert output["FirstName"] == "Ivan"
        assert output["LastName"] == ""
        assert output["CompanyName"] == "Acme"
        assert output["ContactUrl"] == "https://crm.example/search?phone=89031234567"


async def test_a_wrong_password_in_the_template_gets_no_contact(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site:
        assert site.service.store is not None
        await site.service.store.upsert_contact("+79031234567", name="Ivan Petrov")
        run = await runner(site, Password="not-the-password").lookup("+79031234567")
        assert run.status == 401
        assert not run.matched


async def test_an_answered_inbound_call_is_journaled_as_the_asterisk_lifecycle(
    tmp_path: Path,
) -> None:
    async with running_site(tmp_path) as site:
        variables = report("Inbound")
        run = await runner(site).report_call(**variables)
        assert run.status == 200
        assert run.matched  # the Rule on call_id held
        call_id = run.response["call_id"]
        await wait_for(lambda: len(kinds(site.events(), call_id)) == 5)
        events = [e for e in site.events() if e["call_id"] == call_id]
        assert [e["kind"] for e in events] == [
            "ringing",
            "answered",
            "leg_ended",
            "hangup",
            "completed",
        ]
        assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
        final = events[-1]["call"]
        start = variables["CallStartTimeUTC"]
        assert final["source"] == "3cx"
        assert final["direction"] == "inbound"
        assert final["caller_number"] == "+79031234567"
        assert final["caller_name"] == "Ivan Petrov"
        assert final["agent_extension"] == "101"
        assert final["disposition"] == "answered"
        assert final["talk_seconds"] == 65
        assert final["ring_seconds"] == 10
        assert final["ended"] is True
        assert datetime.fromisoformat(final["start_time"]) == start
        assert datetime.fromisoformat(final["answer_time"]) == start + timedelta(seconds=10)
        assert datetime.fromisoformat(final["end_time"]) == start + timedelta(seconds=75)
        assert events[0]["extension"] == "101"
        assert events[-1]["data"]["3cx"]["agent_email"] == "anna@example.com"


async def test_a_missed_call_is_dropped_like_an_abandoned_asterisk_call(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site:
        run = await runner(site).report_call(**report("Missed", Duration="00:00:20"))
        call_id = run.response["call_id"]
        await wait_for(lambda: len(kinds(site.events(), call_id)) == 5)
        assert kinds(site.events(), call_id) == [
            "ringing",
            "leg_ended",
            "hangup",
            "dropped",
            "completed",
        ]
        final = site.events()[-1]["call"]
        assert final["disposition"] == "no-answer"
        assert final["talk_seconds"] == 0
        assert final["ring_seconds"] == 20


async def test_outbound_calls_answered_or_not_are_journaled(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site:
        template = runner(site)
        answered = await template.report_call(**report("Outbound", Number="+79161234567"))
        unanswered = await template.report_call(
            **report("Notanswered", Number="+79161234568", Duration="00:00:00")
        )
        a, u = answered.response["call_id"], unanswered.response["call_id"]
        await wait_for(lambda: len(kinds(site.events(), a)) == 4)
        await wait_for(lambda: len(kinds(site.events(), u)) == 2)
        assert kinds(site.events(), a) == ["answered", "leg_ended", "hangup", "completed"]
        assert kinds(site.events(), u) == ["hangup", "completed"]
        call = next(e["call"] for e in site.events() if e["call_id"] == a)
        assert (call["direction"], call["caller_number"], call["called_number"]) == (
            "outbound",
            "101",
            "+79161234567",
        )


async def test_a_retried_journal_entry_is_recorded_once(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site:
        template = runner(site)
        variables = report("Inbound")
        first = await template.report_call(**dict(variables))
        again = await template.report_call(**dict(variables))
        assert first.response["duplicate"] is False
        assert again.response == {**first.response, "duplicate": True}
        call_id = first.response["call_id"]
        await wait_for(lambda: len(kinds(site.events(), call_id)) == 5)
        # The store holds the steps once; the retry queued nothing (the answer said so first).
        assert site.service.store is not None
        rows = await site.service.store.reader.execute_fetchall(
            "SELECT COUNT(*) FROM call_events WHERE call_id = ?", (call_id,)
        )
        assert rows[0][0] == 5


async def test_journaling_switched_off_in_the_template_sends_nothing(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site:
        run = await runner(site, ReportCallEnabled="False").report_call(**report("Inbound"))
        assert run.skipped
        assert run.status == 0
        assert site.service.store is not None
        rows = await site.service.store.reader.execute_fetchall("SELECT COUNT(*) FROM calls")
        assert rows[0][0] == 0


async def test_a_dbn_note_after_a_journaled_call_joins_that_call(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site:
        run = await runner(site).report_call(**report("Inbound"))
        call_id = run.response["call_id"]
        async with site.session.get(
            site.url("/3cx/query"),
            params={
                "cid": "89031234567",  # the flow's own format; same caller
                "status": "Completed",
                "comments": "Order placed",
                "token": DBN_TOKEN,
            },
        ) as resp:
            assert (await resp.json())["call_id"] == call_id
        await wait_for(lambda: len(kinds(site.events(), call_id)) == 6)
        note = [e for e in site.events() if e["call_id"] == call_id][-1]
        assert (note["kind"], note["seq"]) == ("note", 6)
        assert note["data"]["comments"] == "Order placed"
        await wait_for(lambda: len(site.dbn.notes) == 1)


async def test_a_journal_entry_with_a_bad_call_type_gets_422_naming_the_field(
    tmp_path: Path,
) -> None:
    async with running_site(tmp_path) as site:
        run = await runner(site).report_call(**report("Transferred"))
        assert run.status == 422
        assert run.response["fields"][0]["field"] == "call_type"
        assert not run.matched


async def test_the_journal_endpoint_refuses_requests_without_credentials(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site:
        async with aiohttp.ClientSession() as anonymous:
            async with anonymous.post(
                site.url("/3cx/crm/journal"), json={"callType": "Inbound"}
            ) as resp:
                assert resp.status == 401
                assert resp.headers["WWW-Authenticate"].startswith("Basic")


async def test_the_same_entry_sent_twice_at_once_is_recorded_once(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site:
        template = runner(site)
        variables = report("Missed")
        runs = await asyncio.gather(
            template.report_call(**dict(variables)), template.report_call(**dict(variables))
        )
        assert sorted(run.response["duplicate"] for run in runs) == [False, True]
        call_id = runs[0].response["call_id"]
        await wait_for(lambda: len(kinds(site.events(), call_id)) == 5)
        assert site.service.store is not None
        rows = await site.service.store.reader.execute_fetchall(
            "SELECT COUNT(*) FROM outbox WHERE call_id = ?", (call_id,)
        )
        assert rows[0][0] == 5  # one delivery per step to the webhook; dbn takes only notes


async def test_a_call_with_a_withheld_number_is_journaled_and_reaches_the_crm(
    tmp_path: Path,
) -> None:
    async with running_site(tmp_path) as site:
        template = runner(site)
        call_ids = []
        for minutes, withheld in enumerate(("", "anonymous")):
            variables = report("Missed", Number=withheld)
            variables["CallStartTimeUTC"] += timedelta(minutes=minutes)
            run = await template.report_call(**variables)
            assert run.status == 200, run.response
            assert run.matched
            call_ids.append(run.response["call_id"])
        assert len(set(call_ids)) == 2
        for call_id in call_ids:
            await wait_for(lambda call_id=call_id: len(kinds(site.events(), call_id)) == 5)
            final = [e for e in site.events() if e["call_id"] == call_id][-1]["call"]
            assert final["caller_number"] is None
            assert final["disposition"] == "no-answer"


async def test_dates_survive_a_3cx_server_whose_locale_separates_time_with_dots(
    tmp_path: Path,
) -> None:
    async with running_site(tmp_path) as site:
        dotted = Culture(time_separator=".", date_separator=".")
        variables = report("Inbound")
        run = await runner(site, culture=dotted).report_call(**variables)
        assert run.body["startUtc"] == variables["CallStartTimeUTC"].strftime("%Y-%m-%dT%H:%M:%SZ")
        assert run.status == 200, run.response
        call_id = run.response["call_id"]
        await wait_for(lambda: len(kinds(site.events(), call_id)) == 5)
        final = [e for e in site.events() if e["call_id"] == call_id][-1]["call"]
        assert (final["ring_seconds"], final["talk_seconds"]) == (10, 65)


async def test_variables_3cx_leaves_as_their_own_text_count_as_absent(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site:
        variables = report("Inbound")
        for unfilled in ("AgentEmail", "AgentFirstName", "EntityType", "CallEstablishedTimeUTC"):
            del variables[unfilled]
        run = await runner(site, missing="literal").report_call(**variables)
        assert run.body["agentEmail"] == "[AgentEmail]"  # what 3CX really sends
        assert run.body["answeredUtc"].startswith("[[CallEstablishedTimeUTC]")
        assert run.status == 200, run.response
        call_id = run.response["call_id"]
        await wait_for(lambda: len(kinds(site.events(), call_id)) == 5)
        completed = [e for e in site.events() if e["call_id"] == call_id][-1]
        details = completed["data"]["3cx"]
        assert "agent_email" not in details and "entity_type" not in details
        assert details["agent_name"] == "Smirnova"
        # No answer time: talk is [Duration] before the end, the rest of the call rang.
        assert (completed["call"]["ring_seconds"], completed["call"]["talk_seconds"]) == (10, 65)


async def test_a_journal_field_that_is_no_text_or_number_gets_422(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site:
        start = "2026-01-01T10:00:00Z"
        for bad in ({"callId": False}, {"callId": {}}, {"agent": [101]}, {"number": True}):
            body = {"callType": "Inbound", "number": "+79031234567", "startUtc": start, **bad}
            async with site.session.post(
                site.url("/3cx/crm/journal"), json=body, headers={"Authorization": BASIC}
            ) as resp:
                assert resp.status == 422, bad
        # A JSON integer is a number 3CX may send for the agent or the caller: taken as text.
        body = {"callType": "Inbound", "number": 79031234567, "agent": 101.0, "startUtc": start}
        async with site.session.post(
            site.url("/3cx/crm/journal"), json=body, headers={"Authorization": BASIC}
        ) as resp:
            assert resp.status == 200
            call_id = (await resp.json())["call_id"]
        await wait_for(lambda: len(kinds(site.events(), call_id)) == 5)
        final = [e for e in site.events() if e["call_id"] == call_id][-1]["call"]
        assert (final["caller_number"], final["agent_extension"]) == ("79031234567", "101")
