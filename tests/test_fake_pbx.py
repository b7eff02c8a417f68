"""The fake PBX, talked to by a bare TCP client: what it sends, byte for byte."""

from __future__ import annotations

import asyncio
import time

import pytest

from ari_app.app.fake_pbx import split_connections
from ari_app.pbx.ami.frames import FrameReader, parse_frames
from tests.fakes.ami_pbx import FakePbx
from tests.fakes.ami_streams import replicate
from tests.test_ami_support import file_frames, recording

LOGIN = b"Action: Login\r\nActionID: L1\r\nUsername: crm\r\nSecret: crmsecret\r\nEvents: on\r\n\r\n"


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.frames = FrameReader()
        self.received: list[dict[str, str]] = []
        self.raw = b""

    @classmethod
    async def connect(cls, pbx: FakePbx) -> RawClient:
        return cls(*await asyncio.open_connection("127.0.0.1", pbx.port))

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def until(self, condition, timeout: float = 5.0) -> None:
        async def read() -> None:
            while not condition():
                chunk = await self.reader.read(65536)
                if not chunk:
                    raise EOFError("server closed")
                self.raw += chunk
                self.received.extend(self.frames.feed(chunk))

        await asyncio.wait_for(read(), timeout)

    async def until_closed(self, timeout: float = 5.0) -> None:
        with pytest.raises(EOFError):
            await self.until(lambda: False, timeout)

    def close(self) -> None:
        self.writer.close()


async def test_a_wrong_secret_gets_asterisks_error_and_the_connection_closes():
    async with FakePbx(recording("inbound_busy_agent")) as pbx:
        client = await RawClient.connect(pbx)
        client.send(LOGIN.replace(b"crmsecret", b"wrong"))
        await client.until_closed()
        client.close()
    assert client.raw == (
        b"Asterisk Call Manager/11.0.0\r\n"
        b"Response: Error\r\nActionID: L1\r\nMessage: Authentication failed\r\n\r\n"
    )
    assert pbx.received_actions[0]["Secret"] == "wrong"


async def test_login_gets_the_recorded_response_with_the_clients_action_id():
    async with FakePbx(recording("inbound_busy_agent")) as pbx:
        client = await RawClient.connect(pbx)
        client.send(LOGIN)
        await client.until(lambda: len(client.received) >= 1)
        client.close()
    assert client.raw.startswith(
        b"Asterisk Call Manager/11.0.0\r\n"
        b"Response: Success\r\nActionID: L1\r\nMessage: Authentication accepted\r\n\r\n"
    )


async def test_a_login_without_action_id_gets_a_response_without_one():
    async with FakePbx(recording("inbound_busy_agent")) as pbx:
        client = await RawClient.connect(pbx)
        client.send(LOGIN.replace(b"ActionID: L1\r\n", b""))
        await client.until(lambda: len(client.received) >= 1)
        client.close()
    assert client.received[0] == {"Response": "Success", "Message": "Authentication accepted"}


async def test_actions_before_login_are_denied():
    async with FakePbx(recording("inbound_busy_agent")) as pbx:
        client = await RawClient.connect(pbx)
        client.send(b"Action: Status\r\nActionID: s1\r\n\r\n")
        await client.until(lambda: len(client.received) >= 1)
        client.close()
    assert client.received == [
        {"Response": "Error", "ActionID": "s1", "Message": "Permission denied"}
    ]


async def test_the_whole_recording_is_streamed_and_logoff_gets_the_recorded_goodbye():
    path = recording("inbound_busy_agent")
    async with FakePbx(path) as pbx:
        client = await RawClient.connect(pbx)
        client.send(LOGIN)
        expected = file_frames(path)
        await client.until(lambda: len(client.received) >= 1 + len(expected))
        client.send(b"Action: Logoff\r\nActionID: bye\r\n\r\n")
        await client.until_closed()
        await pbx.wait_finished(timeout=1)
        client.close()
    assert client.received[1:-1] == expected
    assert client.received[-1] == {
        "Response": "Goodbye",
        "ActionID": "bye",
        "Message": "Thanks for all the fish.",
    }
    assert [a["Action"] for a in pbx.received_actions] == ["Login", "Logoff"]


async def test_the_reconnect_marker_splits_the_recording_into_connections():
    path = recording("asterisk_restart_mid_call")
    first, second = split_connections(path.read_bytes())
    async with FakePbx(path) as pbx:
        one = await RawClient.connect(pbx)
        one.send(LOGIN)
        await one.until_closed()  # the server closes where the recording says it did
        one.close()
        two = await RawClient.connect(pbx)
        two.send(LOGIN)
        await two.until(lambda: any(f.get("Event") == "SuccessfulAuth" for f in two.received))
        two.close()
    assert pbx.connections == 2
    assert one.received[-1]["Event"] == "Shutdown"
    assert one.received[1:] == [f for f in parse_frames(first) if "Event" in f]
    booted = next(f for f in two.received if f.get("Event") == "FullyBooted")
    assert booted["Uptime"] == "1"
    assert not first.endswith(b"\r\n\r\n\r\n") and second.startswith(b"Asterisk Call Manager/")


async def test_recorded_list_replies_wait_for_the_action_and_carry_the_clients_id():
    async with FakePbx(recording("mid_call_connect_reconcile")) as pbx:
        client = await RawClient.connect(pbx)
        client.send(LOGIN)
        await client.until(lambda: len(client.received) >= 3)  # login, FullyBooted, Auth
        assert len(client.received) == 3  # nothing more until the client asks
        client.send(b"Action: CoreShowChannels\r\nActionID: mine-7\r\n\r\n")
        await client.until(lambda: client.received[-1].get("Event") == "CoreShowChannelsComplete")
        client.close()
    reply = client.received[3:]
    assert [f.get("Event", f.get("Response")) for f in reply] == [
        "Success",
        "CoreShowChannel",
        "CoreShowChannel",
        "CoreShowChannelsComplete",
    ]
    assert {f["ActionID"] for f in reply} == {"mine-7"}


async def test_without_await_actions_unrequested_replies_are_skipped_and_the_replay_ends():
    path = recording("click_to_call_originate")
    async with FakePbx(path, await_actions=False) as pbx:
        client = await RawClient.connect(pbx)
        client.send(LOGIN)
        await pbx.wait_finished(timeout=5)
        expected = file_frames(path)
        await client.until(lambda: len(client.received) >= 1 + len(expected))
        client.close()
    streamed = client.received[1:]
    assert all("Event" in f for f in streamed)  # no Originate / Goodbye response
    assert [{k: v for k, v in f.items() if k != "ActionID"} for f in streamed] == expected


async def test_ping_is_answered_with_pong_and_unknown_actions_with_asterisks_error():
    async with FakePbx(recording("inbound_busy_agent"), await_actions=False) as pbx:
        client = await RawClient.connect(pbx)
        client.send(
            LOGIN + b"Action: Ping\r\nActionID: p\r\n\r\nAction: Bogus\r\nActionID: b\r\n\r\n"
        )
        await client.until(lambda: sum(1 for f in client.received if "Response" in f) >= 3)
        client.close()
    pong = next(f for f in client.received if f.get("ActionID") == "p")
    assert pong["Response"] == "Success" and pong["Ping"] == "Pong"
    assert float(pong["Timestamp"]) > 0
    bogus = next(f for f in client.received if f.get("ActionID") == "b")
    assert bogus == {
        "Response": "Error",
        "ActionID": "b",
        "Message": "Invalid/unknown command: Bogus. "
        "Use Action: ListCommands to show available commands.",
    }
    assert [a["Action"] for a in pbx.received_actions] == ["Login", "Ping", "Bogus"]


async def test_strip_timestamps_removes_every_timestamp_header():
    async with FakePbx(recording("inbound_busy_agent"), strip_timestamps=True) as pbx:
        client = await RawClient.connect(pbx)
        client.send(LOGIN)
        expected = file_frames(recording("inbound_busy_agent"))
        await client.until(lambda: len(client.received) >= 1 + len(expected))
        client.close()
    assert b"Timestamp:" not in client.raw
    assert len(client.received) == 1 + len(expected)


async def test_pace_follows_the_recorded_timestamp_gaps():
    path = recording("inbound_abandoned_while_ringing")
    stamps = [float(f["Timestamp"]) for f in file_frames(path) if "Timestamp" in f]
    span = max(stamps) - min(stamps)
    pace = 0.05
    async with FakePbx(path, pace=pace, await_actions=False) as pbx:
        client = await RawClient.connect(pbx)
        started = time.monotonic()
        client.send(LOGIN)
        await pbx.wait_finished(timeout=10)
        elapsed = time.monotonic() - started
        client.close()
    assert span * pace * 0.9 <= elapsed < span * pace + 2


def test_replicate_makes_every_copy_a_distinct_set_of_calls():
    path = recording("inbound_answered_caller_hangs_up")
    one = [f for f in parse_frames(path.read_bytes()) if "Event" in f]
    stream = replicate(path, 3)
    frames = parse_frames(stream)
    events = [f for f in frames if "Event" in f]
    assert len(events) == 3 * len(one)
    assert frames[0]["Response"] == "Success" and frames[-1]["Response"] == "Goodbye"
    per_copy = [events[i * len(one) : (i + 1) * len(one)] for i in range(3)]
    ids = [{f["Uniqueid"] for f in copy if "Uniqueid" in f} for copy in per_copy]
    channels = [{f["Channel"] for f in copy if "Channel" in f} for copy in per_copy]
    assert ids[0] == {f["Uniqueid"] for f in one if "Uniqueid" in f}  # copy 0 unchanged
    for a in range(3):
        for b in range(a + 1, 3):
            assert not ids[a] & ids[b]
            assert not channels[a] & channels[b]
    # Everything else is untouched.
    assert [f["Event"] for f in per_copy[2]] == [f["Event"] for f in one]
    first_channel = next(i for i, f in enumerate(one) if f["Event"] == "Newchannel")
    assert per_copy[2][first_channel]["CallerIDNum"] == one[first_channel]["CallerIDNum"]


async def test_a_replicated_stream_replays_through_the_fake():
    stream = replicate(
        [recording("inbound_busy_agent"), recording("outbound_agent_dials")], copies=5
    )
    async with FakePbx(stream) as pbx:
        client = await RawClient.connect(pbx)
        client.send(LOGIN)
        expected = [f for f in parse_frames(stream) if "Event" in f]
        await client.until(lambda: len(client.received) >= 1 + len(expected))
        client.close()
    assert client.received[1:] == expected


async def test_captures_joined_end_to_end_replay_as_one_session():
    first = recording("inbound_busy_agent").read_bytes()
    second = recording("outbound_agent_dials").read_bytes()
    goodbye = first.rindex(b"Response: Goodbye")
    joined = first[:goodbye] + second
    async with FakePbx(joined, await_actions=False) as pbx:
        client = await RawClient.connect(pbx)
        client.send(LOGIN)
        expected = file_frames(recording("inbound_busy_agent")) + file_frames(
            recording("outbound_agent_dials")
        )
        await client.until(lambda: len(client.received) >= 1 + len(expected))
        client.close()
    assert client.received[1:] == expected
    assert client.raw.count(b"Asterisk Call Manager/") == 1
