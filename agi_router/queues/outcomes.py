"""One record per call: the router's decision joined with what Asterisk then did (AMI), by Uniqueid.

The AGI session knows the decision; AMI knows the rest: ``QueueCallerJoin`` (entered the queue),
``AgentConnect`` (answered, with the hold time), ``QueueCallerAbandon`` (hung up while waiting),
``Hangup`` (the call ended). A record is emitted when the caller's channel hangs up, or after
``linger_s`` without news (a lost Hangup event must not keep state for ever).

Outcomes: ``deflected``, ``hung_up_by_router``, ``closed``, ``callback_accepted``, ``answered``,
``abandoned``, ``ended_in_queue`` (left without agent nor abandon: timeout, empty queue), ``caller_hung_up``
(before any decision), ``ended``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from ..ami.client import AMIClient
from ..ami.protocol import Message
from ..callflow.flow import CallResult

__all__ = ["CallOutcome", "OutcomeTracker"]

log = logging.getLogger("agi_router.outcome")


@dataclass(slots=True)
class CallOutcome:
    call_id: str
    caller: str  # pseudonym
    started_at: float
    action: str | None = None
    rule: str | None = None
    motive: str | None = None
    segment: str | None = None
    method: str | None = None  # how the motive was captured (speech | dtmf | variable | none)
    queue: str | None = None
    agent: str | None = None  # the member interface that answered
    joined_at: float | None = None
    answered_at: float | None = None
    wait_s: float | None = None
    abandoned: bool = False
    ended_at: float | None = None
    outcome: str = "open"
    fallback: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def finish(self, now: float) -> CallOutcome:
        self.ended_at = now
        if self.answered_at is not None:
            self.outcome = "answered"
        elif self.abandoned:
            self.outcome = "abandoned"
        elif self.joined_at is not None:
            self.outcome = "ended_in_queue"
        elif self.action == "deflect":
            self.outcome = "deflected"
        elif self.action == "hangup":
            self.outcome = "hung_up_by_router"
        elif self.action == "closed":
            self.outcome = "closed"
        elif self.action == "callback":
            self.outcome = "callback_accepted"
        elif self.action is None:
            self.outcome = "caller_hung_up"
        else:
            self.outcome = "ended"
        return self


class OutcomeTracker:
    def __init__(
        self,
        sink: Callable[[CallOutcome], None] | None = None,
        *,
        clock: Callable[[], float] = time.time,
        linger_s: float = 4 * 3600.0,
        on_answered: Callable[[CallOutcome], None] | None = None,
    ) -> None:
        self.sink = sink or (lambda o: log.info(json.dumps(asdict(o), ensure_ascii=False)))
        self.clock = clock
        self.linger_s = linger_s
        self.on_answered = on_answered  # each time an agent answers a routed call (handoff bookkeeping)
        self.open: dict[str, CallOutcome] = {}
        self.emitted = 0

    def attach(self, ami: AMIClient) -> None:
        ami.on("QueueCallerJoin", self.on_join)
        ami.on("AgentConnect", self.on_connect)
        ami.on("QueueCallerAbandon", self.on_abandon)
        ami.on("Hangup", self.on_hangup)

    def on_result(self, r: CallResult) -> None:
        """The AGI session ended: what the router decided (or why it fell back)."""
        now = self.clock()
        o = self.open.setdefault(r.call_id, CallOutcome(r.call_id, r.caller, now))
        d = r.decision
        if d is not None:
            o.action, o.rule, o.queue, o.segment = d.action.value, d.rule, d.queue, d.segment.value
            o.motive = d.motive_id
        if r.motive is not None:
            o.method = r.motive.method
        o.fallback = r.fallback_reason
        if r.hung_up:
            self._emit(r.call_id)

    def on_join(self, m: Message) -> None:
        o = self.open.get(m.get("Uniqueid", ""))
        if o is not None:
            o.joined_at = self.clock()
            o.queue = m.get("Queue") or o.queue

    def on_connect(self, m: Message) -> None:
        o = self.open.get(m.get("Uniqueid", ""))
        if o is not None:
            o.answered_at = self.clock()
            o.queue = m.get("Queue") or o.queue
            o.agent = m.get("Interface") or None
            try:
                o.wait_s = float(m.get("HoldTime", ""))
            except ValueError:
                o.wait_s = None
            if self.on_answered is not None:
                try:
                    self.on_answered(o)
                except Exception:
                    log.exception("answered-call consumer failed")

    def on_abandon(self, m: Message) -> None:
        o = self.open.get(m.get("Uniqueid", ""))
        if o is not None:
            o.abandoned = True
            o.wait_s = self.clock() - o.joined_at if o.joined_at else None

    def on_hangup(self, m: Message) -> None:
        if m.get("Uniqueid", "") in self.open:
            self._emit(m["Uniqueid"])

    def _emit(self, call_id: str) -> None:
        o = self.open.pop(call_id, None)
        if o is None:
            return
        self.emitted += 1
        try:
            self.sink(o.finish(self.clock()))
        except Exception:
            log.exception("outcome sink failed")

    def sweep(self) -> int:
        """Emit the records whose Hangup never came."""
        limit = self.clock() - self.linger_s
        stale = [cid for cid, o in self.open.items() if o.started_at < limit]
        for cid in stale:
            self._emit(cid)
        return len(stale)
