"""The agents' board: which extension shows which call, fed with what the tracker concludes.

Recorded calls are replayed frame by frame through the real tracker. Ring-all groups with
several phones, several calls at once and transfers were NOT recorded in the lab: those frames
are HAND-BUILT from Asterisk 22's AMI event documentation (Newchannel, DialBegin/DialEnd,
HangupRequest, Hangup), shaped like the recorded frames of the same channels, as in
tests/test_tracker_unrecorded_scenarios.py.
"""

from __future__ import annotations

import pytest

from ari_app.agent.board import AgentBoard
from ari_app.calls.rules import CallRules
from ari_app.calls.tracker import CallTracker
from ari_app.pbx.ami.events import PbxClock, frame_to_event
from crm.model import CallEvent
from tests.recordings import recorded_frames


class Feed:
    """Frames -> tracker -> board, and hand-built frames for unrecorded scenarios."""

    def __init__(self, board: AgentBoard | None = None) -> None:
        self.tracker = CallTracker(CallRules(), pbx_id="lab")
        self.clock = PbxClock(now=lambda: 0.0)
        self.board = board or AgentBoard()
        self.events: list[CallEvent] = []
        self.ts = 1795500000.0
        self.channels: dict[str, dict[str, str]] = {}

    def frame(self, frame: dict[str, str]) -> None:
        mapped = frame_to_event(frame, self.clock.stamp(frame))
        if mapped is None:
            return
        for event in self.tracker.handle(mapped):
            self.events.append(event)
            self.board.on_call_event(event)

    def replay(self, scenario: str) -> None:
        for frame in recorded_frames(scenario):
            if "Event" in frame:
                self.frame(frame)

    # -- hand-built frames --------------------------------------------------------------

    def send(self, event: str, **headers: str) -> None:
        self.ts += 0.1
        self.frame({"Event": event, "Timestamp": f"{self.ts:.6f}", **headers})

    def channel(
        self,
        name: str,
        uniqueid: str,
        linkedid: str,
        caller: str,
        *,
        trunk: bool = False,
        exten: str = "s",
    ) -> None:
        self.channels[name] = {"Channel": name, "Uniqueid": uniqueid, "Linkedid": linkedid}
        self.send(
            "Newchannel",
            **self.channels[name],
            Context="from-trunk" if trunk else "from-internal",
            Exten=exten,
            CallerIDNum=caller,
            CallerIDName=caller,
            ChannelStateDesc="Ring" if trunk else "Down",
        )

    def dial(self, caller: str, dest: str, status: str | None = None) -> None:
        headers = {
            **self.channels[caller],
            "DestChannel": dest,
            "DestUniqueid": self.channels[dest]["Uniqueid"],
        }
        if status is None:
            self.send("DialBegin", **headers, DialString=dest.split("/")[1].split("-")[0])
        else:
            self.send("DialEnd", **headers, DialStatus=status)

    def hangup(self, name: str, *, request: bool = False) -> None:
        if request:
            self.send("HangupRequest", **self.channels[name], Cause="16")
        self.send("Hangup", **self.channels[name], Cause="16", **{"Cause-txt": "Normal Clearing"})

    def cards(self, extension: str) -> list[tuple[str, str]]:
        return [(c.call_id, c.state) for c in self.board.cards_for(extension)]


def ring_all(feed: Feed, call: str, caller: str, extensions: list[str]) -> None:
    """An inbound call on a trunk ringing every extension at once (Dial(PJSIP/a&PJSIP/b)).

    `call` becomes the channel names' suffix, which Asterisk writes in hex: keep it hex.
    """
    feed.channel(
        f"PJSIP/trunk-{call}", f"{call}.1", f"{call}.1", caller, trunk=True, exten="4951112233"
    )
    for i, extension in enumerate(extensions, start=2):
        feed.channel(f"PJSIP/{extension}-{call}", f"{call}.{i}", f"{call}.1", extension)
        feed.dial(f"PJSIP/trunk-{call}", f"PJSIP/{extension}-{call}")


def test_recorded_answered_call_shows_at_7181_and_stays_ended_for_the_note() -> None:
    feed = Feed()
    seen: list[tuple[str, str]] = []
    original = feed.board.on_call_event

    def watch(event: CallEvent) -> None:
        original(event)
        seen.append((event.kind.value, str(feed.cards("7181"))))

    feed.board.on_call_event = watch  # type: ignore[method-assign]
    feed.replay("inbound_answered_caller_hangs_up")
    assert [kind for kind, _ in seen] == ["ringing", "answered", "leg_ended", "hangup", "completed"]
    assert seen[0][1] == "[('1795417965.0', 'ringing')]"
    assert seen[1][1] == "[('1795417965.0', 'answered')]"
    assert seen[2][1] == "[('1795417965.0', 'ended')]"  # the agent's leg ended first
    assert feed.cards("7181") == [("1795417965.0", "ended")]
    assert feed.cards("7070") == []


@pytest.mark.parametrize(
    ("scenario", "answered_by", "only_rang"),
    [
        ("ring_group_three_agents", "517", ["7070", "7181"]),
        ("queue_ringall_second_member_answers", "7181", ["7070"]),
        ("queue_local_members_answered", "7070", ["7181"]),
        ("ring_group_local_channels", "7070", ["7181"]),
        ("call_pickup", "7070", ["7181"]),
        ("attended_transfer_target_hangs_up", "7070", []),
        ("blind_transfer_ami_target_hangs_up", "7070", []),
    ],
)
def test_recorded_multiparty_call_leaves_a_card_only_with_those_who_talked(
    scenario: str, answered_by: str, only_rang: list[str]
) -> None:
    feed = Feed()
    rang_while_ringing: dict[str, bool] = {}
    original = feed.board.on_call_event

    def watch(event: CallEvent) -> None:
        original(event)
        for extension in only_rang:
            if feed.cards(extension):
                rang_while_ringing[extension] = True

    feed.board.on_call_event = watch  # type: ignore[method-assign]
    feed.replay(scenario)
    assert [state for _, state in feed.cards(answered_by)] == ["ended"]
    for extension in only_rang:
        assert rang_while_ringing.get(extension), f"{extension} never showed the call"
        assert feed.cards(extension) == [], f"{extension}'s ring was never closed"


def test_recorded_call_abandoned_while_ringing_leaves_no_card() -> None:
    feed = Feed()
    feed.replay("inbound_abandoned_while_ringing")
    assert feed.board.open_cards == 0


def test_recorded_voicemail_call_leaves_no_card_once_the_phone_stops_ringing() -> None:
    feed = Feed()
    feed.replay("inbound_no_answer_voicemail")
    assert feed.board.open_cards == 0


def test_recorded_queue_call_pops_up_at_the_member_who_answered() -> None:
    feed = Feed()
    feed.replay("inbound_queue_answered")
    (card,) = feed.board.cards_for("517")
    assert card.state == "ended"
    assert card.call.queue == "support"


def test_ring_all_shows_the_call_everywhere_then_only_at_the_agent_who_answered() -> None:
    feed = Feed()
    ring_all(feed, "a1", "+79031112233", ["7181", "7070", "517"])
    assert [feed.cards(e) for e in ("7181", "7070", "517")] == [[("a1.1", "ringing")]] * 3
    feed.dial("PJSIP/trunk-a1", "PJSIP/7070-a1", "ANSWER")
    assert feed.cards("7070") == [("a1.1", "answered")]
    assert feed.cards("7181") == []
    assert feed.cards("517") == []
    for extension in ("7181", "517"):
        feed.dial("PJSIP/trunk-a1", f"PJSIP/{extension}-a1", "CANCEL")
        feed.hangup(f"PJSIP/{extension}-a1")
    assert feed.cards("7181") == [] and feed.cards("517") == []
    feed.hangup("PJSIP/7070-a1", request=True)
    feed.hangup("PJSIP/trunk-a1")
    assert feed.cards("7070") == [("a1.1", "ended")]


def test_two_calls_ringing_the_same_group_each_follow_their_own_answerer() -> None:
    feed = Feed()
    ring_all(feed, "b1", "+79031112233", ["7181", "7070"])
    ring_all(feed, "b2", "+79165550000", ["7181", "7070"])
    assert feed.cards("7181") == [("b2.1", "ringing"), ("b1.1", "ringing")]
    feed.dial("PJSIP/trunk-b1", "PJSIP/7181-b1", "ANSWER")
    feed.dial("PJSIP/trunk-b2", "PJSIP/7070-b2", "ANSWER")
    assert feed.cards("7181") == [("b1.1", "answered")]
    assert feed.cards("7070") == [("b2.1", "answered")]


def test_nobody_answering_a_ring_all_call_removes_it_everywhere() -> None:
    feed = Feed()
    ring_all(feed, "c1", "+79031112233", ["7181", "7070"])
    feed.hangup("PJSIP/trunk-c1", request=True)
    for extension in ("7181", "7070"):
        feed.dial("PJSIP/trunk-c1", f"PJSIP/{extension}-c1", "CANCEL")
        feed.hangup(f"PJSIP/{extension}-c1")
    feed.hangup("PJSIP/trunk-c1")
    assert feed.board.open_cards == 0


def test_an_internal_call_gets_no_card_by_default() -> None:
    feed = Feed()
    feed.channel("PJSIP/7070-d1", "d1.1", "d1.1", "7070", exten="7181")
    feed.channel("PJSIP/7181-d1", "d1.2", "d1.1", "7181")
    feed.dial("PJSIP/7070-d1", "PJSIP/7181-d1")
    feed.dial("PJSIP/7070-d1", "PJSIP/7181-d1", "ANSWER")
    assert feed.board.open_cards == 0
    shown = Feed(AgentBoard(directions=["internal"]))
    shown.channel("PJSIP/7070-d1", "d1.1", "d1.1", "7070", exten="7181")
    shown.channel("PJSIP/7181-d1", "d1.2", "d1.1", "7181")
    shown.dial("PJSIP/7070-d1", "PJSIP/7181-d1")
    assert shown.cards("7181") == [("d1.1", "ringing")]


def test_only_an_ended_card_can_be_dismissed_and_old_ones_expire() -> None:
    now = [0.0]
    feed = Feed(AgentBoard(keep_ended_seconds=60, clock=lambda: now[0]))
    ring_all(feed, "e1", "+79031112233", ["7181"])
    assert feed.board.dismiss("7181", "e1.1") is False  # still ringing
    feed.dial("PJSIP/trunk-e1", "PJSIP/7181-e1", "ANSWER")
    feed.hangup("PJSIP/7181-e1", request=True)
    feed.hangup("PJSIP/trunk-e1")
    assert feed.board.dismiss("7070", "e1.1") is False  # not theirs
    now[0] = 61.0
    assert feed.cards("7181") == []


def answered_and_ended(feed: Feed, call: str, extension: str) -> None:
    ring_all(feed, call, "+79031112233", [extension])
    feed.dial(f"PJSIP/trunk-{call}", f"PJSIP/{extension}-{call}", "ANSWER")
    feed.hangup(f"PJSIP/{extension}-{call}", request=True)
    feed.hangup(f"PJSIP/trunk-{call}")


def test_an_agent_keeps_only_the_newest_ended_cards_so_a_busy_shift_does_not_grow() -> None:
    now = [0.0]
    feed = Feed(AgentBoard(max_ended_per_extension=3, clock=lambda: now[0]))
    for n in range(1, 7):
        now[0] += 1
        answered_and_ended(feed, f"c{n}", "7181")
    answered_and_ended(feed, "d1", "7070")
    assert feed.cards("7181") == [("c6.1", "ended"), ("c5.1", "ended"), ("c4.1", "ended")]
    assert feed.cards("7070") == [("d1.1", "ended")]  # another agent's cards are not touched
    assert feed.board.open_cards == 4
    # A dismissed card frees its place; the next ended call does not push out another.
    assert feed.board.dismiss("7181", "c5.1") is True
    now[0] += 1
    answered_and_ended(feed, "c7", "7181")
    assert feed.cards("7181") == [("c7.1", "ended"), ("c6.1", "ended"), ("c4.1", "ended")]


def test_expiry_removes_only_the_cards_that_ended_long_enough_ago() -> None:
    now = [0.0]
    feed = Feed(AgentBoard(keep_ended_seconds=60, clock=lambda: now[0]))
    answered_and_ended(feed, "f1", "7181")
    now[0] = 30.0
    answered_and_ended(feed, "f2", "7181")
    now[0] = 31.0
    ring_all(feed, "f3", "+79031112233", ["7181"])  # ringing: never expires
    now[0] = 61.0
    assert feed.cards("7181") == [("f3.1", "ringing"), ("f2.1", "ended")]
    now[0] = 91.0
    assert feed.cards("7181") == [("f3.1", "ringing")]
    assert feed.board.open_cards == 1


async def test_a_watcher_wakes_for_its_own_extension_only() -> None:
    feed = Feed()
    anna = feed.board.subscribe("7181")
    boris = feed.board.subscribe("7070")
    ring_all(feed, "f1", "+79031112233", ["7181"])
    assert await anna.wait(1.0) is True
    assert await boris.wait(0.05) is False
    feed.board.close()
    assert await boris.wait(1.0) is True and boris.closed
    feed.board.unsubscribe(anna)
    feed.board.unsubscribe(boris)
