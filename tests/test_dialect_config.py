"""Every example config block round-trips: TOML text -> config model -> working adapter."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from aiohttp import web

from crm.dialects.registry import build_adapter, parse_adapter_config
from crm.lookup import build_lookup_chain
from tests.fakes import crm_scenarios as scenarios
from tests.fakes.crm_harness import client_session
from tests.fakes.crm_server import FakeCrm

EXAMPLES = sorted((Path(__file__).parent.parent / "config" / "examples").glob("crm-*.toml"))
SECRETS = {
    "SALESFORCE_CLIENT_SECRET": "sf-secret-from-env",
    "CREATIO_WHO_CALLS_TOKEN": "creatio-token-from-env",
    "DBN_TOKEN": "dbn-token-from-env",
    "WEBHOOK_TOKEN": "webhook-token-from-env",
}


@pytest.fixture
def secrets_in_env(monkeypatch, tmp_path):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)


def blocks(path: Path, table: str) -> list[dict]:
    return tomllib.loads(path.read_text(encoding="utf-8")).get(table, [])


def test_there_is_an_example_for_every_dialect():
    types = {b["type"] for path in EXAMPLES for b in blocks(path, "crm")}
    assert types == {"salesforce", "creatio", "fixdigital", "dbn", "webhook", "declarative"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
async def test_every_example_block_builds_an_adapter_or_lookup(path, secrets_in_env, tmp_path):
    async with client_session() as http:
        for raw in blocks(path, "crm"):
            if "password" in raw and str(raw["password"]).startswith("file:"):
                secret_file = tmp_path / "password"
                secret_file.write_text("from-a-file\n")
                raw["password"] = f"file:{secret_file}"
            config = parse_adapter_config(raw)
            adapter = build_adapter(config, http)
            assert adapter.name == raw["name"]
            for secret in SECRETS.values():
                assert secret not in repr(config)
        lookups = blocks(path, "lookup")
        for raw in lookups:
            raw.pop("csv_path", None)  # the example's path is on a PBX, not here
        assert len(build_lookup_chain(lookups, http).sources) == len(lookups)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ({"type": "salesforce"}, "base_url"),
        ({"type": "fixdigital", "url": "x"}, "client_id"),
        ({"type": "creatio", "base_url": "x", "token": "env:NOT_SET_ANYWHERE"}, "NOT_SET_ANYWHERE"),
        ({"type": "declarative", "requests": {}}, "at least one"),
        (
            {"type": "declarative", "requests": {"ringing": {"url": "http://x/{callers}"}}},
            "unknown field {callers}",
        ),
        (
            {"type": "declarative", "requests": {"ringing": {"url": "{caller_number|e.164}"}}},
            "unknown filter",
        ),
        ({"type": "webhook", "url": "x", "auth": {"mode": "basic"}}, "needs username, password"),
        ({"type": "nosuchcrm"}, "known types: creatio, dbn, declarative"),
    ],
)
def test_config_mistakes_are_clear_errors(raw, words):
    with pytest.raises(ValueError) as caught:
        parse_adapter_config(raw)
    assert words in str(caught.value)


class Recorder(FakeCrm):
    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/api/calls", self.calls)

    async def calls(self, request: web.Request) -> web.Response:
        return web.json_response({"id": 1}, status=201)


async def test_the_declarative_json_body_keeps_numbers_and_lists_as_json(tmp_path):
    [raw] = blocks(Path(EXAMPLES[0].parent / "crm-declarative.toml"), "crm")
    async with Recorder() as crm, client_session() as http:
        raw["requests"]["completed"]["url"] = f"{crm.url}/api/calls"
        adapter = build_adapter(parse_adapter_config(raw), http)
        *_, completed = scenarios.answered_recorded()
        outcome = await adapter.deliver(completed, "key-1")
    assert outcome.status == 201
    assert crm.requests[0].json() == {
        "id": "1795418967.2",
        "from": "+79037654321",
        "to": "4951112234",
        "agent": "7181",
        "started": "2026-11-23T07:29:27Z",
        "seconds": 5,
        "recordings": ["https://pbx.example.com/recordings/1795418967.2.wav"],
    }
    assert crm.requests[0].headers["Idempotency-Key"] == "key-1"
