"""What the agents' side tells the router, and what the router does with it.

* a routed call is answered (AMI ``AgentConnect``, through :class:`~agi_router.queues.outcomes.OutcomeTracker`):
  counted by queue and capture method, and the context marks when and by which member;
* an agent corrects the route (``correct`` over FastAGI, :mod:`.correction`): counted, written to the audit
  trail, and, when sampling is on, the label of the call's sampled sentences;
* a callback is placed (:class:`~agi_router.callbacks.placer.CallbackPlacer`): the Originate carries the
  context of the call that asked for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..exceptions import StateStoreError
from .context import Handoff
from .correction import Correction
from .store import ContextStore

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..metrics import RouterMetrics
    from ..queues.outcomes import CallOutcome

__all__ = ["AgentEvents"]

log = logging.getLogger(__name__)


class AgentEvents:
    """What the agents' side tells the router: a routed call answered (AMI AgentConnect) and an agent's
    correction (``correct`` over FastAGI). Counts them, keeps the context up to date, writes the audit trail
    and labels the call's sampled utterances with the queue the agent chose."""

    def __init__(
        self,
        handoff: Handoff,
        contexts: ContextStore,
        metrics: RouterMetrics,
        audit: AuditLog,
        ttl_s: Callable[[], float],
        *,
        samples_folder: Path | None = None,
    ) -> None:
        self.handoff, self.contexts, self.metrics, self.audit = handoff, contexts, metrics, audit
        self.catalogue, self.ttl_s = handoff.catalogue, ttl_s
        self.samples_folder = samples_folder  # None: sampling off, nothing to label
        self._tasks: set[asyncio.Task[None]] = set()

    def answered(self, o: CallOutcome) -> None:
        if o.action is None or o.queue is None:
            return  # not a call the router routed (a callback leg, another context)
        self.metrics.agent_answered.labels(o.queue, o.method or "none").inc()
        task = asyncio.ensure_future(self._mark_answered(o.call_id, o.answered_at, o.agent))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _mark_answered(self, call_id: str, at: float | None, agent: str | None) -> None:
        try:
            ctx = await self.contexts.get(self.handoff.ref(call_id))
            if ctx is not None:
                await self.contexts.put(replace(ctx, answered_at=at, agent=agent), self.ttl_s())
        except StateStoreError as exc:
            log.info("context of %s not marked answered: %s", call_id, exc)

    async def callback_variables(self, call_id: str) -> dict[str, str]:
        """The Originate variables of a callback: the context of the call that asked for it, or nothing
        (expired, store down: the callback is placed all the same)."""
        try:
            ctx = await self.contexts.get(self.handoff.ref(call_id))
        except StateStoreError as exc:
            log.info("callback of %s placed without its context: %s", call_id, exc)
            return {}
        return self.handoff.variables(ctx) if ctx is not None else {}

    def corrected(self, c: Correction) -> None:
        self.metrics.agent_corrections.labels(c.from_queue, c.to_queue, c.method).inc()
        self.audit.write_event(
            "correction", c.call_id, ref=c.ref, from_queue=c.from_queue, to_queue=c.to_queue, method=c.method,
            motive=c.motive, agent=c.agent,
        )  # fmt: skip
        if c.samples and self.samples_folder is not None:
            self._label(c, self.samples_folder)

    def _label(self, c: Correction, folder: Path) -> None:
        """The agent's queue becomes the label of the call's sampled sentences: its skill's generic motive
        (``<skill>.autre``), so ``speech eval`` scores the queue (queue_right / misrouted) on them."""
        skill = next((s for s in self.catalogue.skills.values() if s.queue == c.to_queue), None)
        generic = self.catalogue.generic_motive(skill.key) if skill is not None else None
        if generic is None:
            return  # the reception queue: "a person", not a motive
        from ..speech.evaluation import append_labels  # (numpy and the evaluation code: only when labelling)

        try:
            n = append_labels(folder, [(sid, "motive", generic.id) for sid in c.samples])
            log.info("labelled %d sample(s) with %s from an agent's correction", n, generic.id)
        except OSError as exc:
            log.warning("samples of %s not labelled: %s", c.ref, exc)
