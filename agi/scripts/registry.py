"""Scripts register themselves by name (as in wazo-agid); the drivers look them up."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from agi.channel import AgiChannel
from agi.context import ScriptContext

ScriptFunction = Callable[[AgiChannel, ScriptContext], Awaitable[str]]
"""Runs one session; returns its outcome label (ok, notfound, hangup, ...) for logs/metrics."""


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    run: ScriptFunction
    # Set when the script fails for a reason of ours, so the dialplan still takes its
    # fallback branch instead of seeing stale or empty variables.
    on_failure: Mapping[str, str] = field(default_factory=dict)


SCRIPTS: dict[str, Script] = {}


def register_script(
    name: str, on_failure: Mapping[str, str] | None = None
) -> Callable[[ScriptFunction], ScriptFunction]:
    def register(run: ScriptFunction) -> ScriptFunction:
        SCRIPTS[name] = Script(name, run, dict(on_failure or {}))
        return run

    return register
