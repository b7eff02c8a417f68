"""crm.shutdown: a cancel that is swallowed once is repeated; a task that never ends is left
behind with an error line instead of hanging the stop()."""

from __future__ import annotations

import asyncio
import logging

from crm.shutdown import cancel_and_wait, finish_within


async def _swallows_cancels(times: list[int], ended: list[str]) -> None:
    swallowed = 0
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            if swallowed >= times[0]:
                ended.append("ended")
                raise
            swallowed += 1  # what asyncio.wait_for does on 3.11 when the cancel lands late


async def test_a_task_that_swallows_its_first_cancels_is_cancelled_again_until_it_ends():
    ended: list[str] = []
    task = asyncio.create_task(_swallows_cancels([2], ended))
    await asyncio.sleep(0)
    left = await cancel_and_wait([task], "test task", seconds=30)
    assert left == 0
    assert ended == ["ended"]
    assert task.cancelled()


async def test_a_task_that_never_ends_is_left_behind_with_an_error_naming_it(caplog):
    ended: list[str] = []
    times = [10**9]
    task = asyncio.create_task(_swallows_cancels(times, ended))
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="pbxcrm.shutdown"):
        left = await cancel_and_wait([task], "stubborn thing", seconds=1.2)
    assert left == 1
    assert not task.done()
    assert "stubborn thing: 1 task(s) did not end" in caplog.text
    times[0] = 0  # let it go, so the test leaves no task behind
    assert await cancel_and_wait([task], "stubborn thing", seconds=30) == 0


async def test_finish_within_gives_up_on_a_step_that_never_finishes(caplog):
    never = asyncio.Event()
    with caplog.at_level(logging.ERROR, logger="pbxcrm.shutdown"):
        result = await finish_within(never.wait(), "a stuck close", seconds=0.3)
    assert result is None
    assert "a stuck close did not finish" in caplog.text


async def test_finish_within_returns_the_result_and_logs_a_failure_instead_of_raising(caplog):
    async def answer() -> int:
        return 42

    async def broken() -> None:
        raise RuntimeError("disk full")

    assert await finish_within(answer(), "answer") == 42
    with caplog.at_level(logging.ERROR, logger="pbxcrm.shutdown"):
        assert await finish_within(broken(), "the last commit") is None
    assert "the last commit failed at stop" in caplog.text
    assert "disk full" in caplog.text
