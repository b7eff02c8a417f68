"""`pbxcrm outbox list|retry|purge` against a PostgreSQL store ([store] url in the config)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from crm.store.postgres import PgStore
from crm.store.settings import StoreSettings
from tests.pg_server import pg_server_url, pg_url  # noqa: F401 - fixtures
from tests.test_cli_commands import pbxcrm
from tests.test_store_support import call_with_events, make_adapter


async def test_outbox_commands_work_on_a_postgresql_store(
    tmp_path: Path,
    pg_url: str,  # noqa: F811 - the fixture
) -> None:
    store = await PgStore.open(StoreSettings(url=pg_url))
    try:
        async with aiohttp.ClientSession() as http:
            adapter = make_adapter(http, "http://127.0.0.1:9/x")
            await store.record(*call_with_events("cli", 1), [adapter])
        [row] = await store.claim_deliveries(["crm"], 1, owner="t", lease_seconds=30)
        outcome: dict[str, Any] = {
            "attempts": 1,
            "next_attempt_at": store.now(),
            "error": "refused",
            "status": 422,
            "response": "unknown agent",
            "delivered_at": None,
        }
        assert await store.finish_delivery(row.id, owner="t", state="dead", **outcome)
    finally:
        await store.close()
    config = tmp_path / "pbxcrm.toml"
    config.write_text(f'[store]\nurl = "{pg_url}"\n')

    code, out, err = await pbxcrm("outbox", "list", "--state", "dead", "--config", str(config))
    assert code == 0, err
    [listed] = [json.loads(line) for line in out.splitlines()]
    assert (listed["id"], listed["last_status"]) == (row.id, 422)
    code, out, err = await pbxcrm("outbox", "retry", "--config", str(config))
    assert code == 0 and out.startswith("1 "), err
    code, out, err = await pbxcrm("outbox", "list", "--state", "pending", "--config", str(config))
    assert code == 0 and len(out.splitlines()) == 1, err
    code, out, err = await pbxcrm("outbox", "purge", "--config", str(config))
    assert code == 0 and out.startswith("0 "), err  # nothing done yet: pending is never purged
