"""The agent's correction, over FastAGI: "this caller belongs in another queue".

During the call the agent types the feature code (``*7``, asterisk/features.conf applicationmap) and the
digit of the right skill (the DTMF menu's digits: the catalogue's ``skills.*.dtmf``). The feature runs on the
agent's channel::

    AGI(agi://<router>/correct,<digit>)   -> ROUTER_CORRECT_QUEUE = the skill's queue ("" = refused, and
                                             ROUTER_CORRECT_ERROR says why: invalid | same)
    ChannelRedirect(${BRIDGEPEER},agent-transfer,<queue>,1)

and on the caller's channel, in [agent-transfer], before it queues again::

    AGI(agi://<router>/transfer)           -> the ROUTER_* context variables of the corrected call

so the next agent's INVITE carries the new queue and ``X-Router-Transferred-From``, and their whisper
starts with "transféré depuis ...". The router does the bookkeeping once, in ``correct``: the context in the
store, the audit trail, ``agi_router_agent_corrections_total{from_queue,to_queue,method}`` and, when sampling
is on, the label of this call's sampled utterances. When the router is unreachable the dialplan still moves
the caller: to the reception queue, a person either way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..agi.session import AGISession
from ..exceptions import StateStoreError
from ..motives.catalogue import Catalogue
from .context import AgentContext, Handoff
from .store import ContextStore

__all__ = ["Correction", "CorrectionHandler", "TransferHandler"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Correction:
    call_id: str
    ref: str
    from_queue: str
    to_queue: str
    method: str  # how the motive had been captured: speech | dtmf | variable | none
    motive: str | None  # what the router had routed on
    agent: str | None
    at: float
    samples: tuple[str, ...] = ()  # sampled utterances of the call, to label with the agent's answer


def _agent_of(channel: str) -> str | None:
    """``PJSIP/agent2-0000001c`` -> ``PJSIP/agent2`` (the member's device, not a person's name)."""
    return channel.rsplit("-", 1)[0] if channel else None


class CorrectionHandler:
    """AGI script ``correct``, run on the agent's channel by the feature code."""

    def __init__(
        self,
        catalogue: Catalogue,
        store: ContextStore,
        ttl_s: Callable[[], float],
        *,
        on_correction: Callable[[Correction], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.catalogue = catalogue
        self.store = store
        self.ttl_s = ttl_s
        self.on_correction = on_correction
        self.clock = clock

    async def __call__(self, session: AGISession) -> None:
        digit = (session.env.args[0] if session.env.args else "").strip()
        skill = self.catalogue.skill_by_dtmf.get(digit) if len(digit) == 1 else None
        if skill is None:
            await session.set_variables({"ROUTER_CORRECT_QUEUE": "", "ROUTER_CORRECT_ERROR": "invalid"})
            return
        ref = await session.get_variable("ROUTER_REF") or ""
        ctx: AgentContext | None = None
        if ref:
            try:
                ctx = await self.store.get(ref)
            except StateStoreError as exc:
                log.warning("correction of %s without its stored context: %s", ref, exc)
        from_queue = ctx.queue if ctx is not None else await session.get_variable("ROUTER_H_QUEUE")
        from_queue = from_queue or ""
        if skill.queue == from_queue:
            await session.set_variables({"ROUTER_CORRECT_QUEUE": "", "ROUTER_CORRECT_ERROR": "same"})
            return
        now = self.clock()
        agent = _agent_of(session.env.channel)
        if ctx is not None:
            try:
                await self.store.put(ctx.corrected(skill.queue, agent, now), self.ttl_s())
            except StateStoreError as exc:
                log.warning("corrected context of %s not stored: %s", ref, exc)
        await session.set_variables({"ROUTER_CORRECT_QUEUE": skill.queue, "ROUTER_CORRECT_ERROR": ""})
        correction = Correction(
            call_id=ctx.call_id if ctx is not None else "",
            ref=ref,
            from_queue=from_queue or "unknown",
            to_queue=skill.queue,
            method=ctx.method if ctx is not None else "unknown",
            motive=ctx.motive if ctx is not None else None,
            agent=agent,
            at=now,
            samples=tuple(ctx.samples) if ctx is not None else (),
        )
        log.info("agent %s moved call %s from %s to %s", agent, ref or "-", from_queue or "?", skill.queue)
        if self.on_correction is not None:
            try:
                self.on_correction(correction)
            except Exception:
                log.exception("correction consumer failed")


class TransferHandler:
    """AGI script ``transfer``, run on the caller's channel before it queues again: the corrected context's
    channel variables (headers, whisper). Without a context (expired, store down) the dialplan's own values
    stand: the new queue, the old headers."""

    def __init__(self, handoff: Handoff, store: ContextStore) -> None:
        self.handoff = handoff
        self.store = store

    async def __call__(self, session: AGISession) -> None:
        ref = await session.get_variable("ROUTER_REF") or ""
        try:
            ctx = await self.store.get(ref) if ref else None
        except StateStoreError as exc:
            log.warning("transfer of %s without its context: %s", ref, exc)
            ctx = None
        if ctx is not None:
            await session.set_variables(self.handoff.variables(ctx))
