"""The agent screen pop in a real headless Chromium, against a recorded inbound call.

pbxcrm runs as `pbxcrm run` would (Service: AMI from a fake PBX replaying
`inbound_answered_caller_hangs_up.ami` over TCP, store, outbox, HTTP port); agent 7181 signs in
with a PIN, agent 7070 with a bookmarked token; only then does the PBX start talking.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ari_app.agent.sessions import COOKIE
from crm.model import EventKind
from tests.browser.screen_pop_lab import (
    CALL_ID,
    CALLER,
    PIN_7181,
    TOKEN_7070,
    screen_pop_lab,
    wait_for,
)
from tests.browser.support import chromium
from tests.test_agent_board import Feed, ring_all

# Remembers, in the page, when the first card appeared (the browser's clock = this machine's).
WATCH_FOR_CARDS = """
window.__firstCardAt = null;
new MutationObserver(() => {
  if (window.__firstCardAt === null && document.querySelector('#cards .card')) {
    window.__firstCardAt = Date.now() / 1000;
  }
}).observe(document.getElementById('cards'), {childList: true});
"""


async def sign_in_with_pin(page: Any, base_url: str, extension: str, pin: str) -> None:
    await page.goto(base_url + "/agent")
    await page.fill("#sign-in-extension", extension)
    await page.fill("#sign-in-secret", pin)
    await page.click("#sign-in-form button[type=submit]")
    await page.wait_for_selector("#live-dot.live", timeout=10_000)


async def test_recorded_inbound_call_pops_up_for_7181_only_and_its_note_reaches_store_and_crms(
    tmp_path: Path,
) -> None:
    from playwright.async_api import expect

    async with screen_pop_lab(tmp_path, "inbound_answered_caller_hangs_up") as lab:
        async with chromium() as browser:
            anna = await (await browser.new_context()).new_page()
            boris = await (await browser.new_context()).new_page()
            await sign_in_with_pin(anna, lab.base_url, "7181", PIN_7181)
            await boris.goto(f"{lab.base_url}/agent#token={TOKEN_7070}")
            await boris.wait_for_selector("#live-dot.live", timeout=10_000)
            assert "token" not in boris.url  # the bookmark's secret left the address bar
            await expect(anna.locator("#who-name")).to_have_text("Anna Smirnova · 7181")
            await expect(boris.locator("#who-name")).to_have_text("Boris Orlov · 7070")
            await anna.evaluate(WATCH_FOR_CARDS)

            lab.pbx.gate.set()  # the recorded call starts now

            card = anna.locator(f'.card[data-call-id="{CALL_ID}"]')
            await expect(card).to_be_visible(timeout=10_000)
            rang_at = lab.first(EventKind.RINGING, "7181")
            assert rang_at is not None
            shown_at = await anna.evaluate("window.__firstCardAt")
            assert shown_at - rang_at < 1.0, "the card must appear within a second of ringing"

            await expect(card).to_have_attribute("data-state", "ended", timeout=15_000)
            await expect(card.locator(".number")).to_have_text("+7 903 123-45-67")
            await expect(card.locator(".caller-name")).to_have_text("Ivan Petrov")
            await expect(card.locator(".company")).to_have_text("Petrov Logistics")
            await expect(card.locator(".crm-link")).to_have_attribute(
                "href", "https://crm.example/c/42"
            )
            await expect(card.locator(".history li")).to_have_count(1)
            await expect(card.locator(".history li")).to_contain_text(
                "Schedule Later: Wants the winter price list"
            )

            # 7070 rang for nothing: no card there, in the page or behind it.
            await expect(boris.locator(".card")).to_have_count(0)
            await expect(boris.locator("#idle")).to_be_visible()
            boris_cards = await boris.evaluate("fetch('/agent/api/cards').then(r => r.json())")
            assert boris_cards == {"cards": []}

            await card.get_by_label("Completed").check()
            await card.locator("textarea[name=comments]").fill("Ordered 40 pallets; invoice sent")
            await card.get_by_role("button", name="Save note").click()
            await expect(card.locator(".saved-note")).to_contain_text("Saved", timeout=10_000)

            store = lab.service.store
            assert store is not None
            notes = await store.notes_for("lab", CALL_ID)
            assert [(n.status, n.comments, n.extension, n.number) for n in notes] == [
                ("Completed", "Ordered 40 pallets; invoice sent", "7181", CALLER)
            ]
            await wait_for(
                lambda: lab.dbn.notes and [e for e in lab.hook.events() if e["kind"] == "note"]
            )
            assert [(n["cid"], n["status"], n["comments"]) for n in lab.dbn.notes] == [
                (CALLER, "Completed", "Ordered 40 pallets; invoice sent")
            ]
            (note_event,) = [e for e in lab.hook.events() if e["kind"] == "note"]
            assert note_event["call_id"] == CALL_ID
            assert note_event["data"]["status"] == "Completed"
            assert note_event["data"]["extension"] == "7181"

            await anna.reload()
            card = anna.locator(f'.card[data-call-id="{CALL_ID}"]')
            await expect(card).to_be_visible(timeout=10_000)
            await expect(card.get_by_label("Completed")).to_be_checked()
            await expect(card.locator("textarea[name=comments]")).to_have_value(
                "Ordered 40 pallets; invoice sent"
            )
            await expect(card.locator(".saved-note")).to_contain_text("Completed")
            cookies = await anna.context.cookies()
            (session,) = [c for c in cookies if c["name"] == COOKIE]
            assert session["httpOnly"] and session["sameSite"] == "Strict"

            screenshot = os.environ.get("PBXCRM_AGENT_SCREENSHOT")
            await anna.set_viewport_size({"width": 900, "height": 760})
            await anna.screenshot(path=screenshot or str(tmp_path / "screen-pop.png"))

            await card.get_by_role("button", name="Dismiss").click()
            await expect(card).to_have_count(0)
            await expect(anna.locator("#idle")).to_be_visible()


class PipelineFeed(Feed):
    """The hand-built frames of tests/test_agent_board.py, into the running Service."""

    def __init__(self, pipeline: Any) -> None:
        super().__init__()
        self.pipeline = pipeline

    def frame(self, frame: dict[str, str]) -> None:
        self.pipeline.on_ami_frame(frame)


async def test_a_ring_all_call_leaves_the_agents_who_did_not_answer(tmp_path: Path) -> None:
    """Ring-all groups were NOT recorded in the lab: these frames are hand-built from the
    Asterisk 22 AMI docs (see tests/test_agent_board.py); the PBX recording is never started."""
    from playwright.async_api import expect

    async with screen_pop_lab(tmp_path, "inbound_answered_caller_hangs_up") as lab:
        async with chromium() as browser:
            anna = await (await browser.new_context()).new_page()
            boris = await (await browser.new_context()).new_page()
            await sign_in_with_pin(anna, lab.base_url, "7181", PIN_7181)
            await boris.goto(f"{lab.base_url}/agent#token={TOKEN_7070}")
            await boris.wait_for_selector("#live-dot.live", timeout=10_000)

            feed = PipelineFeed(lab.service.pipeline)
            ring_all(feed, "c7", CALLER, ["7181", "7070"])
            for page in (anna, boris):
                card = page.locator('.card[data-call-id="c7.1"]')
                await expect(card).to_have_attribute("data-state", "ringing", timeout=5_000)
                await expect(card.locator(".caller-name")).to_have_text("Ivan Petrov")

            feed.dial("PJSIP/trunk-c7", "PJSIP/7070-c7", "ANSWER")
            await expect(boris.locator('.card[data-call-id="c7.1"]')).to_have_attribute(
                "data-state", "answered", timeout=5_000
            )
            await expect(anna.locator(".card")).to_have_count(0, timeout=5_000)
            await expect(anna.locator("#idle")).to_be_visible()
