"""Click-to-call across two pbxcrm instances sharing one PostgreSQL store: a request
taken by instance A for an extension of B's PBX is sent by B, once, and A reports the outcome.

Each instance follows its own FakePbx replaying the recorded `click_to_call_originate.ami`
(Originate of agent 101 -> "Originate successfully queued" -> OriginateResponse Success).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from ari_app.app.service import Service
from ari_app.app.settings import Settings
from ari_app.pbx.extension_owner import ExtensionOwners
from crm.model import Call
from crm.store.postgres import PgStore
from crm.store.settings import StoreSettings
from tests.fakes.ami_pbx import FakePbx
from tests.pg_server import pg_server_url, pg_url  # noqa: F401 - fixtures
from tests.recordings import ami_path
from tests.test_http_support import CRM_TOKEN, bearer


def _settings(
    tmp_path: Path, pbx_id: str, pbx_port: int, url: str, extensions: list[str]
) -> Settings:
    return Settings.model_validate(
        {
            "pbx": {
                "id": pbx_id,
                "extensions": extensions,
                "relay_poll_seconds": 0.1,
                "ami": {
                    "host": "127.0.0.1",
                    "port": pbx_port,
                    "username": "crm",
                    "password": "crmsecret",
                    "reconnect_max_seconds": 1,
                },
            },
            "store": {"url": url},
            "http": {
                "host": "127.0.0.1",
                "port": 0,
                "clients": [{"name": "crm", "token": CRM_TOKEN, "routes": ["originate"]}],
            },
            "agi": {"enabled": False, "survey_spool": str(tmp_path / f"{pbx_id}-spool.jsonl")},
        }
    )


def _originates(pbx: FakePbx) -> list[dict[str, str]]:
    return [a for a in pbx.received_actions if a.get("Action") == "Originate"]


async def _wait_connected(service: Service) -> None:
    assert service.ami is not None
    await service.ami.wait_connected(10)


async def _poll_until_final(
    session: aiohttp.ClientSession, url: str, timeout: float = 15.0
) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            async with session.get(url, headers=bearer()) as resp:
                assert resp.status == 200, await resp.text()
                body: dict[str, Any] = await resp.json()
            if body["state"] not in ("queued", "pending", "ringing_agent"):
                return body
            await asyncio.sleep(0.05)


async def _click_to_call_101(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    """POST the originate (extension 101 dials the recorded client); asserts the 202."""
    async with session.post(
        f"{base}/api/v1/originate",
        json={"extension": "101", "number": "+7 916 123-45-67"},
        headers=bearer(),
    ) as resp:
        assert resp.status == 202, await resp.text()
        return dict(await resp.json())


async def test_click_to_call_on_a_for_an_extension_of_b_rings_once_at_b_and_a_reports_it(
    tmp_path: Path,
    pg_url: str,  # noqa: F811 - the fixture
) -> None:
    pbx_a = FakePbx(ami_path("click_to_call_originate"))
    pbx_b = FakePbx(ami_path("click_to_call_originate"))
    await pbx_a.start()
    await pbx_b.start()
    service_a = Service(_settings(tmp_path, "a", pbx_a.port, pg_url, ["6000-6999"]))
    service_b = Service(_settings(tmp_path, "b", pbx_b.port, pg_url, ["100-199"]))
    try:
        await service_b.start()
        await service_a.start()
        await _wait_connected(service_a)
        await _wait_connected(service_b)
        base = f"http://127.0.0.1:{service_a.http_port}"
        async with aiohttp.ClientSession() as session:
            accepted = await _click_to_call_101(session, base)
            assert accepted["state"] == "queued"
            outcome = await _poll_until_final(session, f"{base}{accepted['status_url']}")
        assert outcome["state"] == "connected"
        assert outcome["extension"] == "101"
        sent = _originates(pbx_b)
        assert [a["ActionID"] for a in sent] == [accepted["id"]]
        assert sent[0]["Channel"] == "PJSIP/101" and sent[0]["Exten"] == "89161234567"
        assert _originates(pbx_a) == []
        assert service_b.store is not None
        stored = await service_b.store.get_originate(accepted["id"])
        assert stored is not None and stored.target_pbx_id == "b"
    finally:
        await service_a.stop()
        await service_b.stop()
        await pbx_a.stop()
        await pbx_b.stop()


async def test_click_to_call_for_an_extension_of_its_own_pbx_is_sent_directly(
    tmp_path: Path,
    pg_url: str,  # noqa: F811 - the fixture
) -> None:
    pbx_a = FakePbx(ami_path("click_to_call_originate"))
    await pbx_a.start()
    service_a = Service(_settings(tmp_path, "a", pbx_a.port, pg_url, ["100-199"]))
    try:
        await service_a.start()
        await _wait_connected(service_a)
        base = f"http://127.0.0.1:{service_a.http_port}"
        async with aiohttp.ClientSession() as session:
            accepted = await _click_to_call_101(session, base)
            assert accepted["state"] != "queued"
            outcome = await _poll_until_final(session, f"{base}{accepted['status_url']}")
        assert outcome["state"] == "connected"
        assert [a["ActionID"] for a in _originates(pbx_a)] == [accepted["id"]]
    finally:
        await service_a.stop()
        await pbx_a.stop()


async def test_on_postgresql_ownership_comes_from_ranges_then_the_latest_dated_call(
    pg_url: str,  # noqa: F811 - the fixture
) -> None:
    store = await PgStore.open(StoreSettings(url=pg_url))
    try:
        await ExtensionOwners(store, "b", ["7000-7999"]).publish()
        # An undated call counts from when it was stored (PostgreSQL sorts NULL first in DESC).
        await store.upsert_call(Call(call_id="undated", pbx_id="c", agent_extension="517"))
        a = ExtensionOwners(store, "a", [])
        assert await a.owner_of("7042") == "b"
        assert await a.owner_of("517") == "c"
        later = datetime.now(UTC) + timedelta(days=1)
        await store.upsert_call(
            Call(call_id="dated", pbx_id="b", agent_extension="517", start_time=later)
        )
        assert await a.owner_of("517") == "b"
        assert await a.owner_of("999") is None
    finally:
        await store.close()
