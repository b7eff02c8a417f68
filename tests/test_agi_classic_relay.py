"""Classic AGI through the daemon: `pbxcrm-agi` relays its stdin/stdout to the FastAGI port.

The daemon is pbxcrm's real FastAGI server on 127.0.0.1 (port 0) in this process; the
`pbxcrm-agi` program runs as a subprocess with the fake Asterisk on its stdin/stdout. The
daemon and the program's own config know the caller under different names, so each test can
tell which of the two ran the script.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from agi.channel import AgiChannel
from agi.context import ScriptContext, SurveyResult, build_script_context
from agi.fastagi import FastAgiServer, start_fastagi
from agi.scripts import SCRIPTS
from agi.scripts.registry import register_script
from agi.settings import AgiSettings
from tests.fakes.agi_asterisk import load_recording
from tests.test_agi_classic import OK, classic_env, run_agi, write_config

NUMBER = "+79031234567"


def contacts(name: str) -> dict:
    return {"type": "local", "contacts": [{"number": NUMBER, "name": name}]}


class Daemon:
    def __init__(self) -> None:
        self.surveys: list[SurveyResult] = []
        self.server: FastAgiServer | None = None
        self.http: aiohttp.ClientSession | None = None

    async def sink(self, result: SurveyResult) -> None:
        self.surveys.append(result)

    async def start(self) -> int:
        settings = AgiSettings(port=0)
        self.http = aiohttp.ClientSession()
        context = build_script_context(
            settings, [contacts("Known To Daemon")], self.http, self.sink
        )
        self.server = await start_fastagi(settings, context)
        return self.server.port


@pytest.fixture
async def daemon() -> AsyncIterator[Daemon]:
    running = Daemon()
    yield running
    if running.server:
        await running.server.stop()
    if running.http:
        await running.http.close()


def classic_config(tmp_path: Path, port: int, extra: str = "") -> Path:
    """The program's own config: the daemon's port, and contacts of its own."""
    return write_config(
        tmp_path,
        f'[agi]\nport = {port}\nsurvey_spool = "{tmp_path / "spool.jsonl"}"\n{extra}\n'
        f'[[lookup]]\ntype = "local"\ncontacts = [{{ number = "{NUMBER}", '
        'name = "Known In Process" }]\n',
    )


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def caller_check(tmp_path: Path, port: int, *args: str) -> tuple[list[str], int, str]:
    rec = load_recording("caller_check")
    env = classic_env(rec.env, "caller_check", *args)
    replies = [*rec.replies, OK, OK, OK] if not args else [OK, OK, OK]
    talk, code, stderr = await run_agi(
        ["caller_check", *args], env, replies, classic_config(tmp_path, port)
    )
    return talk.commands, code, stderr


async def test_caller_check_is_run_by_the_daemon_when_it_listens(tmp_path, daemon):
    port = await daemon.start()
    commands, code, _ = await caller_check(tmp_path, port)
    assert commands == [
        "GET VARIABLE CALLERID(num)",
        "SET VARIABLE CRM_FOUND 1",
        "SET VARIABLE CRM_LOOKUP_STATUS FOUND",
        'SET VARIABLE CRM_CONTACT_NAME "Known To Daemon"',
    ]
    assert code == 0
    assert daemon.server is not None and daemon.server.sessions_total == 1


async def test_the_programs_argv_not_its_classic_agi_args_are_the_script_arguments(
    tmp_path, daemon
):
    # Classic AGI's agi_arg_1 is "caller_check" (the program's argv); taken as the number
    # argument it would be looked up and not found.
    port = await daemon.start()
    commands, _, _ = await caller_check(tmp_path, port, NUMBER)
    assert commands[:2] == ["SET VARIABLE CRM_FOUND 1", "SET VARIABLE CRM_LOOKUP_STATUS FOUND"]


async def test_survey_rating_goes_to_the_daemons_outbox_not_the_spool(tmp_path, daemon):
    port = await daemon.start()
    rec = load_recording("survey")
    args = [NUMBER, "q1", "7070"]
    env = classic_env(rec.env, "survey", *args)
    extra = [b"200 result=1 (1795418044.10)\n", b"200 result=0 endpos=9120\n"]
    talk, code, _ = await run_agi(
        ["survey", *args], env, [*rec.replies, *extra], classic_config(tmp_path, port)
    )
    assert talk.commands[:4] == rec.sent
    assert [(s.rating, s.extension, s.number) for s in daemon.surveys] == [(7, "7070", NUMBER)]
    assert not (tmp_path / "spool.jsonl").exists()
    assert code == 0


async def test_without_a_daemon_the_program_runs_the_script_itself(tmp_path):
    commands, code, _ = await caller_check(tmp_path, closed_port())
    assert 'SET VARIABLE CRM_CONTACT_NAME "Known In Process"' in commands
    assert code == 0


async def test_classic_via_daemon_false_keeps_the_session_in_the_program(tmp_path, daemon):
    port = await daemon.start()
    rec = load_recording("caller_check")
    config = classic_config(tmp_path, port, "classic_via_daemon = false")
    talk, _, _ = await run_agi(
        ["caller_check"], classic_env(rec.env, "caller_check"), [*rec.replies, OK, OK, OK], config
    )
    assert 'SET VARIABLE CRM_CONTACT_NAME "Known In Process"' in talk.commands
    assert daemon.server is not None and daemon.server.sessions_total == 0


async def test_a_daemon_that_closes_without_a_command_leaves_the_script_to_the_program(tmp_path):
    environments: list[bytes] = []

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        environments.append(await reader.readuntil(b"\n\n"))
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    try:
        commands, code, _ = await caller_check(tmp_path, server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()
    assert 'SET VARIABLE CRM_CONTACT_NAME "Known In Process"' in commands
    assert code == 0
    # What the daemon was offered: FastAGI's form of the classic environment.
    [offered] = environments
    lines = offered.decode().splitlines()
    assert "agi_network: yes" in lines and "agi_network_script: caller_check" in lines
    assert not [line for line in lines if line.startswith("agi_arg_")]
    assert "agi_request: /usr/local/bin/pbxcrm-agi" in lines


@pytest.fixture
def probe_script() -> AsyncIterator[list[bool]]:
    """A script that asks one variable and notes whether it then knows of a hang-up."""
    seen: list[bool] = []

    @register_script("hangup_probe")
    async def hangup_probe(channel: AgiChannel, context: ScriptContext) -> str:
        await channel.get_variable("X")
        seen.append(channel.hung_up)
        return "ok"

    yield seen
    del SCRIPTS["hangup_probe"]


async def test_sighup_reaches_the_daemon_as_the_hangup_line_fastagi_gets(
    tmp_path, daemon, probe_script
):
    port = await daemon.start()
    rec = load_recording("caller_check")
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "agi.classic", "--config", str(classic_config(tmp_path, port))],
        "hangup_probe",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin and proc.stdout
    try:
        proc.stdin.write(classic_env(rec.env, "hangup_probe"))
        command = await asyncio.wait_for(proc.stdout.readline(), 10)
        assert command == b"GET VARIABLE X\n"
        # Asterisk's order on a classic AGI: SIGHUP, then the reply (511 for later commands).
        proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.2)
        proc.stdin.write(b"200 result=0\n")
        assert await asyncio.wait_for(proc.stdout.read(), 10) == b""
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert probe_script == [True]


def test_environment_with_a_line_break_in_an_argument_cannot_forge_a_line():
    from agi.classic_relay import fastagi_environment

    env = fastagi_environment(b"agi_channel: X\nagi_arg_1: s\n\n", "survey", ["1\nagi_x: 2"])
    assert env.split(b"\n") == [
        b"agi_channel: X",
        b"agi_network: yes",
        b"agi_network_script: survey",
        b"agi_arg_1: 1 agi_x: 2",
        b"",
        b"",
    ]


@pytest.mark.parametrize(
    ("body", "address"),
    [
        ("[agi]\nport = 4600\n", ("127.0.0.1", 4600)),
        ('[agi]\nhost = "0.0.0.0"\n', ("0.0.0.0", 4573)),
        ("[[lookup]]\ntype = 'local'\n", ("127.0.0.1", 4573)),
        ("[agi]\nclassic_via_daemon = false\n", None),
        ("[agi]\nenabled = false\n", None),  # the daemon does not listen
        ("[agi]\nport = 0\n", None),  # an ephemeral port cannot be found from here
        ("[agi]\nport = 'x'\n", None),  # the in-process driver names the mistake
        ("[agi\n", None),
    ],
)
def test_where_the_daemon_is_comes_from_the_configs_agi_section(tmp_path, body, address):
    from agi.classic import daemon_address

    assert daemon_address(str(write_config(tmp_path, body))) == address


def test_without_a_config_no_daemon_is_guessed():
    from agi.classic import daemon_address

    assert daemon_address(None) is None
