"""Classic AGI in the pbxcrm-agi process itself, on pyst2 (when the daemon does not take it).

The same scripts as FastAGI, over stdin/stdout. pyst2 0.5.1 reads the environment, handles
SIGHUP and writes the commands; its reply parsing is replaced, because (measured) it raises
ValueError rather than AGIHangup on a HANGUP line or end of input, turns a variable whose
value is "hangup" into a hang-up, does not escape `"`, `\\` or newline, and traces every line
to stderr. Here: replies go through agi.channel.ReplyReader like FastAGI's, every argument
through agi.protocol.quote_arg, and the trace goes nowhere.

Config: only `[agi]` and `[[lookup]]` are read (agi.classic finds the file).
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import aiohttp
from asterisk.agi import AGI, AGIHangup

from agi.channel import CommandChannel, ReplyReader
from agi.context import ScriptContext, SurveyResult, SurveySink, build_script_context
from agi.protocol import AgiEnvironment, AgiError, AgiHangup, AgiProtocolError, AgiReply, quote_arg
from agi.runner import run_script
from agi.scripts import SCRIPTS
from agi.settings import AgiSettings

log = logging.getLogger("pbxcrm.agi")


class _Discard(io.StringIO):
    """pyst2's stderr trace would put every caller's number in Asterisk's console log."""

    def write(self, text: str) -> int:
        return len(text)


class Pyst2Agi(AGI):
    """pyst2's AGI with a reply reader that knows HANGUP, 511, 520 and end of input."""

    def __init__(self, stdin: IO[str], stdout: IO[str]) -> None:
        self.replies = ReplyReader()
        super().__init__(stdin=stdin, stdout=stdout, stderr=_Discard())

    def get_result(self, stdin: object = None) -> AgiReply:  # type: ignore[override]
        while True:
            line = self.stdin.readline()
            if not line.endswith("\n"):
                raise AgiHangup("Asterisk closed stdin")
            if (reply := self.replies.feed(line.rstrip("\r\n"))) is not None:
                return reply


class ClassicChannel(CommandChannel):
    def __init__(self, env: AgiEnvironment, agi: Pyst2Agi) -> None:
        super().__init__(env)
        self._agi = agi
        self._replies = agi.replies

    @property
    def hung_up(self) -> bool:
        return self._replies.hung_up or self._agi._got_sighup

    async def command(self, verb: str, *args: object) -> AgiReply:
        try:
            return self._agi.execute(verb, *(quote_arg(a) for a in args))  # type: ignore[no-any-return]
        except AGIHangup as exc:  # SIGHUP before the command, or EPIPE writing it
            raise AgiHangup(f"{type(exc).__name__}: {exc}") from None
        except (BrokenPipeError, ValueError) as exc:  # ValueError: stdout already closed
            raise AgiHangup(f"cannot write to Asterisk: {exc}") from None


def classic_environment(raw: dict[str, str], script_args: Sequence[str]) -> AgiEnvironment:
    """pyst2's env dict checked like FastAGI's; the script's own args are the argv after it."""
    if not raw:
        raise AgiProtocolError("no AGI environment on stdin")
    bad = [key for key in raw if not key.startswith("agi_")]
    if bad:
        raise AgiProtocolError(f"not an AGI environment line: {bad[0][:80]!r}")
    return AgiEnvironment(dict(raw), tuple(script_args))


def spool_sink(path: Path) -> SurveySink:
    """A classic AGI process cannot reach the daemon's outbox: append one JSON line instead.

    O_APPEND with a single write() per line keeps concurrent callers' lines whole.
    """

    async def sink(result: SurveyResult) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        line = (result.model_dump_json() + "\n").encode("utf-8")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    return sink


def load_config(path: str | None) -> tuple[AgiSettings, list[dict[str, Any]]]:
    """`[agi]` and `[[lookup]]` of the pbxcrm config (raises ValueError, worded for an admin)."""
    if not path:
        raise ValueError(
            "no config: create /etc/pbxcrm/agi.toml ([agi] and [[lookup]] only, readable by the"
            " asterisk user) or pass --config=PATH in AGI(); see docs/agi.md"
        )
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read config file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    try:
        settings = AgiSettings.model_validate(raw.get("agi", {}))
    except ValueError as exc:
        raise ValueError(f"{path}: [agi]: {exc}") from None
    lookups = raw.get("lookup", [])
    if not isinstance(lookups, list):
        raise ValueError(f"{path}: lookup must be [[lookup]] blocks")
    if not lookups:
        # Said here, once, so it is not taken for a CRM outage ("no lookup source").
        log.warning("%s has no [[lookup]] block: caller_check answers ERROR for every caller", path)
    return settings, lookups


async def run_classic(
    script: str,
    script_args: Sequence[str],
    stdin: IO[str],
    stdout: IO[str],
    config_path: str | None,
) -> str:
    agi = Pyst2Agi(stdin, stdout)
    try:
        env = classic_environment(agi.env, script_args)
    except AgiProtocolError as exc:
        log.error("pbxcrm-agi %s: %s", script, exc)
        return "error"
    channel = ClassicChannel(env, agi)
    try:
        settings, lookups = load_config(config_path)
    except ValueError as exc:
        # Still answer the dialplan: its fallback branch must be taken, not a stale one.
        log.error("pbxcrm-agi %s: %s", script, exc)
        failure = SCRIPTS[script].on_failure if script in SCRIPTS else {}
        if failure:
            try:
                await channel.set_variables(failure)
            except AgiError as hangup:
                log.info("pbxcrm-agi %s: %s", script, hangup)
        return "config_error"
    async with aiohttp.ClientSession() as http:
        try:
            context: ScriptContext = build_script_context(
                settings, lookups, http, spool_sink(settings.survey_spool)
            )
        except ValueError as exc:
            log.error("pbxcrm-agi %s: %s", script, exc)
            context = ScriptContext(settings, survey_sink=spool_sink(settings.survey_spool))
        return await run_script(script, channel, context, counted=False)


class _PrereadStdin(io.RawIOBase):
    """Stdin with the bytes the relay already read put back in front."""

    def __init__(self, first: bytes, fd: int) -> None:
        self._first = first
        self._fd = fd

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._first or os.read(self._fd, len(buffer))
        taken = data[: len(buffer)]
        self._first = self._first[len(taken) :]
        buffer[: len(taken)] = taken
        return len(taken)


def _text_streams(preread: bytes) -> tuple[IO[str], IO[str]]:
    # Bytes that are not UTF-8 (a caller name from some trunk) must not kill the script.
    raw = io.BufferedReader(_PrereadStdin(preread, sys.stdin.fileno()))
    stdin = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="\n")
    stdout = io.TextIOWrapper(
        sys.stdout.buffer, encoding="utf-8", errors="replace", newline="\n", line_buffering=True
    )
    return stdin, stdout


def run_in_process(
    script: str, script_args: Sequence[str], config_path: str | None, preread: bytes = b""
) -> int:
    """The script in this process; `preread`: what the relay already took from stdin."""
    # Asterisk shows a classic AGI's stderr on its console: one line per problem, no trace.
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="pbxcrm-agi %(levelname)s %(message)s"
    )
    stdin, stdout = _text_streams(preread)
    outcome = asyncio.run(run_classic(script, script_args, stdin, stdout, config_path))
    # Non-zero only when nothing could be done; a hang-up is a normal end of a call.
    return 1 if outcome in ("error", "config_error", "unknown_script") else 0
