"""AriClient against the fake ARI on 127.0.0.1: auth, events, reconnect, reconciliation, REST."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from ari_app.calls.rules import CallRules
from ari_app.calls.tracker import CallTracker
from ari_app.pbx.ari.client import AriClient, AriRequestError
from ari_app.pbx.ari.models import AriEvent, StasisStartEvent
from ari_app.pbx.channel_events import (
    ChannelCreated,
    ChannelEvent,
    ChannelSnapshot,
    PbxDisconnected,
    SnapshotComplete,
)
from ari_app.pbx.settings import AriSettings
from crm.backoff import reconnect_delay
from crm.model import CallEvent, EventKind
from tests.fakes.ari_server import FakeAri, recorded_ari_messages, recorded_rest

TIMEOUT = 5.0


class Sink:
    """Collects what the client delivers and lets a test wait for a condition on it."""

    def __init__(self) -> None:
        self.events: list[ChannelEvent] = []
        self.stasis: list[AriEvent] = []
        self.tracker = CallTracker(CallRules(), pbx_id="lab", source="ari")
        self.calls: list[CallEvent] = []
        self._changed = asyncio.Event()

    def on_event(self, event: ChannelEvent) -> None:
        self.events.append(event)
        self.calls.extend(self.tracker.handle(event))
        self._changed.set()

    def on_stasis(self, event: AriEvent) -> None:
        self.stasis.append(event)
        self._changed.set()

    async def until(self, predicate, timeout: float = TIMEOUT) -> None:
        async def wait() -> None:
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout)


def settings(fake: FakeAri, **changes: object) -> AriSettings:
    values: dict[str, object] = {
        "url": fake.url,
        "username": "crm",
        "password": SecretStr("crmsecret"),
        "app": "crm",
        "reconnect_initial_seconds": 0.01,
        "reconnect_max_seconds": 0.05,
    }
    values.update(changes)
    return AriSettings.model_validate(values)


@pytest.fixture
async def fake() -> AsyncIterator[FakeAri]:
    async with FakeAri() as server:
        yield server


async def started(fake: FakeAri, sink: Sink, **changes: object) -> AriClient:
    client = AriClient(settings(fake, **changes), on_event=sink.on_event, on_stasis=sink.on_stasis)
    await client.start()
    return client


async def test_the_websocket_is_opened_with_a_basic_auth_header_and_string_query_values(
    fake: FakeAri,
) -> None:
    sink = Sink()
    client = await started(fake, sink)
    try:
        await client.wait_connected(TIMEOUT)
        assert fake.ws_params == [{"app": "crm", "subscribeAll": "true"}]
        channels = fake.find("GET", "/ari/channels")
        assert channels is not None
        assert channels.authorization == "Basic Y3JtOmNybXNlY3JldA=="  # crm:crmsecret
    finally:
        await client.stop()


async def test_a_replayed_recording_arrives_as_channel_events_and_becomes_one_call(
    fake: FakeAri,
) -> None:
    sink = Sink()
    client = await started(fake, sink)
    try:
        await client.wait_connected(TIMEOUT)
        await fake.replay("inbound_answered_caller_hangs_up")
        await sink.until(lambda: any(c.kind is EventKind.COMPLETED for c in sink.calls))
        assert [c.kind.value for c in sink.calls] == [
            "ringing",
            "answered",
            "leg_ended",
            "hangup",
            "completed",
        ]
        call = sink.calls[-1].call
        assert (call.call_id, call.source, call.agent_extension) == ("1795417965.0", "ari", "7181")
        assert call.terminating_party is not None and call.terminating_party.value == "caller"
    finally:
        await client.stop()


async def test_every_parsed_event_also_reaches_the_stasis_handler(fake: FakeAri) -> None:
    sink = Sink()
    client = await started(fake, sink)
    try:
        await client.wait_connected(TIMEOUT)
        await fake.replay("stasis_crm_inbound")
        total = len(recorded_ari_messages("stasis_crm_inbound"))
        await sink.until(lambda: len(sink.stasis) == total)
        start = next(e for e in sink.stasis if isinstance(e, StasisStartEvent))
        assert start.args == ["inbound", "+79031234567", "4951110002"]
    finally:
        await client.stop()


async def test_bad_websocket_messages_are_logged_and_skipped_without_losing_later_events(
    fake: FakeAri, caplog: pytest.LogCaptureFixture
) -> None:
    sink = Sink()
    client = await started(fake, sink)
    try:
        await client.wait_connected(TIMEOUT)
        await fake.send("not json {")
        await fake.send({"type": "ChannelCreated", "timestamp": "2026-11-23T07:12:45.419+0000"})
        await fake.send(recorded_ari_messages("inbound_answered_caller_hangs_up")[0])
        await sink.until(lambda: any(isinstance(e, ChannelCreated) for e in sink.events))
        skipped = [r.getMessage() for r in caplog.records if "skipped a bad" in r.getMessage()]
        assert len(skipped) == 2
        assert "ChannelCreated: channel: Field required" in skipped[1]
    finally:
        await client.stop()


async def test_a_dropped_websocket_is_reconnected_and_calls_that_ended_meanwhile_are_closed(
    fake: FakeAri,
) -> None:
    messages = recorded_ari_messages("inbound_answered_caller_hangs_up")
    bridged = max(i for i, m in enumerate(messages) if m["type"] == "ChannelEnteredBridge")
    sink = Sink()
    client = await started(fake, sink)
    try:
        await client.wait_connected(TIMEOUT)
        for message in messages[: bridged + 1]:
            await fake.send(message)
        await sink.until(lambda: any(c.kind is EventKind.ANSWERED for c in sink.calls))
        fake.channels = []  # the call ended while we were away (Asterisk restarted)
        await fake.drop()
        await sink.until(lambda: any(isinstance(e, PbxDisconnected) for e in sink.events))
        await sink.until(lambda: sum(isinstance(e, SnapshotComplete) for e in sink.events) == 2)
        assert client.connections == 2
        assert len(fake.ws_params) == 2  # re-subscribed with the same parameters
        assert fake.ws_params[1] == fake.ws_params[0]
        call = sink.calls[-1].call
        assert sink.calls[-1].kind is EventKind.COMPLETED
        assert call.reconciled and call.ended
        # The recorded events carry the lab's 2026 clock; PBX time at the drop extrapolates it.
        drop = next(e for e in sink.events if isinstance(e, PbxDisconnected))
        assert drop.ts >= 1795417966.928
    finally:
        await client.stop()


async def test_a_call_in_progress_at_connect_time_is_picked_up_from_the_channel_list(
    fake: FakeAri,
) -> None:
    fake.channels = recorded_rest("get_channels")["response"]
    fake.variables[("1795418059.12", "CHANNEL(linkedid)")] = "1795418059.12"
    sink = Sink()
    client = await started(fake, sink)
    try:
        await client.wait_connected(TIMEOUT)
        snaps = [e for e in sink.events if isinstance(e, ChannelSnapshot)]
        assert [(s.uniqueid, s.linkedid, s.state, s.application) for s in snaps] == [
            ("1795418059.12", "1795418059.12", "Up", "Stasis")
        ]
        assert isinstance(sink.events[-1], SnapshotComplete)
        assert sink.tracker.open_call_ids() == ["1795418059.12"]
    finally:
        await client.stop()


async def test_refused_connections_are_retried_until_the_pbx_is_back(fake: FakeAri) -> None:
    fake.refuse_websockets = 2  # like asterisk_killed_mid_call: two refusals, then success
    sink = Sink()
    client = await started(fake, sink)
    try:
        await client.wait_connected(TIMEOUT)
        assert len(fake.ws_params) == 3
        assert client.connections == 1
    finally:
        await client.stop()


async def test_wrong_credentials_are_reported_without_the_password_in_any_log_line(
    fake: FakeAri, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sink = Sink()
    client = await started(fake, sink, password=SecretStr("wrong-secret-123"))
    try:
        await fake.wait_for(lambda: fake.unauthorized >= 2)
        assert not client.connected
        text = caplog.text
        assert "ARI refused user 'crm' (401)" in text
        assert "wrong-secret-123" not in text
        assert "d3Jvbmctc2VjcmV0" not in text  # nor its base64 in a header dump
    finally:
        await client.stop()


async def test_a_failed_reconciliation_is_skipped_rather_than_closing_live_calls(
    fake: FakeAri, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail_paths[("GET", "/ari/channels")] = (500, "Internal Server Error")
    sink = Sink()
    client = await started(fake, sink)
    try:
        await client.wait_connected(TIMEOUT)
        assert not any(isinstance(e, SnapshotComplete) for e in sink.events)
        assert "reconciliation skipped" in caplog.text
    finally:
        await client.stop()


async def test_rest_errors_carry_the_status_and_aris_message(fake: FakeAri) -> None:
    fake.gone_channels.add("1795418059.12")
    client = AriClient(settings(fake), on_event=lambda e: None)
    await client.start()
    try:
        with pytest.raises(AriRequestError) as raised:
            await client.answer("1795418059.12")
        assert (raised.value.status, raised.value.message) == (404, "Channel not found")
    finally:
        await client.stop()


async def test_rest_calls_match_the_recorded_requests(fake: FakeAri) -> None:
    client = AriClient(settings(fake), on_event=lambda e: None)
    await client.start()
    try:
        fake.send_playback_events = False
        await client.answer("1795418059.12")
        playback = await client.play("1795418059.12", "sound:hello-world", playback_id="pb-hello-1")
        await client.hangup("c2c-0001")
        channel = await client.originate(
            "PJSIP/101",
            app="crm",
            app_args="click2call,89161234567",
            channel_id="c2c-0001",
            caller_id="CRM <89161234567>",
            timeout_seconds=30,
        )
        for name in (
            "post_channel_answer",
            "post_channel_play",
            "delete_channel",
            "post_channels_originate",
        ):
            want = recorded_rest(name)["request"]
            got = fake.find(want["method"], want["path"])
            assert got is not None, name
            assert got.query == want["query"], name
        assert playback.id == "pb-hello-1"
        assert playback.channel_id == "1795418059.12"
        assert (channel.id, channel.name) == ("c2c-0001", "PJSIP/101-0000000d")
    finally:
        await client.stop()


async def test_stop_ends_the_connection_and_the_background_task(fake: FakeAri) -> None:
    client = AriClient(settings(fake), on_event=lambda e: None)
    await client.start()
    await client.wait_connected(TIMEOUT)
    await client.stop()
    assert not client.connected
    await fake.wait_for(lambda: fake.open_websockets == 0)


def test_backoff_doubles_from_the_initial_delay_and_never_exceeds_the_cap() -> None:
    # The same policy as the AMI client's reconnects (crm/backoff.py): half to all the ceiling.
    delays = [reconnect_delay(n, 0.5, 60.0) for n in range(12)]
    assert 0.25 <= delays[0] <= 0.5
    assert 0.5 <= delays[1] <= 1.0
    assert all(d <= 60.0 for d in delays)
    # From the 8th retry the ceiling is the cap: never under half of it, never over it.
    assert all(30.0 <= d <= 60.0 for d in delays[7:])
