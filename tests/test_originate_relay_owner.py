"""Which PBX owns an extension (configured ranges, else learned from calls), on a real SQLite
store; and the claim of queued click-to-calls that only one caller wins."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ari_app.pbx.extension_owner import ExtensionOwners, parse_extension_range
from ari_app.pbx.settings import PbxSettings
from crm.model import Call
from crm.store.settings import StoreSettings
from crm.store.sqlite import Store


async def _store(tmp_path: Path) -> Store:
    return await Store.open(StoreSettings(path=str(tmp_path / "owners.sqlite3")))


def _call(pbx_id: str, call_id: str, extension: str, hour: int) -> Call:
    return Call(
        call_id=call_id,
        pbx_id=pbx_id,
        agent_extension=extension,
        start_time=datetime(2026, 11, 23, hour, tzinfo=UTC),
    )


def test_ranges_match_digits_inside_their_bounds_and_exact_entries_only_themselves() -> None:
    hundreds = parse_extension_range("7000-7999")
    assert hundreds.matches("7000") and hundreds.matches("7999") and hundreds.matches("7500")
    assert not hundreds.matches("8000") and not hundreds.matches("700") and not hundreds.matches("")
    assert not parse_extension_range("0100-0199").matches("150")
    assert parse_extension_range("101").matches("101")
    assert not parse_extension_range("101").matches("1010")


def test_a_reversed_or_malformed_range_is_a_config_error() -> None:
    for bad in ("7999-7000", "70-", "7000 - 7999", "a b"):
        with pytest.raises(ValueError):
            PbxSettings(extensions=[bad])


async def test_an_extension_in_another_pbxs_published_range_belongs_to_that_pbx(
    tmp_path: Path,
) -> None:
    store = await _store(tmp_path)
    try:
        await ExtensionOwners(store, "b", ["7000-7999", "101"]).publish()
        a = ExtensionOwners(store, "a", ["6000-6999"])
        await a.publish()
        assert await a.owner_of("7042") == "b"
        assert await a.owner_of("101") == "b"
        assert await a.owner_of("6001") == "a"
        assert await a.owner_of("5555") is None
    finally:
        await store.close()


async def test_republishing_replaces_a_pbxs_old_ranges(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    try:
        await ExtensionOwners(store, "b", ["7000-7999"]).publish()
        await ExtensionOwners(store, "b", ["8000-8999"]).publish()
        a = ExtensionOwners(store, "a", [])
        assert await a.owner_of("7042") is None
        assert await a.owner_of("8042") == "b"
    finally:
        await store.close()


async def test_without_a_range_the_pbx_of_the_extensions_latest_call_owns_it(
    tmp_path: Path,
) -> None:
    store = await _store(tmp_path)
    try:
        await store.upsert_call(_call("a", "old", "7181", hour=8))
        await store.upsert_call(_call("b", "new", "7181", hour=9))
        await store.upsert_call(_call("a", "other", "517", hour=10))
        a = ExtensionOwners(store, "a", [])
        assert await a.owner_of("7181") == "b"
        assert await a.owner_of("517") == "a"
    finally:
        await store.close()


async def test_a_published_range_wins_over_what_calls_suggest(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    try:
        await store.upsert_call(_call("a", "c1", "7181", hour=9))
        await ExtensionOwners(store, "b", ["7100-7199"]).publish()
        assert await ExtensionOwners(store, "a", []).owner_of("7181") == "b"
    finally:
        await store.close()


async def test_a_queued_request_is_claimed_by_one_caller_only_and_a_stale_one_fails(
    tmp_path: Path,
) -> None:
    now = [1000.0]
    store = await Store.open(
        StoreSettings(path=str(tmp_path / "claim.sqlite3")), now=lambda: now[0]
    )
    try:
        await store.save_originate(
            "stale", agent_extension="101", number="+1", state="queued", target_pbx_id="b"
        )
        now[0] = 1100.0
        for originate_id in ("q1", "q2"):
            await store.save_originate(
                originate_id,
                agent_extension="101",
                number="+79161234567",
                state="queued",
                request={"client": "crm"},
                target_pbx_id="b",
            )
        await store.save_originate(
            "other", agent_extension="6001", number="+1", state="queued", target_pbx_id="c"
        )
        claims = await asyncio.gather(
            *(store.claim_originates("b", max_age_seconds=60) for _ in range(3))
        )
        claimed = sorted(row.id for rows in claims for row in rows)
        assert claimed == ["q1", "q2"]
        assert all(row.state == "pending" for rows in claims for row in rows)
        assert await store.claim_originates("b", max_age_seconds=60) == []
        stale = await store.get_originate("stale")
        assert stale is not None and stale.state == "failed" and stale.reason
        other = await store.get_originate("other")
        assert other is not None and other.state == "queued" and other.target_pbx_id == "c"
    finally:
        await store.close()
