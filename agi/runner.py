"""Runs one script on one channel, whatever the driver: budget, errors, outcome, logging."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from agi.channel import AgiChannel
from agi.context import ScriptContext
from agi.protocol import AgiCommandError, AgiError, AgiHangup, AgiProtocolError
from agi.scripts import SCRIPTS
from crm.metrics import agi_sessions_total

log = logging.getLogger("pbxcrm.agi")


async def run_script(name: str, channel: AgiChannel, context: ScriptContext) -> str:
    """Never raises (except cancellation): returns the outcome label that was logged."""
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
        agi_sessions_total.labels(script="unknown", outcome="unknown_script").inc()
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
    agi_sessions_total.labels(script=name, outcome=outcome).inc()
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
