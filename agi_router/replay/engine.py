"""Replay: the real ``decide()`` over calls in time order, with the real caller memory (what the policy
decides changes what later calls find in it) and a simple queue model.

Queue model (per Asterisk queue): ``agents`` agents, each call handled for ``handling_s`` seconds; a free
agent takes the waiting caller of highest queue priority, first come first served within a priority (as
app_queue does); a caller abandons after ``patience_s`` of waiting. The model also gives the policy its
queue snapshot (callers waiting, agents free, estimated wait), so saturation rules see the load they create.
A dissuaded caller with a callback offer is counted as waiting (the offer's answer is not in a call log).
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from ..callflow.flow import ENDED
from ..policy.cohorts import cohorts_of
from ..policy.config import Policy
from ..policy.engine import decide
from ..policy.model import Action, CallFacts, Decision, PastCall, QueueSnapshot
from ..state.memory import InMemoryCallerMemory
from .calls import ReplayCall

__all__ = ["Outcome", "QueueModelConfig", "replay"]


@dataclass(frozen=True, slots=True)
class QueueModelConfig:
    agents: int = 20  # per queue
    handling_s: float = 360.0
    patience_s: float = 600.0
    enabled: bool = True  # False: every queue looks empty and staffed, and nobody waits (decisions only)


@dataclass(frozen=True, slots=True)
class Outcome:
    call: ReplayCall
    decision: Decision
    wait_s: float | None = None  # queued callers: time to an agent (None: router-ended, or abandoned)
    abandoned: bool = False
    cohorts: tuple[str, ...] = ()  # policy.cohorts_of the facts decided on

    @property
    def reached_person(self) -> bool:
        return self.wait_s is not None

    @property
    def ended_by_router(self) -> bool:
        return self.decision.action.hangs_up


#: decisions that put the caller in a queue (a dissuaded caller offered a callback is counted as waiting)
_TO_A_QUEUE = frozenset({Action.QUEUE, Action.PRIORITY, Action.DISSUADE, Action.CALLBACK, Action.HUMAN})


@dataclass(slots=True)
class _Waiter:
    arrival: float
    deadline: float  # arrival + patience: abandons if no agent by then
    index: int  # the call's place in the replay
    done: bool = False


@dataclass
class _Queue:
    """One Asterisk queue as app_queue serves it: a free agent takes the waiting caller of highest priority,
    first come first served within a priority; a caller leaves after ``patience_s`` without an agent."""

    free_at: list[float] = field(default_factory=list)  # heap: when each agent is next free (epoch s)
    waiting: list[tuple[int, float, int, _Waiter]] = field(default_factory=list)  # heap: (-prio, arrival, n, w)
    deadlines: list[tuple[float, int, _Waiter]] = field(default_factory=list)  # heap: who abandons first
    alive: int = 0  # callers waiting now
    results: dict[int, float | None] = field(default_factory=dict)  # call index -> wait (None: abandoned)

    def _staff(self, cfg: QueueModelConfig) -> None:
        if not self.free_at:
            self.free_at = [0.0] * cfg.agents

    def _finish(self, w: _Waiter, wait: float | None) -> None:
        w.done = True
        self.alive -= 1
        self.results[w.index] = wait

    def advance(self, now: float, cfg: QueueModelConfig) -> None:
        """Everything that happens in the queue up to ``now``: agents freeing up take callers, others leave."""
        self._staff(cfg)
        while self.waiting and self.free_at[0] <= now:
            t = self.free_at[0]
            _, _, _, w = heapq.heappop(self.waiting)
            if w.done:
                continue
            if w.deadline < t:  # left before this agent was free
                self._finish(w, None)
                continue
            self._finish(w, t - w.arrival)
            heapq.heapreplace(self.free_at, t + cfg.handling_s)
        while self.deadlines and self.deadlines[0][0] < now:
            _, _, w = heapq.heappop(self.deadlines)
            if not w.done:
                self._finish(w, None)

    def snapshot(self, name: str, now: float, cfg: QueueModelConfig) -> QueueSnapshot:
        self.advance(now, cfg)
        free = 0 if self.alive else sum(1 for t in self.free_at if t <= now)
        wait = 0.0
        if not free:
            wait = max(0.0, self.free_at[0] - now) + self.alive * cfg.handling_s / cfg.agents
        return QueueSnapshot(name, self.alive, free, cfg.agents, 0.0, wait, fresh=True)

    def join(self, now: float, priority: int, index: int, cfg: QueueModelConfig) -> None:
        self.advance(now, cfg)
        if not self.alive and self.free_at[0] <= now:
            heapq.heapreplace(self.free_at, now + cfg.handling_s)
            self.results[index] = 0.0
            return
        w = _Waiter(now, now + cfg.patience_s, index)
        self.alive += 1
        heapq.heappush(self.waiting, (-priority, now, index, w))
        heapq.heappush(self.deadlines, (w.deadline, index, w))


async def replay(calls: list[ReplayCall], policy: Policy, queues: QueueModelConfig | None = None) -> list[Outcome]:
    """Decide every call as the live router would have, in time order; returns one outcome per call."""
    cfg = queues or QueueModelConfig()
    memory = InMemoryCallerMemory()
    model: dict[str, _Queue] = defaultdict(_Queue)
    decided: list[tuple[ReplayCall, Decision, tuple[str, ...]]] = []
    for c in sorted(calls, key=lambda c: c.at):
        mid = c.motive.motive_id
        history = await memory.history(c.caller, mid, c.at) if mid and not c.withheld else ()
        ended = await memory.history(c.caller, ENDED, c.at) if policy.safeguards.daily_cap and not c.withheld else ()
        today = c.at.astimezone(policy.timezone).date()
        now_s = c.at.timestamp()
        names = {policy.queue_for(mid), policy.default_queue}
        snapshots = {n: model[n].snapshot(n, now_s, cfg) for n in names} if cfg.enabled else {}
        facts = CallFacts(
            call_id=c.call_id,
            caller=c.caller or "withheld",
            withheld=c.withheld,
            account=c.account,
            motive=c.motive,
            now=c.at,
            history=history,
            queues=snapshots,
            sms_capable=c.sms_capable,
            ended_today=sum(1 for e in ended if e.at.astimezone(policy.timezone).date() == today),
        )
        d = decide(policy, facts)
        if mid and not c.withheld:
            await memory.record(c.caller, mid, PastCall(c.at, mid, d.action), policy.memory_ttl)
        if d.action.hangs_up and policy.safeguards.daily_cap and not c.withheld:
            await memory.record(c.caller, ENDED, PastCall(c.at, ENDED, d.action), policy.memory_ttl)
        if d.action in _TO_A_QUEUE and d.queue and cfg.enabled:
            model[d.queue].join(now_s, d.priority, len(decided), cfg)
        decided.append((c, d, cohorts_of(facts, policy.language)))
    waits: dict[int, float | None] = {}
    for q in model.values():
        q.advance(float("inf"), cfg)  # the day's last callers are served or leave
        waits.update(q.results)
    out = []
    for i, (c, d, cohorts) in enumerate(decided):
        queued = d.action in _TO_A_QUEUE and bool(d.queue)
        wait = (waits.get(i) if cfg.enabled else 0.0) if queued else None
        out.append(Outcome(c, d, wait, queued and cfg.enabled and wait is None, cohorts))
    return out


def day_of(o: Outcome, policy: Policy) -> datetime:
    return o.call.at.astimezone(policy.timezone).replace(hour=0, minute=0, second=0, microsecond=0)


def never_reached(outcomes: list[Outcome], policy: Policy) -> set[str]:
    """Callers (pseudonyms) who called on a day and reached nobody that day: every call ended by the
    router or abandoned."""
    reached: dict[tuple[str, datetime], bool] = {}
    for o in outcomes:
        if o.call.withheld:
            continue
        key = (o.call.caller, day_of(o, policy))
        reached[key] = reached.get(key, False) or o.reached_person
    return {caller for (caller, _), ok in reached.items() if not ok}
