"""Classic AGI: `pbxcrm-agi <script>` as a subprocess, the fake Asterisk on its stdin/stdout.

Classic AGI's environment is the FastAGI one without the `agi_network*` lines, with
`agi_request` = the program and the script name as `agi_arg_1` (Asterisk AGI docs; the lab
recorded FastAGI only, so these environments are the recorded ones adjusted by hand).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
from pathlib import Path

import pytest
from asterisk.agi import AGI

from agi.protocol import AgiHangup
from agi.pyst2_driver import Pyst2Agi
from tests.fakes.agi_asterisk import Conversation, converse, load_recording, with_env

OK = b"200 result=1\n"


def classic_env(recorded: bytes, *args: str) -> bytes:
    changes: dict[str, str | None] = {
        "agi_network": None,
        "agi_network_script": None,
        "agi_request": "/usr/local/bin/pbxcrm-agi",
    }
    for n in range(1, 10):
        changes[f"agi_arg_{n}"] = None
    for n, value in enumerate(args, start=1):
        changes[f"agi_arg_{n}"] = value
    return with_env(recorded, **changes)


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "pbxcrm.toml"
    path.write_text(body, encoding="utf-8")
    return path


# These tests are about the in-process driver: no session may go to a daemon that happens to
# listen on the default FastAGI port (tests/test_agi_classic_relay.py covers that path).
IN_PROCESS = "[agi]\nclassic_via_daemon = false\n"


CONTACTS = (
    IN_PROCESS
    + """
[[lookup]]
type = "local"
contacts = [{ number = "+79031234567", name = "Ivan Petrov", owner_extension = "7181" }]
"""
)


async def run_agi(
    argv: list[str],
    env: bytes,
    replies: list[bytes],
    config: Path | None,
    close_when_out_of_replies: bool = False,
    environment: dict[str, str] | None = None,
) -> tuple[Conversation, int, str]:
    command = [sys.executable, "-m", "agi.classic"]
    if config is not None:
        command += ["--config", str(config)]
    proc = await asyncio.create_subprocess_exec(
        *command,
        *argv,
        env=environment,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin and proc.stdout and proc.stderr
    stderr_task = asyncio.create_task(proc.stderr.read())
    try:
        talk = await converse(proc.stdout, proc.stdin, env, replies, close_when_out_of_replies)
        if not proc.stdin.is_closing():
            proc.stdin.close()
        code = await asyncio.wait_for(proc.wait(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return talk, code, (await stderr_task).decode()


async def test_classic_caller_check_sends_what_fastagi_sends(tmp_path):
    rec = load_recording("caller_check")
    env = classic_env(rec.env, "caller_check")
    talk, code, stderr = await run_agi(
        ["caller_check"], env, [*rec.replies, OK, OK, OK], write_config(tmp_path, CONTACTS)
    )
    assert talk.commands == [
        "GET VARIABLE CALLERID(num)",
        "SET VARIABLE CRM_FOUND 1",
        "SET VARIABLE CRM_LOOKUP_STATUS FOUND",
        'SET VARIABLE CRM_CONTACT_NAME "Ivan Petrov"',
        "SET VARIABLE CRM_OWNER_EXTENSION 7181",
    ]
    assert code == 0
    # pyst2's own trace of every line (ENV LINE / COMMAND / RESULT_LINE) is kept out
    assert "ENV LINE" not in stderr and "RESULT_LINE" not in stderr and "COMMAND" not in stderr


async def test_classic_reads_the_config_path_the_dialplan_passes_before_the_script(tmp_path):
    # AGI(pbxcrm-agi,--config=${PBXCRM_AGI_CONFIG},caller_check): the shipped dialplan's form.
    rec = load_recording("caller_check")
    config = write_config(tmp_path, CONTACTS)
    env = classic_env(rec.env, f"--config={config}", "caller_check")
    talk, code, _ = await run_agi(
        [f"--config={config}", "caller_check"], env, [*rec.replies, OK, OK, OK], None
    )
    assert talk.commands[-1] == "SET VARIABLE CRM_OWNER_EXTENSION 7181"
    assert code == 0


def _without_pbxcrm_variables() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PBXCRM_")}


async def test_classic_without_any_config_says_where_to_put_one(tmp_path):
    """As Asterisk starts it: no --config, no PBXCRM_* in its environment, no default file."""
    rec = load_recording("caller_check")
    talk, code, stderr = await run_agi(
        ["caller_check"],
        classic_env(rec.env, "caller_check"),
        [OK, OK],
        None,
        environment=_without_pbxcrm_variables(),
    )
    assert talk.commands == ["SET VARIABLE CRM_FOUND 0", "SET VARIABLE CRM_LOOKUP_STATUS ERROR"]
    assert code == 1
    assert "no config: create /etc/pbxcrm/agi.toml" in stderr
    assert "no lookup source configured" not in stderr


async def test_classic_finds_its_config_through_the_environment(tmp_path):
    rec = load_recording("caller_check")
    environment = {
        **_without_pbxcrm_variables(),
        "PBXCRM_AGI_CONFIG": str(write_config(tmp_path, CONTACTS)),
    }
    talk, code, _ = await run_agi(
        ["caller_check"],
        classic_env(rec.env, "caller_check"),
        [*rec.replies, OK, OK, OK],
        None,
        environment=environment,
    )
    assert talk.commands[-1] == "SET VARIABLE CRM_OWNER_EXTENSION 7181" and code == 0


async def test_classic_config_without_lookups_says_so_once_not_as_a_crm_outage(tmp_path):
    rec = load_recording("caller_check")
    config = write_config(tmp_path, IN_PROCESS + "lookup_budget_seconds = 1\n")
    talk, _, stderr = await run_agi(
        ["caller_check"], classic_env(rec.env, "caller_check"), [*rec.replies, OK], config
    )
    assert talk.commands[-1] == "SET VARIABLE CRM_LOOKUP_STATUS ERROR"
    assert f"{config} has no [[lookup]] block" in stderr


async def test_classic_survey_spools_the_rating_for_the_daemon(tmp_path):
    rec = load_recording("survey")
    spool = tmp_path / "spool.jsonl"
    config = write_config(tmp_path, f'{IN_PROCESS}survey_spool = "{spool}"\n')
    env = classic_env(rec.env, "survey", "+79031234567", "q1", "7070")
    extra = [b"200 result=1 (1795418044.10)\n", b"200 result=0 endpos=9120\n"]
    talk, code, _ = await run_agi(
        ["survey", "+79031234567", "q1", "7070"], env, [*rec.replies, *extra], config
    )
    assert talk.commands[:4] == rec.sent
    assert talk.commands[4:] == ["GET VARIABLE CHANNEL(linkedid)", 'STREAM FILE auth-thankyou ""']
    [line] = spool.read_text().splitlines()
    saved = json.loads(line)
    assert (saved["rating"], saved["extension"], saved["number"], saved["question"]) == (
        7,
        "7070",
        "+79031234567",
        "q1",
    )
    assert code == 0


async def test_classic_hangup_line_and_511_end_the_survey_quietly(tmp_path):
    rec = load_recording("caller_hangs_up_mid_script")
    config = write_config(tmp_path, IN_PROCESS + '[agi.survey]\nintro_prompts = ["vm-intro"]\n')
    env = classic_env(rec.env, "survey", "+79094445566")
    talk, code, stderr = await run_agi(["survey", "+79094445566"], env, rec.replies, config)
    assert talk.commands == ['STREAM FILE vm-intro ""', "GET DATA beep 5000 1"]
    assert code == 0
    assert "hung up before rating" in stderr
    assert "Traceback" not in stderr


async def test_classic_end_of_input_mid_script_is_a_hang_up_not_a_crash(tmp_path):
    rec = load_recording("caller_check")
    env = classic_env(rec.env, "caller_check")
    # Asterisk answers the GET VARIABLE, then the pipe closes (the channel went away).
    talk, code, stderr = await run_agi(
        ["caller_check"], env, rec.replies[:1], write_config(tmp_path, CONTACTS), True
    )
    assert talk.commands == ["GET VARIABLE CALLERID(num)", "SET VARIABLE CRM_FOUND 1"]
    assert "caller hung up" in stderr
    assert "Traceback" not in stderr and code == 0


@pytest.mark.parametrize(
    "garbage", [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\n", b""], ids=["http", "blank", "eof"]
)
async def test_classic_garbage_environment_is_one_clear_error_line(garbage):
    talk, code, stderr = await run_agi(["caller_check"], garbage, [], None, True)
    assert talk.commands == []
    assert code == 1
    assert "AGI environment" in stderr and "Traceback" not in stderr


async def test_classic_bad_config_still_sends_the_dialplan_to_its_fallback(tmp_path):
    rec = load_recording("caller_check")
    config = write_config(tmp_path, "[agi]\nport = 'not a port'\n")
    talk, code, stderr = await run_agi(
        ["caller_check"], classic_env(rec.env, "caller_check"), [OK, OK], config
    )
    assert talk.commands == ["SET VARIABLE CRM_FOUND 0", "SET VARIABLE CRM_LOOKUP_STATUS ERROR"]
    assert code == 1 and "port" in stderr


# ---- pyst2 0.5.1 as measured, and what Pyst2Agi makes of the same input ----------------

ENV = "agi_channel: PJSIP/trunk-0000000b\nagi_uniqueid: 1795418050.11\n\n"


def pyst2(lines: str) -> tuple[AGI, io.StringIO, io.StringIO]:
    stdout, stderr = io.StringIO(), io.StringIO()
    return AGI(io.StringIO(ENV + lines), stdout, stderr), stdout, stderr


def ours(lines: str) -> tuple[Pyst2Agi, io.StringIO]:
    stdout = io.StringIO()
    return Pyst2Agi(io.StringIO(ENV + lines), stdout), stdout


def test_pyst2_raises_valueerror_on_a_hangup_line_where_ours_reads_the_real_reply():
    raw, _, _ = pyst2("HANGUP\n511 Command Not Permitted on a dead channel\n")
    with pytest.raises(ValueError):
        raw.execute("STREAM FILE", "beep", '""')
    agi, _ = ours("HANGUP\n511 Command Not Permitted on a dead channel\n200 result=1 (x)\n")
    with pytest.raises(AgiHangup, match="dead channel"):
        agi.execute("STREAM FILE", "beep", '""')
    assert agi.execute("GET VARIABLE", "X").data == "x"  # its own reply, not the 511


def test_pyst2_raises_valueerror_at_end_of_input_where_ours_raises_hangup():
    raw, _, _ = pyst2("")
    with pytest.raises(ValueError):
        raw.execute("NOOP")
    agi, _ = ours("")
    with pytest.raises(AgiHangup, match="closed"):
        agi.execute("NOOP")


def test_pyst2_returns_hangup_for_a_variable_whose_value_is_hangup():
    raw, _, _ = pyst2("200 result=1 (hangup)\n")
    assert raw.get_variable("MOOD") == "hangup"
    # ...and any other command with that data raises a hang-up that did not happen:
    raw2, _, _ = pyst2("200 result=1 (hangup)\n")
    with pytest.raises(Exception, match="hungup"):
        raw2.execute("GET FULL VARIABLE", "MOOD")
    agi, _ = ours("200 result=1 (hangup)\n")
    assert agi.execute("GET FULL VARIABLE", "MOOD").data == "hangup"


def test_pyst2_does_not_escape_and_traces_to_stderr():
    raw, stdout, stderr = pyst2("200 result=1\n")
    raw.set_variable("X", 'a "b"\nc')
    assert stdout.getvalue() == 'SET VARIABLE "X" "a "b"\nc"\n'  # two broken lines
    assert "ENV LINE" in stderr.getvalue() and "RESULT_LINE" in stderr.getvalue()
