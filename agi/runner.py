"""Runs one script on one channel, whatever the driver: budget, errors, outcome, logging."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from agi.channel import AgiChannel
from agi.context import ScriptContext
from agi.protocol import AgiCommandError, AgiError, AgiHangup, AgiProtocolError
from agi.scripts import SCRIPTS

log = logging.getLogger("pbxcrm.agi")

# (script, outcome) -> its counter: labels() takes a lock and builds its key on every call.
_session_counters: dict[tuple[str, str], Any] = {}


def count_session(script: str, outcome: str) -> None:
    counter = _session_counters.get((script, outcome))
    if counter is None:
        # Imported at the first count, not with this module: a classic AGI process has no
        # /metrics to serve, and prometheus_client (with its HTTP server) is 5% of its start.
        from crm.metrics import agi_sessions_total

        counter = agi_sessions_total.labels(script=script, outcome=outcome)
        _session_counters[(script, outcome)] = counter
    counter.inc()


async def run_script(
    name: str, channel: AgiChannel, context: ScriptContext, *, counted: bool = True
) -> str:
    """Never raises (except cancellation): returns the outcome label that was logged.

    `counted`: add the outcome to the process's metrics (not in a classic AGI process).
    """
    script = SCRIPTS.get(name)
    env = channel.env
    if script is None:
        log.error(
            "AGI %s on %s asked for unknown script %r (known: %s)",
            env.uniqueid or "-",
            env.channel or "-",
            name[:60],
            ", ".join(sorted(SCRIPTS)),
        )
        if counted:
            count_session("unknown", "unknown_script")
        return "unknown_script"
    started = time.monotonic()
    try:
        async with asyncio.timeout(context.settings.session_timeout_seconds):
            outcome = await script.run(channel, context)
    except AgiHangup as exc:
        log.info("AGI %s %s: caller hung up (%s)", name, env.uniqueid, exc)
        outcome = "hangup"
    except (AgiProtocolError, AgiCommandError) as exc:
        log.error("AGI %s %s: %s", name, env.uniqueid, exc)
        outcome = "error"
    except TimeoutError:
        log.error(
            "AGI %s %s: session exceeded %g s",
            name,
            env.uniqueid,
            context.settings.session_timeout_seconds,
        )
        # Not setting fallback variables here: a command may be half-answered on the link.
        outcome = "timeout"
    except Exception:
        log.exception("AGI %s %s: script failed", name, env.uniqueid)
        outcome = "error"
        await _set_failure_variables(script.on_failure, channel, name)
    if counted:
        count_session(name, outcome)
    log.debug("AGI %s %s: %s in %.1f ms", name, env.uniqueid, outcome, _ms_since(started))
    return outcome


async def _set_failure_variables(values: Mapping[str, str], channel: AgiChannel, name: str) -> None:
    if not values or channel.hung_up:
        return
    try:
        async with asyncio.timeout(2.0):
            await channel.set_variables(values)
    except (AgiError, TimeoutError, OSError) as exc:
        log.warning("AGI %s: could not set fallback variables: %s", name, exc)


def _ms_since(started: float) -> float:
    return (time.monotonic() - started) * 1000
