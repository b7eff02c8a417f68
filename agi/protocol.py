"""The AGI wire protocol, shared by the FastAGI and classic drivers.

Asterisk sends an `agi_*: value` block ended by an empty line, then answers each command line
with one reply line (`200 result=N (data) endpos=M`), a multi-line `520-` usage text, or `511`
on a dead channel, and may slip an unsolicited `HANGUP` line in before any reply. Everything
here is pure (no I/O) so both drivers parse exactly the same way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

MAX_ENV_LINES = 256  # Asterisk sends ~25 lines plus one per argument; more means garbage


class AgiError(Exception):
    """Base class of every AGI failure a script may see."""


class AgiHangup(AgiError):
    """The caller is gone (511 dead channel, result=-1 while playing, SIGHUP) or the link closed."""


class AgiProtocolError(AgiError):
    """Asterisk (or whatever connected) sent something that is not AGI."""


class AgiCommandError(AgiError):
    """Asterisk rejected a command (510 invalid command, 520 usage): a bug on our side."""


@dataclass(frozen=True, slots=True)
class AgiEnvironment:
    """The `agi_*` header block; `args` are `agi_arg_1..N` in order."""

    values: dict[str, str]
    args: tuple[str, ...] = ()

    def get(self, key: str, default: str = "") -> str:
        return self.values.get(key, default)

    @property
    def script(self) -> str:
        """The script name from `agi://host:port/<script>?...` (FastAGI)."""
        name = self.get("agi_network_script")
        return name.split("?", 1)[0].strip("/")

    @property
    def channel(self) -> str:
        return self.get("agi_channel")

    @property
    def uniqueid(self) -> str:
        return self.get("agi_uniqueid")

    @property
    def callerid(self) -> str:
        return _known(self.get("agi_callerid"))

    @property
    def dnid(self) -> str:
        return _known(self.get("agi_dnid"))

    @property
    def extension(self) -> str:
        return self.get("agi_extension")


def _known(value: str) -> str:
    # Asterisk writes the literal word "unknown" for an absent caller ID / DNID / RDNIS.
    return "" if value == "unknown" else value


_ARG_KEY = re.compile(r"agi_arg_(\d+)")
# One whole environment line as feed_lines() accepts it: the name up to the first colon is
# ASCII without a space, one separator space is syntax, trailing CRs are not the value's.
_ENV_LINE = re.compile(r"^(agi_[\x00-\x09\x0b-\x1f\x21-\x39\x3b-\x7f]*): ?(.*?)\r*$", re.MULTILINE)


@dataclass(slots=True)
class EnvParser:
    """Feed it lines (without the line ending) until `feed` returns True."""

    values: dict[str, str] = field(default_factory=dict)
    lines: int = 0
    _args_seen: bool = False

    def feed(self, line: str) -> bool:
        if line == "":
            if not self.values:
                raise AgiProtocolError(
                    "empty AGI environment (no agi_* lines before the blank line)"
                )
            return True
        self.feed_lines((line,))
        return False

    def feed_lines(self, lines: Sequence[str]) -> None:
        """Lines that are all `agi_*` lines (none blank), in one loop."""
        if self.lines + len(lines) > MAX_ENV_LINES:
            raise AgiProtocolError(f"AGI environment longer than {MAX_ENV_LINES} lines")
        values = self.values
        for line in lines:
            key, sep, value = line.partition(":")
            if not sep or not key.startswith("agi_") or not key.isascii() or " " in key:
                raise AgiProtocolError(f"not an AGI environment line: {line[:80]!r}")
            # Asterisk writes "key: value"; only the single separator space is syntax.
            values[key] = value[1:] if value[:1] == " " else value
            self.lines += 1
            if key.startswith("agi_arg_"):
                self._args_seen = True

    def feed_block(self, text: str) -> None:
        """Whole `agi_*` lines, each ended by `\n` (FastAGI reads the block at once).

        One regex pass in C instead of a partition and four checks per line in Python (a
        tenth of a cache-hit session); when a line does not match, feed_lines() finds it and
        raises exactly as it would have.
        """
        pairs = _ENV_LINE.findall(text)
        count = text.count("\n")
        if len(pairs) != count or self.lines + count > MAX_ENV_LINES:
            self.feed_lines([line.rstrip("\r") for line in text.split("\n")[:-1]])
            return
        self.values.update(pairs)
        self.lines += count
        if "agi_arg_" in text:
            self._args_seen = True

    def result(self) -> AgiEnvironment:
        if not self._args_seen:
            return AgiEnvironment(dict(self.values))
        numbered = sorted(
            (int(m.group(1)), v)
            for k, v in self.values.items()
            if k.startswith("agi_arg_") and (m := _ARG_KEY.fullmatch(k))
        )
        return AgiEnvironment(dict(self.values), tuple(v for _, v in numbered))


@dataclass(frozen=True, slots=True)
class AgiReply:
    code: int
    result: str
    data: str | None = None
    endpos: int | None = None
    line: str = ""

    @property
    def result_int(self) -> int | None:
        try:
            return int(self.result)
        except ValueError:
            return None


# `200 result=1 (+7903...)`, `200 result=0 endpos=3520`, `200 result= (timeout)`.
_REPLY_200 = re.compile(
    r"200 result=(?P<result>\S*)(?: \((?P<data>.*)\))?(?: endpos=(?P<endpos>-?[0-9]{1,18}))?"
)


def parse_reply(line: str) -> AgiReply:
    """One reply line (not HANGUP, not a 520- block) to a reply or a typed error."""
    if match := _REPLY_200.fullmatch(line.rstrip()):
        endpos = match.group("endpos")
        return AgiReply(
            200,
            match.group("result"),
            match.group("data"),
            int(endpos) if endpos is not None else None,
            line,
        )
    code = line[:3]
    if code == "511":
        raise AgiHangup(f"dead channel: {line}")
    if code in ("510", "520"):
        raise AgiCommandError(line)
    raise AgiProtocolError(f"not an AGI reply: {line[:120]!r}")


# Values made only of these go out bare, as Asterisk's own examples write them
# (`GET DATA beep 5000 1`); everything else is quoted.
_BARE = re.compile(r"[A-Za-z0-9_+\-.,:/@*#=()&]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def quote_arg(value: object) -> str:
    """One command argument, safe whatever the CRM put in it.

    Asterisk's parse_args() honours `"` grouping and `\\` escapes, so quotes and backslashes
    are escaped; a command is one line and there is no escape for a line break, so CR, LF and
    other control characters become a space: no value can end the line and start a command.
    """
    text = str(value)
    if _BARE.fullmatch(text):
        return text
    text = _CONTROL.sub(" ", text).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def format_command(verb: str, *args: object) -> str:
    """The command line without its LF: `verb` is ours (a constant), args are quoted."""
    return " ".join([verb, *(quote_arg(a) for a in args)])
