"""One lazy timer per FastAGI session, instead of one ``asyncio.timeout`` per read.

A session waits on Asterisk many times (the header, then every command's answer), each with its own
limit. ``asyncio.timeout`` schedules and cancels a timer handle every time: on a 3-command route that
was ~16 % of the server's CPU per session. :class:`Deadline` keeps the same guarantees with one timer
handle per session: arming a wait only records its deadline (one clock read); the handle is moved
only when a wait needs to end *earlier* than the handle is set for. When the handle fires it checks
the current deadline: not reached (the wait was re-armed later) → it sleeps again until then; no wait
armed → it stops; reached → it cancels the waiting task, and :meth:`Deadline.wait` turns that
cancellation into :class:`TimeoutError` (an outside cancellation stays a cancellation, as with
``asyncio.timeout``).

Typical cost: one handle per session plus one per ``limit`` seconds of session life.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["Deadline"]

T = TypeVar("T")


class Deadline:
    """Deadlines for the successive waits of one task (not for concurrent waits)."""

    __slots__ = ("_deadline", "_fired", "_handle", "_loop", "_task", "_when")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None
        self._when = math.inf  # when the handle is set to fire
        self._deadline = math.inf  # when the current wait must end (inf: no wait armed)
        self._task: asyncio.Task[object] | None = None
        self._fired = False

    def arm(self, limit: float) -> int:
        """Start a wait of at most ``limit`` seconds for the current task; returns the token
        :meth:`expired` needs. Always pair with :meth:`disarm` (``try``/``finally``)."""
        task = asyncio.current_task()
        assert task is not None, "Deadline.arm outside a task"
        deadline = self._loop.time() + limit
        self._deadline = deadline
        self._task = task
        self._fired = False
        if deadline < self._when:
            if self._handle is not None:
                self._handle.cancel()
            self._when = deadline
            self._handle = self._loop.call_at(deadline, self._fire)
        return task.cancelling()

    def expired(self, token: int) -> bool:
        """On a ``CancelledError`` during the wait: True if this deadline caused it (then it is consumed:
        raise a timeout error instead), False for an outside cancellation (let it propagate)."""
        if not self._fired or self._task is None:
            return False
        return self._task.uncancel() <= token

    def disarm(self) -> None:
        """End the wait (the timer handle stays for the next one)."""
        self._deadline = math.inf
        self._task = None
        self._fired = False

    async def wait(self, aw: Awaitable[T], limit: float) -> T:
        """Await ``aw``; raise :class:`TimeoutError` if it takes more than ``limit`` seconds."""
        token = self.arm(limit)
        try:
            return await aw
        except asyncio.CancelledError:
            if self.expired(token):
                raise TimeoutError from None
            raise
        finally:
            self.disarm()

    def _fire(self) -> None:
        self._handle = None
        self._when = math.inf
        deadline = self._deadline
        if deadline == math.inf or self._task is None:
            return  # idle: the next wait re-arms
        if self._loop.time() < deadline:
            self._when = deadline
            self._handle = self._loop.call_at(deadline, self._fire)
            return
        self._fired = True
        self._task.cancel()

    def close(self) -> None:
        """Drop the timer (end of session)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._when = math.inf
        self._deadline = math.inf
        self._task = None
