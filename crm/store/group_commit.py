"""Group commit: one writer task turns whatever writes are waiting into one transaction.

Shared by the SQLite and PostgreSQL stores; each supplies how a batch is committed. SQLite
pays per commit, not per row, so batching is what sets ingest speed; what it buys end to end
is measured by `python -m tests.benchmarks` (AMI ingest, docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

log = logging.getLogger("crm.store.sqlite")


class QueuedWrite(Protocol):
    @property
    def weight(self) -> int: ...

    @property
    def future(self) -> asyncio.Future[Any]: ...


W = TypeVar("W", bound=QueuedWrite)


async def run_group_commit(
    queue: asyncio.Queue[W | None],
    commit: Callable[[list[W]], Awaitable[None]],
    *,
    window_seconds: float,
    max_batch: int,
) -> None:
    """Commit queued writes in batches until a None arrives (what was queued before it is
    still committed)."""
    loop = asyncio.get_running_loop()
    stopping = False
    last_commit_ended = -math.inf
    while not stopping:
        first = await queue.get()
        if first is None:
            break
        # While writes come in a burst (others already waiting) or keep coming (the last
        # commit ended within the window), let more join this transaction, unless a full batch
        # is already waiting. A write that finds the writer idle and alone is committed at
        # once: waiting for company that is not coming only delayed it (at 1,000 events/s a
        # call's hangup step reached the CRM a window later). Measured both ways: committing
        # every lone write at once cost click-to-call a fifth of its saturation rate.
        waiting = queue.qsize()
        busy = waiting > 0 or loop.time() - last_commit_ended < window_seconds
        if busy and window_seconds > 0 and waiting * 2 < max_batch:
            await asyncio.sleep(window_seconds)
        batch: list[W] = [first]
        weight = first.weight
        while weight < max_batch:
            try:
                op = queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            if op is None:
                stopping = True
                break
            batch.append(op)
            weight += op.weight
        try:
            await commit(batch)
        except Exception as exc:  # a bug here must not leave callers waiting forever
            log.exception("store: writer failed on a batch of %d writes", len(batch))
            for op in batch:
                if not op.future.done():
                    op.future.set_exception(exc)
        last_commit_ended = loop.time()


async def commit_batch(
    batch: list[W],
    transaction: Callable[[list[W]], Awaitable[list[Any]]],
    committed: Callable[[list[W]], None],
) -> None:
    """Run one transaction for the batch and resolve each write's future with its result.

    One bad write must not fail its neighbours: if the batch fails, each write is redone in a
    transaction of its own, so only the bad one gets the error. `committed` is told of every
    batch that did commit (counters, wake-ups).
    """
    try:
        results = await transaction(batch)
    except Exception as exc:
        if len(batch) == 1:
            if not batch[0].future.done():
                batch[0].future.set_exception(exc)
            return
        log.warning(
            "store: a batch of %d writes failed (%s: %s); retrying them one by one",
            len(batch),
            type(exc).__name__,
            exc,
        )
        for op in batch:
            await commit_batch([op], transaction, committed)
        return
    for op, result in zip(batch, results, strict=True):
        if not op.future.done():
            op.future.set_result(result)
    committed(batch)
