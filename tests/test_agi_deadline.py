"""The session timer (agi/deadline.py): same guarantees as asyncio.timeout, one handle per session."""

from __future__ import annotations

import asyncio

import pytest

from agi_router.agi.deadline import Deadline


async def test_a_wait_past_its_limit_raises_timeout_error() -> None:
    d = Deadline()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(TimeoutError):
        await d.wait(asyncio.sleep(5), 0.05)
    assert 0.04 <= loop.time() - t0 < 1.0
    assert await d.wait(asyncio.sleep(0, result="next"), 1.0) == "next"  # usable again after a timeout


async def test_successive_waits_share_one_timer_handle() -> None:
    d = Deadline()
    await d.wait(asyncio.sleep(0), 5.0)
    first = d._handle
    assert first is not None
    for _ in range(20):
        await d.wait(asyncio.sleep(0), 5.0)
    assert d._handle is first  # later deadlines never move the handle
    d.close()
    assert first.cancelled()


async def test_a_shorter_limit_after_a_long_one_still_fires_on_time() -> None:
    d = Deadline()
    await d.wait(asyncio.sleep(0), 60.0)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(TimeoutError):
        await d.wait(asyncio.sleep(5), 0.05)
    assert loop.time() - t0 < 1.0


async def test_the_handle_sleeps_again_when_the_wait_was_rearmed_later() -> None:
    d = Deadline()
    await d.wait(asyncio.sleep(0), 0.05)  # handle set for +50 ms, wait over at once
    # a second wait armed for +150 ms: the first handle fires at +50 ms and must not cancel it
    assert await d.wait(asyncio.sleep(0.1, result="ok"), 0.15) == "ok"
    with pytest.raises(TimeoutError):
        await d.wait(asyncio.sleep(1), 0.05)


async def test_an_outside_cancellation_stays_a_cancellation() -> None:
    d = Deadline()

    async def waiter() -> None:
        await d.wait(asyncio.sleep(5), 10.0)

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_idle_session_keeps_no_live_deadline() -> None:
    d = Deadline()
    await d.wait(asyncio.sleep(0), 0.02)
    await asyncio.sleep(0.05)  # the handle fired while idle: nothing to cancel, nothing re-armed
    assert d._handle is None
    assert await d.wait(asyncio.sleep(0.01, result=1), 0.5) == 1
