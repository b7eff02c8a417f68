"""dialplan/extensions_pbxcrm.conf is valid extensions.conf syntax and matches the scripts.

No asterisk binary here, so a small parser of the syntax pbx_config accepts: `[context]`,
`exten => ext,prio[(label)],App(args)`, `same => ...`, `include =>`, `;` comments, balanced
`${...}`, `$[...]` and parentheses, known applications, existing labels and contexts. The lab
PBX's own extensions.conf (which Asterisk 22 loaded) passes the same parser, as a control.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agi.scripts import SCRIPTS

ROOT = Path(__file__).resolve().parent.parent
OURS = ROOT / "dialplan" / "extensions_pbxcrm.conf"
LAB = ROOT / "tests" / "fixtures" / "asterisk" / "conf" / "extensions.conf"

APPLICATIONS = {
    "AGI", "Answer", "Dial", "ExecIf", "Gosub", "Goto", "GotoIf", "Hangup", "MixMonitor",
    "NoOp", "Pickup", "Playback", "Queue", "Return", "Ringing", "Set", "Stasis",
    "StopMixMonitor", "VoiceMail", "VoiceMailMain", "Wait",
}  # fmt: skip

_EXTEN = re.compile(r"(?P<ext>[^,]+),(?P<prio>\d+|n|hint)(?:\((?P<label>\w+)\))?,(?P<app>.*)")
_SAME = re.compile(r"(?P<prio>n|\d+)(?:\((?P<label>\w+)\))?,(?P<app>.*)")
_APP = re.compile(r"(?P<name>\w+)(?:\((?P<args>.*)\))?")


class DialplanError(Exception):
    pass


@dataclass
class Extension:
    name: str
    labels: set[str] = field(default_factory=set)
    apps: list[tuple[int, str, str]] = field(default_factory=list)  # line, app, args
    label_at: dict[str, int] = field(default_factory=dict)  # label -> index into apps


@dataclass
class Dialplan:
    contexts: dict[str, dict[str, Extension]] = field(default_factory=dict)


def strip_comment(line: str) -> str:
    out, escaped = [], False
    for char in line:
        if char == ";" and not escaped:
            break
        escaped = char == "\\" and not escaped
        out.append(char)
    return "".join(out).strip()


def check_balanced(text: str, where: str) -> None:
    stack: list[str] = []
    pairs = {")": "(", "}": "{", "]": "["}
    for i, char in enumerate(text):
        if char in "({[":
            if char == "{" and (i == 0 or text[i - 1] != "$"):
                raise DialplanError(f"{where}: '{{' not opened by '${{'")
            stack.append(char)
        elif char in pairs:
            if not stack or stack.pop() != pairs[char]:
                raise DialplanError(f"{where}: unbalanced {char!r} in {text!r}")
    if stack:
        raise DialplanError(f"{where}: unclosed {stack[-1]!r} in {text!r}")


def parse(text: str) -> Dialplan:
    plan = Dialplan()
    context: dict[str, Extension] | None = None
    current: Extension | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        where = f"line {number}"
        line = strip_comment(raw)
        if not line or line.startswith("#include"):
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise DialplanError(f"{where}: bad context header {line!r}")
            name = line[1:-1]
            context = plan.contexts.setdefault(name, {})
            current = None
            continue
        key, sep, value = line.partition("=>")
        if not sep:
            key, sep, value = line.partition("=")  # [general]/[globals] settings
            if not sep:
                raise DialplanError(f"{where}: neither 'key => value' nor 'key = value'")
            continue
        key, value = key.strip(), value.strip()
        if context is None:
            raise DialplanError(f"{where}: {key} outside any context")
        if key == "include":
            continue
        if key == "exten":
            match = _EXTEN.fullmatch(value)
            if not match:
                raise DialplanError(f"{where}: bad exten line {value!r}")
            prio = match["prio"]
            if match["ext"] not in context and prio != "1":
                raise DialplanError(f"{where}: extension {match['ext']} must start at priority 1")
            current = context.setdefault(match["ext"], Extension(match["ext"]))
        elif key == "same":
            if current is None:
                raise DialplanError(f"{where}: 'same =>' without an extension before it")
            match = _SAME.fullmatch(value)
            if not match:
                raise DialplanError(f"{where}: bad same line {value!r}")
        else:
            raise DialplanError(f"{where}: unknown keyword {key!r}")
        if match["label"]:
            current.labels.add(match["label"])
            current.label_at[match["label"]] = len(current.apps)
        app = _APP.fullmatch(match["app"].strip())
        if not app:
            raise DialplanError(f"{where}: bad application call {match['app']!r}")
        if app["name"] not in APPLICATIONS:
            raise DialplanError(f"{where}: unknown application {app['name']!r}")
        check_balanced(match["app"], where)
        current.apps.append((number, app["name"], app["args"] or ""))
    return plan


def check_targets(plan: Dialplan) -> None:
    for context_name, extensions in plan.contexts.items():
        for ext in extensions.values():
            for number, app, args in ext.apps:
                targets: list[str] = []
                if app == "GotoIf":
                    targets = re.split(r"[:]", args.rsplit("?", 1)[1])
                elif app in ("Goto", "Gosub"):
                    targets = [args]
                for target in filter(None, (t.strip() for t in targets)):
                    parts = target.split(",")
                    if len(parts) == 1:
                        if parts[0] not in ext.labels:
                            raise DialplanError(
                                f"line {number}: label {parts[0]!r} not in {context_name}"
                            )
                    elif len(parts) == 3 and "$" not in parts[0]:
                        if parts[0] not in plan.contexts:
                            raise DialplanError(f"line {number}: no context {parts[0]!r}")
                        if parts[1] not in plan.contexts[parts[0]]:
                            raise DialplanError(f"line {number}: no {parts[1]} in {parts[0]}")


def test_the_pbxcrm_dialplan_parses_and_every_jump_lands():
    plan = parse(OURS.read_text())
    check_targets(plan)
    assert {"pbxcrm-inbound", "pbxcrm-survey", "pbxcrm-voicemail", "pbxcrm-exit"} <= set(
        plan.contexts
    )


def test_the_lab_dialplan_that_asterisk_loaded_passes_the_same_parser():
    check_targets(parse(LAB.read_text()))


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("[c]\nexten => s,1,NoOp(${X)\n", "unbalanced"),
        ("[c]\nexten => s,1,GotoIf($[${X} = 1?a)\n", "unbalanced"),
        ("[c]\nexten => s,1,NoOp(${X}\n", "bad application call"),
        ("[c]\nexten => s,2,NoOp()\n", "priority 1"),
        ("[c]\nexten => s,1,Dail(PJSIP/1)\n", "unknown application"),
        ("same => n,NoOp()\n", "outside any context"),
        ("[c]\nsame => n,NoOp()\n", "without an extension"),
        ("[c]\nexten => s,1,Goto(nowhere)\n", "label"),
        ("[c]\nexten => s,1,Goto(other,s,1)\n", "no context"),
    ],
)
def test_the_parser_rejects_what_asterisk_would_reject(bad, problem):
    with pytest.raises(DialplanError, match=problem):
        check_targets(parse(bad))


def test_every_agi_call_names_a_registered_script_and_every_crm_variable_is_one_we_set():
    text = OURS.read_text()
    plan = parse(text)
    scripts = []
    for extensions in plan.contexts.values():
        for ext in extensions.values():
            for _, app, args in ext.apps:
                if app == "AGI":
                    target = args.split(",")
                    if target[0] == "pbxcrm-agi":  # options first, then the script
                        scripts.append(next(a for a in target[1:] if not a.startswith("--")))
                    else:
                        scripts.append(target[0].rsplit("/", 1)[1])
    assert set(scripts) == set(SCRIPTS)
    used = set(
        re.findall(
            r"\$\{(CRM_[A-Z_]+)\}", "\n".join(strip_comment(line) for line in text.splitlines())
        )
    )
    set_by_caller_check = {"CRM_FOUND", "CRM_LOOKUP_STATUS", "CRM_OWNER_EXTENSION", "CRM_DID"}
    assert used - set_by_caller_check <= {"CRM_TICKET_ID", "CRM_TICKET_OWNER"}  # crm_lookup's
