"""pbxcrm as the cal4care DBN server a 3CX call flow asks (cal4care-3cx-dbn-http-api.txt):
the spec's own example requests, and the sloppy variants real call flows send.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from yarl import URL

from tests.test_3cx_support import (
    DBN_TOKEN,
    TEMPLATE_PASSWORD,
    TEMPLATE_USER,
    Site,
    running_site,
    wait_for,
)

# cal4care-3cx-dbn-http-api.txt 1.6 and 2.7, with [Host Domain] ours. The space after `?` and
# the space in `Scheduled Later` are in the spec; a client sends them percent-encoded.
SPEC_LOOKUP = "/3cx/query? cid=123&token=d6bcfeee-8eea-65cd-f4d6-166585973ea2"
SPEC_NOTE = (
    "/3cx/query?cid=123&status=Scheduled Later&Comments=Due to driving"
    "&token=d6bcfeee-8eea-65cd-f4d6-166585973ea2"
)


async def _get(site: Site, path_and_query: str) -> tuple[int, str]:
    async with site.session.get(URL(site.base + path_and_query, encoded=False)) as resp:
        return resp.status, await resp.text()


async def _notes(site: Site) -> list[tuple[str | None, str | None, str | None, str | None]]:
    assert site.service.store is not None
    rows = await site.service.store.reader.execute_fetchall(
        "SELECT number, status, comments, call_id FROM notes ORDER BY id"
    )
    return [tuple(row) for row in rows]  # type: ignore[misc]


async def test_the_specs_lookup_example_answers_true_for_a_known_caller(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site:
        assert site.service.store is not None
        await site.service.store.upsert_contact("123", name="Spec Caller")
        status, text = await _get(site, SPEC_LOOKUP)
        assert status == 200
        assert json.loads(text) == {"success": True}
        # Our answer is strict JSON, without the spec's trailing comma.
        assert ",\n}" not in text and ",}" not in text


async def test_an_unknown_caller_gets_success_false(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site:
        status, text = await _get(site, f"/3cx/query?cid=79990000000&token={DBN_TOKEN}")
        assert (status, json.loads(text)) == (200, {"success": False})


async def test_a_caller_known_to_a_lookup_source_counts_as_known(tmp_path: Path) -> None:
    lookup = [
        {
            "type": "local",
            "name": "book",
            "default_region": "RU",
            "contacts": [{"number": "+7 903 123-45-67", "name": "Ivan Petrov"}],
        }
    ]
    async with running_site(tmp_path, lookup=lookup) as site:
        # The call flow sends the number in its own format: national digits.
        status, text = await _get(site, f"/3cx/query?cid=89031234567&token={DBN_TOKEN}")
        assert (status, json.loads(text)) == (200, {"success": True})


async def test_a_failing_lookup_source_still_lets_local_contacts_answer(tmp_path: Path) -> None:
    dead = [{"type": "dbn", "base_url": "http://127.0.0.1:9", "token": "t" * 20}]
    async with running_site(tmp_path, lookup=dead) as site:
        assert site.service.store is not None
        await site.service.store.upsert_contact("+79031234567", name="Ivan Petrov")
        status, text = await _get(site, f"/3cx/query?cid=%2B79031234567&token={DBN_TOKEN}")
        assert (status, json.loads(text)) == (200, {"success": True})


async def test_the_specs_note_example_saves_the_note_and_forwards_it(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site:
        status, text = await _get(site, SPEC_NOTE)
        assert status == 200
        assert json.loads(text)["success"] == 1
        # `Scheduled Later` is kept and forwarded in the spec's spelling.
        notes = await _notes(site)
        assert [n[:3] for n in notes] == [("123", "Schedule Later", "Due to driving")]
        await wait_for(lambda: len(site.dbn.notes) == 1)
        forwarded = site.dbn.notes[0]
        assert (forwarded["cid"], forwarded["status"], forwarded["comments"]) == (
            "123",
            "Schedule Later",
            "Due to driving",
        )
        await wait_for(lambda: any(e["kind"] == "note" for e in site.events()))
        note = next(e for e in site.events() if e["kind"] == "note")
        assert note["data"]["status"] == "Schedule Later"
        assert note["data"]["number"] == "123"


async def test_a_form_post_with_names_in_any_case_saves_a_note(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site:
        form = {
            "CID": "123",
            "Status": "do not disturb",
            "COMMENTS": "Call me tomorrow",
            "Token": DBN_TOKEN,
            "Ext": "101",
        }
        async with site.session.post(site.url("/3cx/query"), data=form) as resp:
            assert resp.status == 200
            assert (await resp.json())["success"] == 1
        assert [n[:3] for n in await _notes(site)] == [
            ("123", "Do not Disturb", "Call me tomorrow")
        ]


async def test_a_json_post_is_accepted_too(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site:
        body = {"cid": "123", "status": "Completed", "comments": "Sold", "token": DBN_TOKEN}
        # The token rides in the query; JSON bodies carry the fields.
        async with site.session.post(site.url(f"/3cx/query?token={DBN_TOKEN}"), json=body) as resp:
            assert resp.status == 200
            assert (await resp.json())["success"] == 1
        assert [n[:3] for n in await _notes(site)] == [("123", "Completed", "Sold")]


async def test_a_lookup_by_form_post_works_like_the_get(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site:
        assert site.service.store is not None
        await site.service.store.upsert_contact("123", name="Spec Caller")
        form = {"cid": "123", "token": DBN_TOKEN}
        async with site.session.post(site.url("/3cx/query"), data=form) as resp:
            assert (resp.status, await resp.json()) == (200, {"success": True})


async def test_an_unknown_status_is_refused_with_success_0_and_saves_nothing(
    tmp_path: Path,
) -> None:
    async with running_site(tmp_path) as site:
        status, text = await _get(
            site, f"/3cx/query?cid=123&status=Maybe&comments=x&token={DBN_TOKEN}"
        )
        body = json.loads(text)
        assert status == 422
        assert body["success"] == 0
        assert "No Answer, Schedule Later, Do not Disturb, Completed" in body["error"]
        assert await _notes(site) == []


async def test_a_request_without_cid_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site:
        status, text = await _get(site, f"/3cx/query?token={DBN_TOKEN}")
        assert (status, json.loads(text)) == (422, {"success": False, "error": "cid is required"})
        status, text = await _get(site, f"/3cx/query?cid=abc&status=Completed&token={DBN_TOKEN}")
        assert (status, json.loads(text)["error"]) == (422, "cid has no digits")


async def test_a_broken_json_body_gets_400_and_valid_json(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site:
        async with site.session.post(
            site.url(f"/3cx/query?token={DBN_TOKEN}"),
            data='{"cid": "123",}',
            headers={"Content-Type": "application/json"},
        ) as resp:
            assert resp.status == 400
            assert await resp.json() == {"success": False, "error": "body is not valid JSON"}


async def test_the_endpoint_refuses_a_wrong_or_missing_token(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site:
        status, text = await _get(site, "/3cx/query?cid=123&token=" + "0" * 36)
        assert (status, json.loads(text)) == (401, {"error": "unauthorized"})
        status, text = await _get(site, "/3cx/query?cid=123")
        assert status == 401
        # A token-only client may not use basic auth with a made-up user, either.
        bad = base64.b64encode(b"3cx:wrong-password").decode()
        async with site.session.get(
            site.url("/3cx/query?cid=123"), headers={"Authorization": f"Basic {bad}"}
        ) as resp:
            assert resp.status == 401


async def test_basic_auth_and_a_header_token_work_as_well_as_the_token_field(
    tmp_path: Path,
) -> None:
    async with running_site(tmp_path) as site:
        good = base64.b64encode(f"{TEMPLATE_USER}:{TEMPLATE_PASSWORD}".encode()).decode()
        async with site.session.get(
            site.url("/3cx/query?cid=123"), headers={"Authorization": f"Basic {good}"}
        ) as resp:
            assert (resp.status, await resp.json()) == (200, {"success": False})
        async with site.session.get(
            site.url("/3cx/query?cid=123"), headers={"X-Api-Token": DBN_TOKEN}
        ) as resp:
            assert (resp.status, await resp.json()) == (200, {"success": False})


async def test_the_token_never_appears_in_the_logs(tmp_path: Path, caplog) -> None:
    caplog.set_level("DEBUG")
    async with running_site(tmp_path) as site:
        await _get(site, SPEC_NOTE)
        await _get(site, "/3cx/query?cid=123&status=Nope&comments=x&token=" + DBN_TOKEN)
        await wait_for(lambda: len(site.dbn.notes) == 1)
    assert DBN_TOKEN not in caplog.text
