"""Bounded shutdown: a stop() that waits on a task must not wait forever.

A cancel can be lost: on Python 3.11 `asyncio.wait_for` returns the result instead of raising
when the cancel lands just as the awaited operation completes. A stop() that cancels once and
then awaits the task with no limit hangs the whole service on SIGTERM. These helpers cancel
again while waiting and give up (with an error line naming what was left) after a bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

log = logging.getLogger("pbxcrm.shutdown")

# Long enough for a store commit or a CRM request's own timeout to finish; short enough that
# systemd's stop timeout (90 s by default) is never what ends the process.
STOP_SECONDS = 20.0
# How often a task that ignored its cancel is cancelled again while we wait.
RECANCEL_SECONDS = 0.5

T = TypeVar("T")


async def cancel_and_wait(
    tasks: Iterable[asyncio.Future[Any]], what: str, seconds: float = STOP_SECONDS
) -> int:
    """Cancel `tasks` and wait until they end, at most `seconds`, cancelling again every
    RECANCEL_SECONDS. Returns how many were still running at the end (logged as an error)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    everything = list(tasks)
    pending = {task for task in everything if not task.done()}
    for task in pending:
        task.cancel()
    while pending:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        _, pending = await asyncio.wait(pending, timeout=min(remaining, RECANCEL_SECONDS))
        for task in pending:
            task.cancel()
    for task in everything:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("%s: a task ended with an error at stop", what, exc_info=task.exception())
    if pending:
        log.error(
            "%s: %d task(s) did not end within %.0fs of being cancelled; left behind",
            what,
            len(pending),
            seconds,
        )
    return len(pending)


async def finish_within(step: Awaitable[T], what: str, seconds: float = STOP_SECONDS) -> T | None:
    """Await `step` for at most `seconds`; past that, cancel it (bounded) and return None.
    An exception from `step` is logged, not raised: the rest of the shutdown must still run."""
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if task not in done:
        log.error("%s did not finish within %.0fs at stop; cancelled", what, seconds)
        await cancel_and_wait([task], what, RECANCEL_SECONDS * 4)
        return None
    if task.cancelled():
        return None
    if task.exception() is not None:
        log.error("%s failed at stop", what, exc_info=task.exception())
        return None
    return task.result()
