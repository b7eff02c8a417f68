"""The `pbxcrm` command as an admin uses it: replay a capture, inspect and retry the outbox."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from aiohttp import web

from tests.fakes.crm_server import FakeCrm
from tests.recordings import ami_path


class RefusingCrm(FakeCrm):
    """Answers 422 (a permanent refusal) until told to accept."""

    accept = False

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/events", self._event)

    async def _event(self, request: web.Request) -> web.Response:
        if self.accept:
            return web.json_response({"ok": True})
        return web.json_response({"error": "unknown agent"}, status=422)


async def pbxcrm(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ari_app.app.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


def write_config(tmp_path: Path, crm_url: str) -> Path:
    config = tmp_path / "pbxcrm.toml"
    config.write_text(f"""
[pbx.ami]
username = "crm"
password = "crmsecret"
[store]
path = "{tmp_path / "store.sqlite3"}"
[[crm]]
type = "webhook"
name = "hook"
url = "{crm_url}/events"
""")
    return config


async def test_replay_without_send_delivers_nothing_and_prints_the_call(tmp_path: Path) -> None:
    crm = RefusingCrm()
    await crm.start()
    try:
        config = write_config(tmp_path, crm.url)
        code, out, _ = await pbxcrm(
            "replay", str(ami_path("inbound_queue_answered")), "--config", str(config)
        )
    finally:
        await crm.stop()
    assert code == 0
    assert crm.requests == []
    assert "1795418080.14" in out and "answered" in out
    record = json.loads(out.strip().splitlines()[-1])
    assert record["agent_extension"] == "517" and record["queue"] == "support"


async def test_dead_letters_are_listed_and_retried(tmp_path: Path) -> None:
    crm = RefusingCrm()
    await crm.start()
    try:
        config = write_config(tmp_path, crm.url)
        # --store: the deliveries stay in the config's store for `outbox` to find.
        code, out, err = await pbxcrm(
            "replay",
            str(ami_path("inbound_abandoned_while_ringing")),
            "--config",
            str(config),
            "--send",
            "--store",
            str(tmp_path / "store.sqlite3"),
        )
        assert code == 1, err  # dead letters: the replay says the CRM did not take everything
        assert "Delivered 0, dead " in out and ", pending 0." in out
        code, out, _ = await pbxcrm("outbox", "list", "--state", "dead", "--config", str(config))
        rows = [json.loads(line) for line in out.splitlines()]
        assert code == 0 and len(rows) == 5
        assert all(row["last_status"] == 422 for row in rows)
        assert "unknown agent" in rows[0]["last_response"]
        code, out, _ = await pbxcrm("outbox", "retry", "--config", str(config))
        assert code == 0 and out.startswith("5 ")
        code, out, _ = await pbxcrm("outbox", "list", "--state", "pending", "--config", str(config))
        assert len(out.splitlines()) == 5
    finally:
        await crm.stop()


async def test_check_config_exits_2_and_names_the_mistake(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[calls]\ninternal_extension_pattern = '(('\n")
    code, _, err = await pbxcrm("check-config", "--config", str(config))
    assert code == 2
    assert f"{config}:2: calls.internal_extension_pattern" in err
