"""The contact centre as it is right now, from AMI: who waits in which queue, who can answer.

Fed by ``QueueStatus`` (a full resync: ``QueueParams``, ``QueueMember``, ``QueueEntry``, field names
as a real Asterisk 22.10.1 sends them, see tests/fixtures/ami/) after every (re)connection, then kept
current by ``QueueCallerJoin``/``QueueCallerLeave``/``QueueCallerAbandon``, ``QueueMemberStatus``,
``QueueMemberAdded``/``Removed``/``Pause``, ``AgentConnect`` and ``AgentComplete``.

:meth:`QueueModel.snapshot` gives the policy its input (:class:`~agi_router.policy.model.QueueSnapshot`).
While AMI is down, or before the first resync completed, every snapshot is ``fresh=False``: stale data
never dissuades a caller (fail open).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..ami.client import AMIClient, AMIState
from ..ami.protocol import Message
from ..exceptions import AMIError
from ..policy.model import QueueSnapshot

__all__ = ["Member", "QueueModel", "QueueState"]

log = logging.getLogger(__name__)

# AST_DEVICE_* as app_queue reports them in Status
NOT_INUSE, INUSE, BUSY, INVALID, UNAVAILABLE, RINGING, RINGINUSE, ONHOLD = 1, 2, 3, 4, 5, 6, 7, 8
_LOGGED_OUT = {INVALID, UNAVAILABLE}


@dataclass(slots=True)
class Member:
    interface: str
    status: int = UNAVAILABLE
    paused: bool = False
    in_call: bool = False

    @property
    def logged_in(self) -> bool:
        return self.status not in _LOGGED_OUT

    @property
    def available(self) -> bool:
        return self.status == NOT_INUSE and not self.paused and not self.in_call


@dataclass(slots=True)
class QueueState:
    name: str
    members: dict[str, Member] = field(default_factory=dict)
    callers: dict[str, float] = field(default_factory=dict)  # uniqueid -> monotonic join time
    talk_time_s: float = 0.0  # moving average of completed calls
    hold_time_s: float = 0.0  # moving average of time to answer
    completed: int = 0
    abandoned: int = 0


class QueueModel:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic, default_talk_s: float = 300.0) -> None:
        self.clock = clock
        self.default_talk_s = default_talk_s
        self.queues: dict[str, QueueState] = {}
        self.synced = False
        self.resyncs = 0
        self.last_event_at: float | None = None
        # events seen while a QueueStatus is in flight: its answer may predate them, so they are applied
        # again on top of it (found on a real Asterisk: a member added during the resync was lost)
        self._replay: list[tuple[Callable[[Message], None], Message]] | None = None
        self._retry: asyncio.Task[None] | None = None
        self.retry_initial_s, self.retry_max_s = 1.0, 30.0

    # -- wiring -------------------------------------------------------------------------------------

    def attach(self, ami: AMIClient) -> None:
        for name, handler in (
            ("QueueCallerJoin", self.on_join),
            ("QueueCallerLeave", self.on_leave),
            ("QueueCallerAbandon", self.on_abandon),
            ("QueueMemberStatus", self.on_member),
            ("QueueMemberAdded", self.on_member),
            ("QueueMemberPause", self.on_member),
            ("QueueMemberRemoved", self.on_member_removed),
            ("AgentConnect", self.on_agent_connect),
            ("AgentComplete", self.on_agent_complete),
        ):
            ami.on(name, self._recorded(handler))
        ami.on_connected(self.resync)
        ami.on_state(self._on_state)

    def _recorded(self, handler: Callable[[Message], None]) -> Callable[[Message], None]:
        def run(m: Message) -> None:
            if self._replay is not None:
                self._replay.append((handler, m))
            handler(m)

        return run

    def _on_state(self, state: AMIState) -> None:
        if state is not AMIState.CONNECTED:
            self.synced = False

    async def resync(self, ami: AMIClient) -> None:
        """Rebuild everything from ``QueueStatus``; data is trusted again only after this. A refused resync
        is tried again in the background (1 s, doubling to 30 s) while the connection lasts: found on a real
        Asterisk 22, which accepts AMI logins while it is still loading modules and answers QueueStatus with
        "Invalid/unknown command" until app_queue is loaded; without a retry the data stayed stale (every
        caller failed open to the skill queue) until the next reconnection."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if not await self._resync_once(ami, first=True):
            self._retry = asyncio.create_task(self._keep_trying(ami), name="queue-resync")

    async def _keep_trying(self, ami: AMIClient) -> None:
        delay = self.retry_initial_s
        while ami.state is AMIState.CONNECTED and not self.synced:
            await asyncio.sleep(delay)
            if ami.state is not AMIState.CONNECTED or await self._resync_once(ami, first=False):
                return
            delay = min(delay * 2, self.retry_max_s)

    async def _resync_once(self, ami: AMIClient, *, first: bool) -> bool:
        self._replay = []
        try:
            result = await ami.action("QueueStatus", timeout=10.0)
        except AMIError as exc:
            if first:
                log.warning("queue resync failed, queue data stays stale until it succeeds: %s", exc)
            return False
        finally:
            replay, self._replay = self._replay, None
        self.load_status(result.events)
        for handler, m in replay or ():
            handler(m)
        if not first:
            log.info("queue resync succeeded after a retry: queue data fresh again")
        return True

    def load_status(self, events: list[Message]) -> None:
        now = self.clock()
        queues: dict[str, QueueState] = {}
        for e in events:
            q = queues.setdefault(e.get("Queue", ""), QueueState(e.get("Queue", "")))
            if e.event == "QueueParams":
                q.hold_time_s = _num(e.get("Holdtime"))
                q.talk_time_s = _num(e.get("TalkTime"))
                q.completed = int(_num(e.get("Completed")))
                q.abandoned = int(_num(e.get("Abandoned")))
            elif e.event == "QueueMember":
                iface = e.get("StateInterface") or e.get("Location") or e.get("Interface", "")
                q.members[iface] = Member(
                    iface, int(_num(e.get("Status"), UNAVAILABLE)), e.get("Paused") == "1", e.get("InCall") == "1"
                )
            elif e.event == "QueueEntry":
                q.callers[e.get("Uniqueid", e.get("Channel", ""))] = now - _num(e.get("Wait"))
        queues.pop("", None)
        self.queues = queues
        self.synced = True
        self.resyncs += 1

    # -- events ---------------------------------------------------------------------------------------

    def _queue(self, m: Message) -> QueueState | None:
        self.last_event_at = self.clock()
        name = m.get("Queue")
        if not name:
            return None
        return self.queues.setdefault(name, QueueState(name))

    def on_join(self, m: Message) -> None:
        q = self._queue(m)
        if q is not None:
            q.callers[m.get("Uniqueid", m.get("Channel", ""))] = self.clock()

    def on_leave(self, m: Message) -> None:
        q = self._queue(m)
        if q is not None:
            q.callers.pop(m.get("Uniqueid", m.get("Channel", "")), None)

    def on_abandon(self, m: Message) -> None:
        q = self._queue(m)
        if q is not None:
            q.callers.pop(m.get("Uniqueid", m.get("Channel", "")), None)
            q.abandoned += 1

    def on_member(self, m: Message) -> None:
        q = self._queue(m)
        if q is None:
            return
        iface = m.get("StateInterface") or m.get("Interface") or m.get("Location", "")
        mem = q.members.setdefault(iface, Member(iface))
        if "Status" in m:
            mem.status = int(_num(m.get("Status"), mem.status))
        if "Paused" in m:
            mem.paused = m.get("Paused") == "1"
        if "InCall" in m:
            mem.in_call = m.get("InCall") == "1"

    def on_member_removed(self, m: Message) -> None:
        q = self._queue(m)
        if q is not None:
            q.members.pop(m.get("StateInterface") or m.get("Interface") or m.get("Location", ""), None)

    def on_agent_connect(self, m: Message) -> None:
        q = self._queue(m)
        if q is None:
            return
        q.callers.pop(m.get("Uniqueid", ""), None)
        mem = q.members.get(m.get("Interface", ""))
        if mem is not None:
            mem.in_call = True
        q.hold_time_s = _ewma(q.hold_time_s, _num(m.get("HoldTime")))

    def on_agent_complete(self, m: Message) -> None:
        q = self._queue(m)
        if q is None:
            return
        mem = q.members.get(m.get("Interface", ""))
        if mem is not None:
            mem.in_call = False
        q.completed += 1
        q.talk_time_s = _ewma(q.talk_time_s, _num(m.get("TalkTime")))

    # -- policy input ---------------------------------------------------------------------------------

    def snapshot(self, name: str) -> QueueSnapshot:
        q = self.queues.get(name)
        if q is None:
            return QueueSnapshot(name, fresh=False)
        now = self.clock()
        logged = sum(m.logged_in for m in q.members.values())
        available = sum(m.available for m in q.members.values())
        waiting = len(q.callers)
        longest = max((now - t for t in q.callers.values()), default=0.0)
        talk = q.talk_time_s or self.default_talk_s
        # callers ahead of a newcomer that no free agent takes at once, served by the logged-in agents
        ahead = max(0, waiting - available + 1) if waiting >= available else 0
        estimated = ahead * talk / logged if logged else (float("inf") if waiting or not available else 0.0)
        return QueueSnapshot(
            name,
            waiting=waiting,
            available_agents=available,
            logged_in_agents=logged,
            longest_wait_s=round(longest, 1),
            estimated_wait_s=round(estimated, 1) if estimated != float("inf") else 1e9,
            fresh=self.synced,
        )

    def snapshots(self) -> dict[str, QueueSnapshot]:
        return {name: self.snapshot(name) for name in self.queues}


def _num(value: str | None, default: float = 0.0) -> float:
    try:
        return float(value) if value not in (None, "") else default
    except ValueError:
        return default


def _ewma(old: float, new: float, weight: float = 0.2) -> float:
    return new if old == 0 else old + weight * (new - old)
