"""Replay: the real ``decide()`` over calls in time order, with the real caller memory (what the policy
decides changes what later calls find in it) and a simple queue model.

Queue model (per Asterisk queue): ``agents`` agents, each call handled for ``handling_s`` seconds, first come
first served (priority callers are not moved ahead: a simplification), a caller abandons after ``patience_s``
of waiting. The model also gives the policy its queue snapshot (callers waiting, agents free, estimated wait),
so saturation rules see the load they create. A dissuaded caller with a callback offer is counted as waiting
(the offer's answer is not in a call log).
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


@dataclass
class _Queue:
    free_at: list[float] = field(default_factory=list)  # heap: when each agent is next free (epoch s)
    starts: list[float] = field(default_factory=list)  # heap: when each waiting caller reaches an agent

    def snapshot(self, name: str, now: float, cfg: QueueModelConfig) -> QueueSnapshot:
        while self.starts and self.starts[0] <= now:
            heapq.heappop(self.starts)
        free = sum(1 for t in self.free_at if t <= now) + (cfg.agents - len(self.free_at))
        wait = max(0.0, min(self.free_at) - now) if len(self.free_at) >= cfg.agents and not free else 0.0
        return QueueSnapshot(name, len(self.starts), free, cfg.agents, 0.0, wait, fresh=True)

    def join(self, now: float, cfg: QueueModelConfig) -> float | None:
        """The caller's wait, or None if they abandon."""
        if len(self.free_at) < cfg.agents:
            heapq.heappush(self.free_at, now + cfg.handling_s)
            return 0.0
        start = max(now, self.free_at[0])
        if start - now > cfg.patience_s:
            return None
        heapq.heapreplace(self.free_at, start + cfg.handling_s)
        if start > now:
            heapq.heappush(self.starts, start)
        return start - now


async def replay(calls: list[ReplayCall], policy: Policy, queues: QueueModelConfig | None = None) -> list[Outcome]:
    """Decide every call as the live router would have, in time order; returns one outcome per call."""
    cfg = queues or QueueModelConfig()
    memory = InMemoryCallerMemory()
    model: dict[str, _Queue] = defaultdict(_Queue)
    out = []
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
        wait: float | None = None
        abandoned = False
        if d.action in (Action.QUEUE, Action.PRIORITY, Action.DISSUADE, Action.CALLBACK, Action.HUMAN) and d.queue:
            if cfg.enabled:
                wait = model[d.queue].join(now_s, cfg)
                abandoned = wait is None
            else:
                wait = 0.0
        out.append(Outcome(c, d, wait, abandoned, cohorts_of(facts, policy.language)))
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
