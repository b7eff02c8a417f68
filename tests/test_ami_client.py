"""AmiClient against the fake PBX replaying real recordings over real TCP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from panoramisk.actions import Action

from ari_app.pbx.ami.client import (
    AmiActionTimeout,
    AmiClient,
    AmiConnectionLost,
    AmiLoginError,
    AmiNotConnected,
    AmiResponse,
)
from ari_app.pbx.ami.events import tracked_frame_filter
from ari_app.pbx.ami.frames import FrameFilter
from tests.fakes.ami_pbx import FakePbx
from tests.test_ami_support import (
    RECORDINGS,
    Collector,
    file_frames,
    recording,
    sent_actions,
    settings_for,
    without_action_id,
)

TWO_CONNECTIONS = {"asterisk_restart_mid_call", "asterisk_killed_mid_call"}


def client_for(pbx: FakePbx, seen: Collector, frame_filter: FrameFilter | None = None, **kw):
    return AmiClient(
        settings_for(pbx.port, **kw),
        on_frame=seen.on_frame,
        on_connected=seen.on_connected,
        on_disconnected=seen.on_disconnected,
        frame_filter=frame_filter,
    )


@pytest.mark.parametrize("filtered", [False, True], ids=["all-events", "tracked-events"])
@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.stem)
async def test_every_recording_reaches_on_frame_exactly_as_parsed_from_the_file(
    path: Path, filtered: bool
):
    frame_filter = tracked_frame_filter() if filtered else None
    expected = file_frames(path, frame_filter.including("Shutdown") if frame_filter else None)
    answers: list[AmiResponse] = []
    seen = Collector()
    pbx = FakePbx(path)
    await pbx.start()

    async def on_connected() -> None:
        await seen.on_connected()
        if seen.connected > 1:
            return  # the recorded client sent its actions on the first connection only
        for action in sent_actions(path):
            if action["Action"] == "Originate":
                answers.append(await client.originate(action, timeout=2))
            else:
                answers.append(await client.send_action(action))
        seen.changed()

    client = AmiClient(
        settings_for(pbx.port),
        on_frame=seen.on_frame,
        on_connected=on_connected,
        frame_filter=frame_filter,
    )
    try:
        await client.start()
        await seen.until(lambda: len(seen.frames) >= len(expected))
        await seen.until(lambda: len(answers) == len(sent_actions(path)))
    finally:
        await client.stop()
        await pbx.stop()

    assert [without_action_id(f) for f in seen.frames] == expected
    assert all(answer.ok for answer in answers)
    assert seen.connected == (2 if path.stem in TWO_CONNECTIONS else 1)


async def test_wrong_secret_is_a_login_error_naming_the_user_but_not_the_secret(caplog):
    caplog.set_level(logging.DEBUG)
    seen = Collector()
    async with FakePbx(recording("inbound_busy_agent")) as pbx:
        client = client_for(pbx, seen, password="not-the-secret")
        await client.start()
        try:
            with pytest.raises(AmiLoginError) as raised:
                await client.wait_connected(timeout=5)
        finally:
            await client.stop()
    assert "'crm'" in str(raised.value)
    assert "Authentication failed" in str(raised.value)
    assert "not-the-secret" not in str(raised.value)
    assert "not-the-secret" not in caplog.text
    assert pbx.received_actions[0]["Secret"] == "not-the-secret"  # it did reach the PBX
    assert seen.connected == 0


async def test_the_login_secret_never_reaches_the_log(caplog):
    caplog.set_level(logging.DEBUG)
    seen = Collector()
    async with FakePbx(recording("inbound_busy_agent")) as pbx:
        client = client_for(pbx, seen)
        await client.start()
        await client.wait_connected(timeout=5)
        await client.stop()
    assert "Login" in caplog.text
    assert "crmsecret" not in caplog.text


@pytest.mark.parametrize("scenario", sorted(TWO_CONNECTIONS))
async def test_the_client_reconnects_after_the_server_drops_and_greets_again(scenario: str):
    seen = Collector()
    async with FakePbx(recording(scenario)) as pbx:
        client = client_for(pbx, seen)
        await client.start()
        await seen.until(lambda: seen.connected == 2)
        await seen.until(lambda: any(f["Event"] == "SuccessfulAuth" for f in seen.frames[-3:]))
        await client.stop()
    assert pbx.connections == 2
    assert len(seen.disconnects) == 1
    if scenario == "asterisk_restart_mid_call":
        assert seen.disconnects[0] == "Asterisk shut down (Cleanly, restarting)"
    else:
        assert seen.disconnects[0] == "the server closed the connection"
    assert [a["Action"] for a in pbx.received_actions] == ["Login", "Login", "Logoff"]


@pytest.mark.parametrize("filtered", [False, True], ids=["all-events", "tracked-events"])
async def test_core_show_channels_and_status_return_the_recorded_channel_lists(
    filtered: bool,
) -> None:
    # Tracked events only: `Status` is not one, yet its list must still reach the action.
    seen = Collector()
    async with FakePbx(recording("mid_call_connect_reconcile")) as pbx:
        client = client_for(pbx, seen, tracked_frame_filter() if filtered else None)
        await client.start()
        await client.wait_connected(timeout=5)
        channels = await client.send_action({"Action": "CoreShowChannels"})
        status = await client.send_action({"Action": "Status"}, timeout=2)
        await client.stop()

    assert channels.ok and channels.message == "Channels will follow"
    assert [e["Channel"] for e in channels.events] == [
        "PJSIP/trunk-00000000",
        "PJSIP/7181-00000001",
    ]
    assert channels.events[0]["ApplicationData"] == "PJSIP/7181,12"
    assert channels.events[1]["Exten"] == ""
    assert {e["ActionID"] for e in channels.events} == {channels.action_id}
    assert channels.complete is not None
    assert channels.complete["Event"] == "CoreShowChannelsComplete"
    assert channels.complete["ListItems"] == "2"
    assert [e["Uniqueid"] for e in status.events] == ["1795420539.0", "1795420539.1"]
    assert status.events[0]["BridgeID"] == "6bacaf73-2a98-4d9c-9f9e-9b8fce32f476"
    assert status.complete is not None and status.complete["Event"] == "StatusComplete"
    # List events answer the action; they are not events for the tracker.
    assert not any(f["Event"] in ("CoreShowChannel", "Status") for f in seen.frames)


async def test_core_show_channels_on_a_pbx_without_calls_is_an_empty_list():
    seen = Collector()
    async with FakePbx(recording("inbound_busy_agent")) as pbx:
        client = client_for(pbx, seen)
        await client.start()
        await client.wait_connected(timeout=5)
        channels = await client.send_action({"Action": "CoreShowChannels"})
        await client.stop()
    assert channels.ok and channels.events == []
    assert channels.complete is not None and channels.complete["ListItems"] == "0"


@pytest.mark.parametrize(
    ("scenario", "outcome"),
    [
        ("click_to_call_originate", ("Success", "4")),
        ("click_to_call_agent_no_answer", ("Failure", "3")),
    ],
)
async def test_an_originate_gets_its_recorded_answer_and_its_outcome_event(scenario, outcome):
    seen = Collector()
    (action,) = sent_actions(recording(scenario))
    async with FakePbx(recording(scenario)) as pbx:
        client = client_for(pbx, seen)
        await client.start()
        await client.wait_connected(timeout=5)
        answer = await client.originate({**action, "ActionID": f"crm-{scenario}"}, timeout=2)
        await seen.until(lambda: any(f["Event"] == "OriginateResponse" for f in seen.frames))
        await client.stop()

    assert answer.ok and answer.message == "Originate successfully queued"
    assert answer.action_id == f"crm-{scenario}"
    (result,) = [f for f in seen.frames if f["Event"] == "OriginateResponse"]
    assert (result["Response"], result["Reason"]) == outcome
    assert result["ActionID"] == f"crm-{scenario}"
    originates = [a for a in pbx.received_actions if a["Action"] == "Originate"]
    assert len(originates) == 1
    assert originates[0]["Variable"] == action["Variable"]


async def test_an_originate_is_never_sent_twice_with_the_same_action_id():
    seen = Collector()
    (action,) = sent_actions(recording("click_to_call_originate"))
    async with FakePbx(recording("click_to_call_originate")) as pbx:
        client = client_for(pbx, seen)
        await client.start()
        await client.wait_connected(timeout=5)
        await client.originate({**action, "ActionID": "c2c-once"}, timeout=2)
        with pytest.raises(ValueError, match="already sent once"):
            await client.originate({**action, "ActionID": "c2c-once"}, timeout=2)
        await client.stop()
    assert [a["ActionID"] for a in pbx.received_actions if a["Action"] == "Originate"] == [
        "c2c-once"
    ]


async def test_an_action_while_disconnected_fails_at_once_and_is_never_sent_later():
    seen = Collector()
    attempts: list[asyncio.Task[AmiResponse]] = []
    async with FakePbx(recording("asterisk_killed_mid_call")) as pbx:

        def on_disconnected(reason: str) -> None:
            seen.on_disconnected(reason)
            attempts.append(asyncio.ensure_future(client.send_action({"Action": "Status"})))
            attempts.append(
                asyncio.ensure_future(client.originate({"Channel": "PJSIP/101"}, timeout=1))
            )

        client = AmiClient(
            settings_for(pbx.port),
            on_frame=seen.on_frame,
            on_connected=seen.on_connected,
            on_disconnected=on_disconnected,
        )
        await client.start()
        await seen.until(lambda: seen.connected == 2)
        # A Ping after the reconnect proves the connection works and everything before it
        # has been read by the fake.
        pong = await client.send_action({"Action": "Ping"})
        await client.stop()

    assert pong.response["Ping"] == "Pong"
    for attempt in attempts:
        with pytest.raises(AmiNotConnected):
            attempt.result()
    assert [a["Action"] for a in pbx.received_actions] == ["Login", "Login", "Ping", "Logoff"]


async def test_a_half_open_connection_is_dropped_by_the_ping_watchdog_in_time():
    seen = Collector()
    interval, timeout = 0.2, 0.2
    async with FakePbx(recording("inbound_busy_agent"), hold_open=True) as pbx:
        client = client_for(
            pbx,
            seen,
            ping_interval_seconds=interval,
            ping_timeout_seconds=timeout,
            reconnect_initial_seconds=5,
            reconnect_max_seconds=5,
        )
        loop = asyncio.get_running_loop()
        await client.start()
        await client.wait_connected(timeout=5)
        connected_at = loop.time()
        await seen.until(lambda: bool(seen.disconnects), timeout=5)
        elapsed = loop.time() - connected_at
        await client.stop()
    assert "no reply to Ping" in seen.disconnects[0]
    assert interval <= elapsed < interval + timeout + 0.3
    assert not client.connected


async def test_an_action_without_answer_times_out_and_is_not_resent():
    seen = Collector()
    async with FakePbx(recording("inbound_busy_agent"), hold_open=True) as pbx:
        client = client_for(pbx, seen)
        await client.start()
        await client.wait_connected(timeout=5)
        with pytest.raises(AmiActionTimeout, match="Ping"):
            await client.send_action({"Action": "Ping"}, timeout=0.1)
        await client.stop()
    assert [a["Action"] for a in pbx.received_actions].count("Ping") == 1


async def test_ping_and_unknown_actions_get_asterisks_answers():
    seen = Collector()
    async with FakePbx(recording("inbound_busy_agent")) as pbx:
        client = client_for(pbx, seen)
        await client.start()
        await client.wait_connected(timeout=5)
        pong = await client.send_action({"Action": "Ping"})
        unknown = await client.send_action({"Action": "NoSuchThing"})
        await client.stop()
    assert pong.ok and pong.response["Ping"] == "Pong"
    assert not unknown.ok
    assert unknown.message.startswith("Invalid/unknown command: NoSuchThing.")


async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent():
    seen = Collector()
    async with FakePbx(recording("inbound_busy_agent")) as pbx:
        client = client_for(pbx, seen)
        await client.start()
        await client.wait_connected(timeout=5)
        with pytest.raises(ValueError, match="line break"):
            await client.send_action({"Action": "Ping", "X": "1\r\nAction: Originate"})
        pong = await client.send_action({"Action": "Ping"})
        await client.stop()
    assert pong.ok
    assert [a["Action"] for a in pbx.received_actions] == ["Login", "Ping", "Logoff"]


async def test_send_action_before_start_raises_not_connected():
    client = AmiClient(settings_for(1), on_frame=lambda frame: None)
    with pytest.raises(AmiNotConnected):
        await client.send_action({"Action": "Ping"})


async def test_unreachable_pbx_is_reported_by_wait_connected_within_its_timeout():
    async with FakePbx(recording("inbound_busy_agent")) as pbx:
        port = pbx.port
    client = AmiClient(settings_for(port), on_frame=lambda frame: None)
    await client.start()
    try:
        with pytest.raises(AmiNotConnected, match=r"within 0\.3s"):
            await client.wait_connected(timeout=0.3)
    finally:
        await client.stop()


async def test_a_frame_cut_mid_way_is_never_delivered_and_the_client_reconnects():
    path = recording("inbound_answered_caller_hangs_up")
    data = path.read_bytes()
    # Inside the 771-byte DialBegin frame. The fake answers the Login with the client's
    # ActionID (panoramisk's are ~50 characters, the recording's `login-1` is 7), which moves
    # every later byte; 300 bytes in stays inside DialBegin whatever the ActionID's length.
    cut = data.index(b"Event: DialBegin") + 300
    seen = Collector()
    async with FakePbx(path, cut_after_bytes=cut) as pbx:
        client = client_for(pbx, seen)
        await client.start()
        await seen.until(lambda: seen.connected == 2)
        await client.stop()
    expected = file_frames(path)
    before_cut = next(i for i, f in enumerate(expected) if f["Event"] == "DialBegin")
    # The second connection is a quiet PBX (the recording has one connection only).
    assert seen.frames == expected[:before_cut]
    assert seen.disconnects == ["the server closed the connection"]


async def test_garbage_from_the_pbx_is_skipped_with_a_log_line(caplog):
    data = recording("inbound_busy_agent").read_bytes()
    at = data.index(b"Event: Newchannel")
    garbage = b"\x00\xff\xfe binary junk\r\nno colon here\r\n\r\n"
    seen = Collector()
    expected = file_frames(recording("inbound_busy_agent"))
    async with FakePbx(data[:at] + garbage + data[at:]) as pbx:
        client = client_for(pbx, seen)
        await client.start()
        await seen.until(lambda: len(seen.frames) >= len(expected))
        await client.stop()
    assert seen.frames == expected
    assert client.reader.malformed == 1
    assert "malformed frame" in caplog.text


async def test_on_frame_errors_are_logged_and_the_stream_goes_on(caplog):
    calls = []

    def on_frame(frame):
        calls.append(frame["Event"])
        if len(calls) == 1:
            raise RuntimeError("tracker bug")

    expected = file_frames(recording("inbound_busy_agent"))
    async with FakePbx(recording("inbound_busy_agent")) as pbx:
        done = asyncio.Event()

        def counting(frame):
            try:
                on_frame(frame)
            finally:
                if len(calls) == len(expected):
                    done.set()

        client = AmiClient(settings_for(pbx.port), on_frame=counting)
        await client.start()
        await asyncio.wait_for(done.wait(), 5)
        await client.stop()
    assert len(calls) == len(expected)
    assert "on_frame failed" in caplog.text


def test_reconnect_backoff_grows_and_never_exceeds_the_cap():
    client = AmiClient(
        settings_for(1, reconnect_initial_seconds=0.5, reconnect_max_seconds=60),
        on_frame=lambda frame: None,
    )
    delays = [client._backoff(n) for n in range(40)]
    assert 0.25 <= delays[0] <= 0.5
    assert all(d <= 60 for d in delays)
    assert max(delays[10:]) >= 30


def test_settings_refuse_a_reconnect_cap_above_a_minute():
    with pytest.raises(ValueError):
        settings_for(1, reconnect_max_seconds=61)


# -- panoramisk underneath ----------------------------------------------------------------

BANNER = b"Asterisk Call Manager/11.0.0\r\n"  # as in every recording


class WirePbx:
    """A hand-written AMI server for what no recording holds (an action left unanswered when
    the connection drops, QueueAdd's answer). `script(n, conn)` runs connection n (0, 1 ...);
    every action each connection received is kept in `actions[n]`. Login answers are the
    recordings' (`Response: Success` / `Message: Authentication accepted`)."""

    def __init__(self, script) -> None:
        self.script = script
        self.actions: list[list[dict[str, str]]] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> WirePbx:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received: list[dict[str, str]] = []
        self.actions.append(received)
        conn = _WireConnection(reader, writer, received)
        writer.write(BANNER)
        try:
            login = await conn.read()
            conn.answer(login, "Response: Success", "Message: Authentication accepted")
            await self.script(len(self.actions) - 1, conn)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class _WireConnection:
    def __init__(self, reader, writer, received) -> None:
        self.reader, self.writer, self.received = reader, writer, received

    async def read(self) -> dict[str, str]:
        block = (await self.reader.readuntil(b"\r\n\r\n")).decode()
        action = dict(line.split(": ", 1) for line in block.split("\r\n") if line)
        self.received.append(action)
        return action

    def answer(self, action: dict[str, str], *lines: str) -> None:
        head, *rest = lines
        frame = [head, f"ActionID: {action['ActionID']}", *rest]
        self.writer.write(("\r\n".join(frame) + "\r\n\r\n").encode())

    async def serve_quietly(self) -> None:
        """Answer Ping and Logoff as Asterisk does, until the client goes."""
        while True:
            action = await self.read()
            if action["Action"] == "Ping":
                self.answer(action, "Response: Success", "Ping: Pong", "Timestamp: 1.0")
            elif action["Action"] == "Logoff":
                self.answer(action, "Response: Goodbye", "Message: Thanks for all the fish.")
                await self.writer.drain()
                return


async def test_actions_in_flight_when_the_connection_drops_fail_and_are_never_sent_again():
    """The scenario panoramisk's own Manager gets wrong: its AMIProtocol.close() queues the
    unanswered actions in `awaiting_actions` and the Manager re-sends them after the next
    login. Hand-built (no recording has a connection dying with an action unanswered)."""

    async def script(n: int, conn: _WireConnection) -> None:
        if n == 0:
            await conn.read()
            await conn.read()
            return  # both actions read, neither answered: the connection dies
        await conn.serve_quietly()

    seen = Collector()
    async with WirePbx(script) as pbx:
        client = client_for(pbx, seen)
        await client.start()
        await client.wait_connected(timeout=5)
        originate = asyncio.ensure_future(
            client.originate({"Channel": "PJSIP/101", "Exten": "100"}, timeout=5)
        )
        status = asyncio.ensure_future(client.send_action({"Action": "Status"}, timeout=5))
        done, _ = await asyncio.wait([originate, status], timeout=5)
        await seen.until(lambda: seen.connected == 2)
        pong = await client.send_action({"Action": "Ping"})
        await client.stop()

    assert len(done) == 2
    for attempt, name in ((originate, "Originate"), (status, "Status")):
        with pytest.raises(AmiConnectionLost, match=f"{name}.*not re-sent"):
            attempt.result()
    assert pong.ok
    assert [a["Action"] for a in pbx.actions[0]] == ["Login", "Originate", "Status"]
    assert [a["Action"] for a in pbx.actions[1]] == ["Login", "Ping", "Logoff"]


async def test_login_originate_and_core_show_channels_are_panoramisk_actions_on_the_wire():
    seen = Collector()
    (action,) = sent_actions(recording("click_to_call_originate"))
    async with FakePbx(recording("click_to_call_originate")) as pbx:
        client = client_for(pbx, seen)
        await client.start()
        await client.wait_connected(timeout=5)
        channels = await client.send_action({"Action": "CoreShowChannels"})
        answer = await client.originate(action, timeout=2)
        await client.stop()

    assert channels.ok and channels.complete is not None and answer.ok
    names = [a["Action"] for a in pbx.received_actions]
    assert names == ["Login", "CoreShowChannels", "Originate", "Logoff"]
    ours = f"action/{Action.action_id_generator.uid}/"
    for received in pbx.received_actions:
        # panoramisk's ActionID generator, and its serialiser (headers in sorted order).
        assert received["ActionID"].startswith(ours)
        assert list(received) == sorted(received)
    assert answer.action_id == pbx.received_actions[2]["ActionID"]


async def test_an_answer_panoramisk_would_take_for_a_list_completes_the_action_at_once():
    """panoramisk's `Action.multi` reads "Added ... to queue" as the start of a list and would
    wait for list events that never come. The answer is built from Asterisk's app_queue.c
    (`astman_send_ack(s, m, "Added interface to queue")`), not recorded."""

    async def script(n: int, conn: _WireConnection) -> None:
        add = await conn.read()
        conn.answer(add, "Response: Success", "Message: Added interface to queue")
        await conn.serve_quietly()

    seen = Collector()
    async with WirePbx(script) as pbx:
        client = client_for(pbx, seen)
        await client.start()
        await client.wait_connected(timeout=5)
        added = await client.send_action(
            {"Action": "QueueAdd", "Queue": "support", "Interface": "PJSIP/101"}, timeout=2
        )
        await client.stop()
    assert added.ok and added.message == "Added interface to queue"
    assert added.events == [] and added.complete is None


async def test_an_originate_with_a_non_ascii_caller_name_reaches_the_pbx_intact():
    seen = Collector()
    (action,) = sent_actions(recording("click_to_call_originate"))
    async with FakePbx(recording("click_to_call_originate")) as pbx:
        client = client_for(pbx, seen)
        await client.start()
        await client.wait_connected(timeout=5)
        answer = await client.originate({**action, "CallerID": '"Müller" <101>'}, timeout=2)
        await client.stop()
    assert answer.ok
    (sent,) = [a for a in pbx.received_actions if a["Action"] == "Originate"]
    assert sent["CallerID"] == '"Müller" <101>'


async def test_two_headers_differing_only_in_case_are_refused_before_anything_is_sent():
    seen = Collector()
    async with FakePbx(recording("inbound_busy_agent")) as pbx:
        client = client_for(pbx, seen)
        await client.start()
        await client.wait_connected(timeout=5)
        with pytest.raises(ValueError, match="differ only in case"):
            await client.send_action({"Action": "Ping", "X-Tag": "a", "x-tag": "b"})
        await client.stop()
    assert [a["Action"] for a in pbx.received_actions] == ["Login", "Logoff"]


async def test_the_rest_of_a_channel_list_that_comes_after_its_timeout_never_reaches_on_frame():
    """Half a CoreShowChannels list in time, the rest after the timeout: passed on, its
    closing event would make the tracker close the calls of the first half. Hand-built
    (no recording has a slow list); the list frames are shaped like the recorded ones in
    mid_call_connect_reconcile.ami, reduced to the headers that matter here."""
    timed_out = asyncio.Event()

    async def script(n: int, conn: _WireConnection) -> None:
        listing = await conn.read()
        conn.answer(
            listing, "Response: Success", "EventList: start", "Message: Channels will follow"
        )
        conn.answer(
            listing,
            "Event: CoreShowChannel",
            "Channel: PJSIP/trunk-00000000",
            "Uniqueid: 1795420539.0",
        )
        await timed_out.wait()
        conn.answer(
            listing,
            "Event: CoreShowChannel",
            "Channel: PJSIP/7181-00000001",
            "Uniqueid: 1795420539.1",
        )
        conn.answer(
            listing, "Event: CoreShowChannelsComplete", "EventList: Complete", "ListItems: 2"
        )
        conn.writer.write(
            b"Event: FullyBooted\r\nPrivilege: system,all\r\nStatus: Fully Booted\r\n\r\n"
        )
        await conn.serve_quietly()

    seen = Collector()
    async with WirePbx(script) as pbx:
        client = client_for(pbx, seen)
        await client.start()
        await client.wait_connected(timeout=5)
        with pytest.raises(AmiActionTimeout, match="CoreShowChannels"):
            await client.send_action({"Action": "CoreShowChannels"}, timeout=0.2)
        timed_out.set()
        await seen.until(lambda: any(f["Event"] == "FullyBooted" for f in seen.frames))
        await client.stop()
    assert [f["Event"] for f in seen.frames] == ["FullyBooted"]


async def test_an_originate_that_timed_out_still_reports_its_originate_response():
    """The click-to-call tracker matches OriginateResponse by ActionID: a late answer must not
    take it along. Hand-built answer order (recorded frames, the answer delayed)."""
    timed_out = asyncio.Event()

    async def script(n: int, conn: _WireConnection) -> None:
        originate = await conn.read()
        await timed_out.wait()
        conn.answer(originate, "Response: Success", "Message: Originate successfully queued")
        conn.answer(
            originate,
            "Event: OriginateResponse",
            "Response: Success",
            "Channel: PJSIP/101-00000004",
            "Reason: 4",
        )
        await conn.serve_quietly()

    seen = Collector()
    async with WirePbx(script) as pbx:
        client = client_for(pbx, seen)
        await client.start()
        await client.wait_connected(timeout=5)
        with pytest.raises(AmiActionTimeout):
            await client.originate({"Channel": "PJSIP/101", "ActionID": "c2c-late"}, timeout=0.2)
        timed_out.set()
        await seen.until(lambda: bool(seen.frames))
        await client.stop()
    (result,) = seen.frames
    assert (result["Event"], result["ActionID"], result["Reason"]) == (
        "OriginateResponse",
        "c2c-late",
        "4",
    )
