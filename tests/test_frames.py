"""FrameReader: the AMI byte stream -> header dicts, wanted events only."""

from __future__ import annotations

import itertools
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ari_app.app.fake_pbx import RECONNECT_MARKER
from ari_app.pbx.ami.frames import (
    MAX_FRAME_BYTES,
    FrameFilter,
    FrameReader,
    HeaderRule,
    parse_frames,
)
from tests.test_ami_support import RECORDINGS, recording

BUSY = recording("inbound_busy_agent").read_bytes()


def reference_frames(data: bytes) -> list[dict[str, str]]:
    """An independent, obviously-correct parse of a CRLF recording (banner line dropped)."""
    data = data.replace(RECONNECT_MARKER + b"\r\n", b"")
    frames = []
    for block in data.decode().split("\r\n\r\n"):
        lines = [
            ln for ln in block.split("\r\n") if ln and not ln.startswith("Asterisk Call Manager/")
        ]
        headers: dict[str, str] = {}
        for line in lines:
            key, _, value = line.partition(": ")
            headers.setdefault(key, value)
        if lines:
            frames.append(headers)
    return frames


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.stem)
def test_every_recording_parses_into_the_same_frames_as_a_naive_parser(path):
    data = path.read_bytes()
    assert parse_frames(data.replace(RECONNECT_MARKER + b"\r\n", b"")) == reference_frames(data)


def test_the_banner_is_kept_aside_and_the_login_response_is_the_first_frame():
    reader = FrameReader()
    frames = reader.feed(BUSY)
    assert reader.banner == "Asterisk Call Manager/11.0.0"
    assert frames[0] == {
        "Response": "Success",
        "ActionID": "login-1",
        "Message": "Authentication accepted",
    }


def test_keys_keep_their_wire_case_and_empty_values_stay_empty():
    frame = next(f for f in parse_frames(BUSY) if f.get("Event") == "Newchannel")
    assert frame["Uniqueid"] and frame["Linkedid"]
    assert frame["AccountCode"] == ""


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(BUSY)), max_size=40))
def test_frames_split_anywhere_across_reads_come_out_the_same(cuts):
    reader = FrameReader()
    frames = []
    bounds = [0, *sorted(cuts), len(BUSY)]
    for start, end in itertools.pairwise(bounds):
        frames.extend(reader.feed(BUSY[start:end]))
    assert frames == parse_frames(BUSY)


def test_one_byte_reads_give_the_same_frames():
    reader = FrameReader()
    frames = []
    for i in range(len(BUSY)):
        frames.extend(reader.feed(BUSY[i : i + 1]))
    assert frames == parse_frames(BUSY)


def test_bare_lf_line_ends_give_the_same_frames_as_crlf():
    assert parse_frames(BUSY.replace(b"\r\n", b"\n")) == parse_frames(BUSY)


def test_a_repeated_header_keeps_its_first_value():
    (frame,) = parse_frames(b"Event: Foo\r\nA: 1\r\nB: 2\r\nA: 3\r\n\r\n")
    assert frame == {"Event": "Foo", "A": "1", "B": "2"}


def test_a_command_responses_output_lines_are_joined():
    (frame,) = parse_frames(b"Response: Success\r\nOutput: one\r\nOutput: two\r\n\r\n")
    assert frame["Output"] == "one\ntwo"


TRACKED = FrameFilter.for_calls(
    ["Newchannel", "Hangup"],
    variables=["MONITOR_FILE", "MIXMONITOR_FILENAME", "VMSTATUS"],
    variable_prefixes=["CRM_"],
    applications=["VoiceMail"],
)


def test_unwanted_events_are_skipped_and_counted():
    reader = FrameReader(TRACKED)
    frames = reader.feed(BUSY)
    events = {f["Event"] for f in frames if "Event" in f}
    assert events <= {"Newchannel", "Hangup", "VarSet", "Newexten"}
    assert reader.skipped == sum(1 for f in parse_frames(BUSY) if "Event" in f) - len(
        [f for f in frames if "Event" in f]
    )
    assert reader.skipped > 0


def test_varset_is_wanted_only_for_the_listed_variables_inheritance_marks_ignored():
    frames = parse_frames(recording("inbound_answered_recorded").read_bytes(), TRACKED)
    variables = [f["Variable"] for f in frames if f.get("Event") == "VarSet"]
    assert variables.count("__MONITOR_FILE") == 2
    assert "MIXMONITOR_FILENAME" in variables
    assert set(variables) == {"__MONITOR_FILE", "MIXMONITOR_FILENAME", "__CRM_DID"}  # CRM_*


def test_varset_prefixes_and_newexten_applications_are_matched():
    survey = parse_frames(recording("ivr_agi_survey").read_bytes(), TRACKED)
    assert {f["Variable"] for f in survey if f.get("Event") == "VarSet"} >= {"CRM_FOUND"}
    busy = parse_frames(BUSY, TRACKED)
    apps = [f["Application"] for f in busy if f.get("Event") == "Newexten"]
    assert apps == ["VoiceMail"]
    assert [f["Value"] for f in busy if f.get("Variable") == "VMSTATUS"] == ["FAILED"]


def test_event_names_are_matched_case_insensitively():
    frames = parse_frames(BUSY, FrameFilter(["hangup"]))
    assert {f["Event"] for f in frames if "Event" in f} == {"Hangup"}


def test_responses_and_events_answering_an_action_are_always_delivered():
    data = recording("mid_call_connect_reconcile").read_bytes()
    frames = parse_frames(data, FrameFilter([]))
    assert [f.get("Event", f.get("Response")) for f in frames] == [
        "Success",
        "Success",
        "CoreShowChannel",
        "CoreShowChannel",
        "CoreShowChannelsComplete",
        "Success",
        "Status",
        "Status",
        "StatusComplete",
        "Goodbye",
    ]


def test_unwanted_events_with_an_action_id_are_dropped_while_no_action_can_be_answered():
    data = recording("mid_call_connect_reconcile").read_bytes()
    reader = FrameReader(FrameFilter([]))
    reader.action_events = False
    frames = reader.feed(data) + reader.feed(b"\r\n\r\n")
    assert [f.get("Event", f.get("Response")) for f in frames] == [
        "Success",
        "Success",
        "Success",
        "Goodbye",
    ]


def test_filter_decides_the_same_on_parsed_frames():
    for frame in parse_frames(BUSY):
        expected = frame in parse_frames(BUSY, TRACKED)
        assert TRACKED.wants(frame) == expected, frame


def test_garbage_is_skipped_with_a_log_line_and_the_next_frame_survives(caplog):
    caplog.set_level(logging.WARNING)
    reader = FrameReader()
    frames = reader.feed(
        b"Event: A\r\nX: 1\r\n\r\n\x00\xff\x13garbage\r\nmore junk\r\n\r\nEvent: B\r\nY: 2\r\n\r\n"
    )
    assert frames == [{"Event": "A", "X": "1"}, {"Event": "B", "Y": "2"}]
    assert reader.malformed == 1
    assert "skipped malformed frame" in caplog.text
    assert "1 so far" in caplog.text


def test_a_frame_without_event_or_response_is_malformed():
    reader = FrameReader()
    assert reader.feed(b"Foo: bar\r\n\r\nEvent: B\r\n\r\n") == [{"Event": "B"}]
    assert reader.malformed == 1


def test_an_oversized_frame_is_skipped_and_the_stream_recovers():
    huge = b"Event: Big\r\n" + b"X: " + b"y" * (MAX_FRAME_BYTES + 10) + b"\r\n\r\n"
    reader = FrameReader()
    frames = []
    stream = b"Event: A\r\n\r\n" + huge + b"Event: B\r\n\r\n"
    for i in range(0, len(stream), 4096):
        frames.extend(reader.feed(stream[i : i + 4096]))
    assert frames == [{"Event": "A"}, {"Event": "B"}]
    assert reader.malformed == 1


def test_an_oversized_frame_arriving_in_one_read_is_skipped_too():
    huge = b"Event: Big\r\nX: " + b"y" * (MAX_FRAME_BYTES + 10) + b"\r\n\r\n"
    reader = FrameReader()
    assert reader.feed(huge + b"Event: B\r\n\r\n") == [{"Event": "B"}]
    assert reader.malformed == 1


def test_undecodable_bytes_are_kept_escaped_not_dropped():
    (frame,) = parse_frames(b"Event: Newchannel\r\nCallerIDName: \xcf\xf0\xe8\r\n\r\n")
    assert frame["CallerIDName"] == "\\xcf\\xf0\\xe8"


def test_a_flood_of_garbage_is_logged_sparingly(caplog):
    caplog.set_level(logging.WARNING)
    reader = FrameReader()
    reader.feed(b"junk\r\n\r\n" * 500)
    assert reader.malformed == 500
    assert len(caplog.records) == 10


def test_header_rule_looks_at_the_named_header_only():
    rule = HeaderRule("Variable", frozenset({"DIALSTATUS"}))
    assert rule.matches(b"Event: VarSet\nVariable: DIALSTATUS\nValue: ANSWER")
    assert not rule.matches(b"Event: VarSet\nVariable: OTHER\nValue: DIALSTATUS")
    assert not rule.matches(b"Event: VarSet\nValue: x")


def _first_header_value(raw: bytes, header: bytes) -> bytes | None:
    """What a header rule must look at, read the plain way: the first `Header: ` line."""
    for line in raw.split(b"\n")[1:]:
        if line.startswith(header + b": "):
            return line[len(header) + 2 :].removesuffix(b"\r")
    return None


_RULE_TEXT = st.sampled_from(
    [
        b"DIALSTATUS",
        b"_DIALSTATUS",
        b"__CRM_X",
        b"CRM_",
        b"CRM",
        b"SURVEY_1",
        b"DIALSTATUSX",
        b"XDIALSTATUS",
        b"",
        b"_",
        b"\r",
        b" ",
        b"Variable: DIALSTATUS",
        b"\n",
        b"Value",
    ]
)


@settings(max_examples=400, deadline=None)
@given(
    lines=st.lists(
        st.tuples(
            st.sampled_from([b"Variable", b"Value", b"Channel", b"variable"]),
            st.lists(_RULE_TEXT, max_size=3).map(b"".join),
        ),
        max_size=5,
    ),
    eol=st.sampled_from([b"\n", b"\r\n"]),
)
def test_a_header_rule_decides_as_a_plain_read_of_the_first_such_header(
    lines: list[tuple[bytes, bytes]], eol: bytes
) -> None:
    # The rule rules most frames out with one regex before reading the header: it must never
    # rule out a frame whose first Variable line it wants.
    rule = HeaderRule(
        "Variable", frozenset({"DIALSTATUS"}), ("CRM_", "SURVEY_"), strip_underscores=True
    )
    raw = eol.join([b"Event: VarSet", *(name + b": " + value for name, value in lines)])
    value = _first_header_value(raw, b"Variable")
    bare = None if value is None else value.lstrip(b"_")
    want = bare is not None and (bare == b"DIALSTATUS" or bare.startswith((b"CRM_", b"SURVEY_")))
    assert rule.matches(raw) is want


def test_every_event_the_tracker_maps_is_one_the_frame_reader_parses() -> None:
    from ari_app.pbx.ami.events import EVENT_MAPPERS, TRACKED_EVENTS

    assert set(EVENT_MAPPERS) <= TRACKED_EVENTS
