"""AGI wire format: environment, replies and argument quoting, without sockets."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agi.channel import ReplyReader
from agi.protocol import (
    AgiCommandError,
    AgiHangup,
    AgiProtocolError,
    EnvParser,
    format_command,
    parse_reply,
    quote_arg,
)
from agi.variables import cut_value, flatten, variable_part
from tests.fakes.agi_asterisk import asterisk_parse_args, load_recording


def test_the_recorded_environment_parses_with_its_arguments_in_order():
    parser = EnvParser()
    lines = load_recording("survey").env.decode().split("\n")
    done = [parser.feed(line) for line in lines[:-1]]
    assert done[-1] is True and not any(done[:-1])
    env = parser.result()
    assert env.script == "survey"
    assert env.args == ("+79031234567", "q1")
    assert env.callerid == "+79031234567"
    assert env.dnid == "4951110000"
    assert env.get("agi_accountcode") == ""
    assert env.get("agi_rdnis") == "unknown"


@pytest.mark.parametrize(
    "line",
    ["GET / HTTP/1.1", "\x16\x03\x01\x02\x00", "agi_channel PJSIP/x", "foo: bar", "agi bad: x"],
)
def test_a_line_that_is_not_agi_environment_is_a_protocol_error(line):
    with pytest.raises(AgiProtocolError, match="not an AGI environment line"):
        EnvParser().feed(line)


def test_an_environment_that_never_ends_is_cut_off():
    parser = EnvParser()
    with pytest.raises(AgiProtocolError, match="longer than"):
        for n in range(10_000):
            parser.feed(f"agi_x{n}: y")


def _line_by_line(lines: list[str]) -> tuple[object, ...]:
    parser = EnvParser()
    try:
        for line in lines:
            parser.feed(line.rstrip("\r"))
    except AgiProtocolError as exc:
        return ("error", str(exc))
    env = parser.result()
    return (env.values, env.args, parser.lines)


def _as_block(lines: list[str]) -> tuple[object, ...]:
    parser = EnvParser()
    try:
        parser.feed_block("".join(f"{line}\n" for line in lines))
    except AgiProtocolError as exc:
        return ("error", str(exc))
    env = parser.result()
    return (env.values, env.args, parser.lines)


_env_value = st.text(alphabet=st.sampled_from("ab :\r\t+7é"), max_size=8)
_env_sep = st.sampled_from([": ", ":", ":  ", ": \r", "\r:"])
_good_env_line = st.builds(
    lambda name, sep, value: f"agi_{name}{sep}{value}",
    st.sampled_from(["channel", "arg_1", "arg_2", "arg_10", "arg_x", "", "x\t1"]),
    _env_sep,
    _env_value,
)


@given(st.lists(_good_env_line, min_size=1, max_size=8))
def test_a_block_parses_exactly_as_its_lines_one_by_one(lines):
    """FastAGI hands the whole block to one regex; classic AGI feeds it line by line."""
    assert _as_block(lines) == _line_by_line(lines)


def test_every_line_near_the_edge_is_judged_the_same_in_a_block():
    """A space, a non-ASCII letter or a CR in the name, a missing prefix or colon, text
    before the name: each alone and in the middle of the recorded environment."""
    recorded = load_recording("survey").env.decode().split("\n")[:-2]
    prefixes = ["agi_", "agi", "AGI_", " agi_", "\ragi_", "xagi_"]
    names = ["x", "x y", "é", "arg_1", "arg_01", "a\tb", "a\rb", ""]
    seps = [": ", ":", "", " ", " :", "\r:", ": \r", ":\r\r"]
    judged = 0
    for prefix, name, sep in itertools.product(prefixes, names, seps):
        odd = f"{prefix}{name}{sep}v"
        for lines in ([odd], [*recorded[:3], odd, *recorded[3:]]):
            assert _as_block(lines) == _line_by_line(lines), lines
            judged += 1
    assert judged == 2 * len(prefixes) * len(names) * len(seps)


def test_the_recorded_environment_parses_the_same_as_a_block():
    lines = load_recording("survey").env.decode().split("\n")[:-2]
    assert _as_block(lines) == _line_by_line(lines)
    assert _as_block(lines)[1] == ("+79031234567", "q1")


def test_a_block_longer_than_the_limit_is_refused():
    with pytest.raises(AgiProtocolError, match="longer than"):
        EnvParser().feed_block("".join(f"agi_x{n}: y\n" for n in range(300)))


def test_a_blank_line_before_any_variable_is_a_protocol_error():
    with pytest.raises(AgiProtocolError, match="empty AGI environment"):
        EnvParser().feed("")


@pytest.mark.parametrize(
    ("line", "result", "data", "endpos"),
    [
        ("200 result=1 (+79031234567)", "1", "+79031234567", None),
        ("200 result=0 endpos=3520", "0", None, 3520),
        ("200 result=-1 endpos=24160", "-1", None, 24160),
        ("200 result=7", "7", None, None),
        ("200 result= (timeout)", "", "timeout", None),
        ("200 result=1 (a (nested) value)", "1", "a (nested) value", None),
    ],
)
def test_recorded_and_documented_replies_parse(line, result, data, endpos):
    reply = parse_reply(line)
    assert (reply.code, reply.result, reply.data, reply.endpos) == (200, result, data, endpos)


def test_511_is_a_hang_up_and_510_520_are_command_errors():
    with pytest.raises(AgiHangup):
        parse_reply("511 Command Not Permitted on a dead channel or intercept routine")
    with pytest.raises(AgiCommandError):
        parse_reply("510 Invalid or unknown command")
    with pytest.raises(AgiProtocolError):
        parse_reply("hello")


def test_a_hangup_line_is_not_taken_for_the_reply_that_follows_it():
    reader = ReplyReader()
    assert reader.feed("HANGUP") is None
    assert reader.hung_up
    reply = reader.feed("200 result=1 (+79094445566)")
    assert reply is not None and reply.data == "+79094445566"


def test_a_520_usage_block_is_read_to_its_end_and_raised_whole():
    reader = ReplyReader()
    assert reader.feed("520-Invalid command syntax.  Proper usage follows:") is None
    assert reader.feed(" Usage: GET DATA <file> [timeout] [maxdigits]") is None
    with pytest.raises(AgiCommandError, match="Usage: GET DATA"):
        reader.feed("520 End of proper usage.")
    # and the reader is ready for the next command's reply
    assert reader.feed("200 result=1") is not None


def test_values_are_sent_bare_as_recorded_or_quoted():
    assert format_command("GET VARIABLE", "CALLERID(num)") == "GET VARIABLE CALLERID(num)"
    assert format_command("STREAM FILE", "beep", "") == 'STREAM FILE beep ""'
    assert format_command("GET DATA", "beep", 5000, 1) == "GET DATA beep 5000 1"
    assert format_command("VERBOSE", "survey answer 7", 1) == 'VERBOSE "survey answer 7" 1'


@given(st.text())
def test_any_value_reaches_asterisk_as_exactly_one_argument_on_one_line(value):
    quoted = quote_arg(value)
    assert "\n" not in quoted and "\r" not in quoted
    argv = asterisk_parse_args(f"SET VARIABLE X {quoted}")
    assert argv[:3] == ["SET", "VARIABLE", "X"]
    assert len(argv) == 4
    # control characters (no escape exists for a line break) become one space per run
    assert argv[3] == re.sub(r"[\x00-\x1f\x7f]+", " ", value)


def test_a_crm_value_cannot_start_a_second_command():
    line = format_command("SET VARIABLE", "CRM_CONTACT_NAME", 'Ivan "V" \\\nHANGUP\r\nEXEC Dial x')
    assert line == 'SET VARIABLE CRM_CONTACT_NAME "Ivan \\"V\\" \\\\ HANGUP EXEC Dial x"'
    assert asterisk_parse_args(line)[3] == 'Ivan "V" \\ HANGUP EXEC Dial x'


def test_names_are_sanitised_and_values_cut_on_a_character_boundary():
    assert variable_part("First name") == "FIRST_NAME"
    assert variable_part("Тел.") == "FIELD"
    assert cut_value("Жж", 3) == "Ж"  # 4 bytes of UTF-8; half a character is dropped
    assert cut_value("abc", 3) == "abc"


def test_nested_json_flattens_to_entity_field_names_with_arrays_counted():
    record = {
        "Contact": {"Name": "Ivan", "VIP": True, "Phones": ["+7903", "+7916"], "Note": None},
        "Open cases": 2,
        "contact": {"name": "shadowed"},
    }
    assert flatten(record, "CRM", 64, 256) == {
        "CRM_CONTACT_NAME": "Ivan",
        "CRM_CONTACT_VIP": "1",
        "CRM_CONTACT_PHONES_COUNT": "2",
        "CRM_CONTACT_PHONES_1": "+7903",
        "CRM_CONTACT_PHONES_2": "+7916",
        "CRM_CONTACT_NOTE": "",
        "CRM_OPEN_CASES": "2",
    }


def test_a_huge_record_is_capped_in_count_and_value_size():
    record = {f"f{n}": "x" * 10_000 for n in range(500)}
    flat = flatten(record, "CRM", 10, 100)
    assert len(flat) == 10
    assert all(len(v) == 100 for v in flat.values())
