"""A test-side runner of an extensions.conf dialplan (no tests here), for the subset that
dialplan/extensions_pbxcrm.conf uses, executed the way pbx.c executes it.

No Asterisk runs in the tests, so this plays one channel through the parsed dialplan:
pattern matching of extensions (`_X.`, `[+0-9]`, `N`, `Z`, `.`, `!`), `${VAR}` / `${FUNC()}` /
`${VAR:offset}` / `$[expression]` substitution (each substituted value is text and is never
expanded again; arguments are split at commas after substitution, as Asterisk does),
priorities and labels, Gosub/Return, Goto/GotoIf/ExecIf. What a channel does outside the
dialplan (an AGI script, Dial, Wait) is a hook the test supplies. Any application, function
or operator this runner does not know raises RunnerError, so the dialplan cannot drift into
constructs no test executes.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from tests.test_agi_dialplan import Dialplan, Extension


class RunnerError(Exception):
    """The dialplan used something this runner does not execute, or went wrong."""


@dataclass
class Channel:
    name: str
    callerid: str
    variables: dict[str, str] = field(default_factory=dict)
    answered: bool = False
    hung_up: bool = False
    steps: list[tuple[str, list[str]]] = field(default_factory=list)  # (app, arguments)

    def apps(self, name: str) -> list[list[str]]:
        return [args for app, args in self.steps if app == name]


AgiHook = Callable[[Channel, list[str]], Awaitable[dict[str, str]]]
DialHook = Callable[[Channel, list[str]], Awaitable[str]]
WaitHook = Callable[[Channel, float], Awaitable[None]]


async def _no_agi(channel: Channel, args: list[str]) -> dict[str, str]:
    raise RunnerError(f"AGI({','.join(args)}) with no AGI hook")


async def _no_answer(channel: Channel, args: list[str]) -> str:
    return "NOANSWER"


async def _nothing(channel: Channel, seconds: float) -> None:
    return None


def pattern_matches(pattern: str, exten: str) -> bool:
    """Asterisk's extension match: literal names, or `_` patterns."""
    if not pattern.startswith("_"):
        return pattern == exten
    regex = ""
    body = pattern[1:]
    i = 0
    while i < len(body):
        char = body[i]
        if char == "X":
            regex += "[0-9]"
        elif char == "Z":
            regex += "[1-9]"
        elif char == "N":
            regex += "[2-9]"
        elif char == ".":
            regex += ".+"
        elif char == "!":
            regex += ".*"
        elif char == "[":
            end = body.index("]", i)
            regex += "[" + "".join(re.escape(c) if c != "-" else "-" for c in body[i + 1 : end])
            regex += "]"
            i = end
        elif char == "-":
            pass  # ignored in patterns, for readability
        else:
            regex += re.escape(char)
        i += 1
    return re.fullmatch(regex, exten) is not None


def split_args(text: str) -> list[str]:
    """Application arguments: commas at the top level separate; parentheses and quotes nest."""
    args, current, depth, quoted = [], [], 0, False
    for char in text:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in "([":
            depth += 1
        elif not quoted and char in ")]":
            depth -= 1
        elif char == "," and depth == 0 and not quoted:
            args.append("".join(current))
            current = []
            continue
        current.append(char)
    args.append("".join(current))
    return args


_TOKEN = re.compile(r'\s*("(?:[^"]*)"|!=|>=|<=|[|&=<>+\-()]|[^\s|&=<>!+\-()"]+)')


def _truthy(value: str) -> bool:
    return value not in ("", "0")


def evaluate_expression(text: str) -> str:
    """`$[...]` with the operators the dialplan uses: | & = != < > <= >= + - and ()."""
    tokens = [t for t in _TOKEN.findall(text) if t != ""]
    position = 0

    def peek() -> str | None:
        return tokens[position] if position < len(tokens) else None

    def take() -> str:
        nonlocal position
        position += 1
        return tokens[position - 1]

    def operand() -> str:
        token = take()
        if token == "(":
            value = either()
            if take() != ")":
                raise RunnerError(f"unbalanced $[{text}]")
            return value
        if token.startswith('"'):
            return token[1:-1]
        return token

    def sum_() -> str:
        value = operand()
        while peek() in ("+", "-"):
            op, right = take(), operand()
            try:
                left_n, right_n = int(value), int(right)
            except ValueError:
                raise RunnerError(f"non-numeric {op} in $[{text}]") from None
            value = str(left_n + right_n if op == "+" else left_n - right_n)
        return value

    def comparison() -> str:
        value = sum_()
        while peek() in ("=", "!=", "<", ">", "<=", ">="):
            op, right = take(), sum_()
            try:
                a: int | str = int(value)
                b: int | str = int(right)
            except ValueError:
                a, b = value, right
            result = {
                "=": a == b,
                "!=": a != b,
                "<": a < b,  # type: ignore[operator]
                ">": a > b,  # type: ignore[operator]
                "<=": a <= b,  # type: ignore[operator]
                ">=": a >= b,  # type: ignore[operator]
            }[op]
            value = "1" if result else "0"
        return value

    def both() -> str:
        value = comparison()
        while peek() == "&":
            take()
            right = comparison()
            value = value if _truthy(value) and _truthy(right) else "0"
        return value

    def either() -> str:
        value = both()
        while peek() == "|":
            take()
            right = both()
            value = value if _truthy(value) else right
        return value

    result = either()
    if position != len(tokens):
        raise RunnerError(f"cannot evaluate $[{text}] past {tokens[position]!r}")
    return result


def _filter(allowed: str, value: str) -> str:
    chars: set[str] = set()
    i = 0
    while i < len(allowed):
        if i + 2 < len(allowed) and allowed[i + 1] == "-":
            chars.update(chr(c) for c in range(ord(allowed[i]), ord(allowed[i + 2]) + 1))
            i += 3
        else:
            chars.add(allowed[i])
            i += 1
    return "".join(c for c in value if c in chars)


class DialplanRunner:
    def __init__(
        self,
        plan: Dialplan,
        *,
        agi: AgiHook = _no_agi,
        stasis: AgiHook = _no_agi,
        dial: DialHook = _no_answer,
        wait: WaitHook = _nothing,
        max_steps: int = 10_000,
    ) -> None:
        self.plan = plan
        self.agi, self.stasis, self.dial, self.wait = agi, stasis, dial, wait
        self.max_steps = max_steps

    # ---------------------------------------------------------------- substitution

    def expand(self, channel: Channel, text: str) -> str:
        out: list[str] = []
        i = 0
        while i < len(text):
            if text.startswith("${", i) or text.startswith("$[", i):
                opener, closer = text[i + 1], "}" if text[i + 1] == "{" else "]"
                depth, j = 1, i + 2
                while j < len(text) and depth:
                    if text[j] == opener:
                        depth += 1
                    elif text[j] == closer:
                        depth -= 1
                    j += 1
                if depth:
                    raise RunnerError(f"unclosed {text[i : i + 2]} in {text!r}")
                inner = self.expand(channel, text[i + 2 : j - 1])
                if opener == "{":
                    out.append(self.value(channel, inner))
                else:
                    out.append(evaluate_expression(inner))
                i = j
            else:
                out.append(text[i])
                i += 1
        return "".join(out)

    def value(self, channel: Channel, reference: str) -> str:
        function = re.fullmatch(r"([A-Z_]+)\((.*)\)", reference, re.DOTALL)
        if function:
            name, args = function[1], split_args(function[2])
            if name == "CALLERID" and args == ["num"]:
                return channel.callerid
            if name == "CHANNEL" and args == ["name"]:
                return channel.name
            if name == "CUT" and len(args) == 3:
                parts = channel.variables.get(args[0], "").split(args[1])
                index = int(args[2]) - 1
                return parts[index] if 0 <= index < len(parts) else ""
            if name == "FILTER" and len(args) == 2:
                return _filter(args[0], args[1])
            raise RunnerError(f"function not supported by the runner: {reference}")
        name, _, offset = reference.partition(":")
        builtin = {"EXTEN": channel.variables.get("EXTEN", "")}
        text = builtin.get(name, channel.variables.get(name, ""))
        return text[int(offset) :] if offset else text

    # ---------------------------------------------------------------- execution

    def find(self, context: str, exten: str) -> Extension:
        extensions = self.plan.contexts.get(context)
        if extensions is None:
            raise RunnerError(f"no context {context!r}")
        if exten in extensions:
            return extensions[exten]
        for pattern, extension in extensions.items():
            if pattern_matches(pattern, exten):
                return extension
        raise RunnerError(f"no extension {exten!r} in {context}")

    def _position(self, extension: Extension, priority: str) -> int:
        if priority.isdigit():
            return int(priority) - 1
        if priority in extension.label_at:
            return extension.label_at[priority]
        raise RunnerError(f"no label {priority!r} in {extension.name}")

    async def run(self, channel: Channel, context: str, exten: str) -> Channel:
        stack: list[tuple[str, str, int]] = []
        where = (context, exten, 0)
        for _ in range(self.max_steps):
            context, exten, index = where
            extension = self.find(context, exten)
            channel.variables["EXTEN"] = exten
            if index >= len(extension.apps):
                channel.hung_up = True  # running off the end hangs up
                return channel
            _line, app, raw = extension.apps[index]
            data = self.expand(channel, raw)
            jump = await self.execute(channel, app, data, (context, exten, index), stack)
            if channel.hung_up:
                return channel
            if jump == "return":
                if not stack:
                    raise RunnerError("Return() without Gosub()")
                where = stack.pop()
            elif jump is not None:
                target = split_args(jump)
                if len(target) == 1:
                    where = (context, exten, self._position(extension, target[0]))
                elif len(target) == 3:
                    found = self.find(target[0], target[1])
                    where = (target[0], target[1], self._position(found, target[2]))
                else:
                    raise RunnerError(f"Goto({jump}) not supported")
            else:
                where = (context, exten, index + 1)
        raise RunnerError(f"more than {self.max_steps} steps: a loop that never ends")

    async def execute(
        self,
        channel: Channel,
        app: str,
        data: str,
        here: tuple[str, str, int],
        stack: list[tuple[str, str, int]],
    ) -> str | None:
        args = split_args(data) if data else []
        channel.steps.append((app, args))
        if app in ("NoOp", "Queue", "VoiceMail", "Playback", "Ringing"):
            return None
        if app == "Answer":
            channel.answered = True
            return None
        if app == "Hangup":
            channel.hung_up = True
            return None
        if app == "Set":
            name, _, value = data.partition("=")
            channel.variables[name.lstrip("_")] = value
            return None
        if app == "Wait":
            await self.wait(channel, float(args[0]))
            return None
        if app == "AGI":
            channel.variables.update(await self.agi(channel, args))
            return None
        if app == "Stasis":
            # The hook says what pbxcrm's application set, STASISSTATUS included.
            channel.variables.update(await self.stasis(channel, args))
            return None
        if app == "Dial":
            channel.variables["DIALSTATUS"] = await self.dial(channel, args)
            return None
        if app == "Goto":
            return data
        if app == "Gosub":
            context, exten, index = here
            stack.append((context, exten, index + 1))
            return data
        if app == "Return":
            return "return"
        if app in ("GotoIf", "ExecIf"):
            condition, _, branches = data.partition("?")
            true_branch, _, false_branch = branches.partition(":")
            if app == "ExecIf":
                if _truthy(condition.strip()):
                    inner = re.fullmatch(r"(\w+)\((.*)\)", true_branch, re.DOTALL)
                    if inner is None:
                        raise RunnerError(f"ExecIf({data}) not supported")
                    return await self.execute(channel, inner[1], inner[2], here, stack)
                return None
            chosen = true_branch if _truthy(condition.strip()) else false_branch
            return chosen or None
        raise RunnerError(f"application not supported by the runner: {app}")
