"""The 3646 call flow: identify, capture the motive, decide, tell the dialplan.

The router never plays the final route itself: it writes ``ROUTER_*`` channel variables
and closes the AGI session, and the dialplan branches on them (Playback + Hangup, Queue
with ``QUEUE_PRIO``, ...). The dialplan sets a human route before calling AGI(), and the
router writes ``ROUTER_DONE=1`` last, so a router that dies, stalls or closes early leaves
the caller on the way to a person, never in silence.

Time budgets: the directory lookup starts with the call, in parallel with motive capture;
from the moment the motive is known, history + decision + variables must fit in
``decision_budget`` (100 ms by default) or the fallback route is written instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from ..agi.server import FallbackRoute
from ..agi.session import AGISession
from ..callbacks.store import CallbackRecords
from ..directory.base import AccountDirectory
from ..exceptions import AGIDeadChannel, AGIError, AGIHangup, DirectoryError, StateStoreError
from ..handoff.context import AgentContext, Handoff
from ..handoff.store import ContextStore
from ..numbers import is_withheld, normalize_e164
from ..policy.cohorts import cohorts_of
from ..policy.config import Policy
from ..policy.engine import decide
from ..policy.model import AccountFacts, Action, CallFacts, Decision, MotiveFacts, PastCall, QueueSnapshot
from ..privacy import WITHHELD, Pseudonymizer
from ..sms import NoSms, SmsError, SmsSender, is_mobile
from ..state.base import CallerMemory
from .capture import CallContext, MotiveCapture, SpeechRound

#: caller-memory key (in place of a motive) of the calls the router ended itself, whatever the motive
ENDED = "_router_ended"

__all__ = ["CallFlow", "CallFlowConfig", "CallResult", "PolicyHolder"]

log = logging.getLogger(__name__)
decisions_log = logging.getLogger("agi_router.decision")


class PolicyHolder:
    """The running policy, and optionally a candidate for a gradual rollout. ``replace`` swaps them
    atomically; a bad file never gets here because it fails validation first (see ``agi_router.app``).

    Rollout: a ``share`` of callers (0..1) is decided by the candidate, chosen by their pseudonym, so a caller
    stays on the same arm from one call to the next (repeat rules stay consistent) and the live comparison
    matches a replay of the two policies. Withheld numbers stay on the current policy."""

    def __init__(self, policy: Policy, candidate: Policy | None = None, share: float = 0.0) -> None:
        self.current = policy
        self.candidate = candidate
        self.share = share if candidate is not None else 0.0

    def replace(self, policy: Policy, candidate: Policy | None = None) -> None:
        self.current = policy
        if candidate is not None:
            self.candidate = candidate

    def for_caller(self, caller: str) -> tuple[Policy, str]:
        """The policy deciding this caller's calls, and its arm: ``current`` or ``candidate``."""
        if self.candidate is not None and self.share > 0 and caller != WITHHELD and arm_point(caller) < self.share:
            return self.candidate, "candidate"
        return self.current, "current"


def arm_point(caller: str) -> float:
    """A caller's fixed point in [0, 1): a hash of the pseudonym (already keyed: nothing to learn from it)."""
    return int.from_bytes(hashlib.sha256(b"rollout:" + caller.encode()).digest()[:8], "big") / 2**64


@dataclass(frozen=True, slots=True)
class CallFlowConfig:
    call_deadline: float = 180.0  # whole AGI session, prompts and menus included
    decision_budget: float = 0.1  # motive known -> decision made (then one round trip to write it)
    directory_wait: float = 0.08  # extra wait for the directory once the motive is known
    answer: bool = False  # the dialplan answers before AGI() by default
    callback_offer_prompt: str = "router/callback-offer"
    callback_confirmed_prompt: str = "router/callback-confirmed"


@dataclass(slots=True)
class CallResult:
    """What happened on one AGI session (the call flow's report, for logs, metrics, tests)."""

    call_id: str
    caller: str
    decision: Decision | None = None
    fallback_reason: str | None = None
    hung_up: bool = False
    account: AccountFacts | None = None
    motive: MotiveFacts | None = None
    decision_latency_s: float | None = None
    speech_to_route_s: float | None = None  # end of speech (endpointer) -> ROUTER_DONE written (or the offer)
    voice_to_route_s: float | None = None  # the caller's last voiced audio -> ROUTER_DONE written (what they wait)
    responded_at: float | None = None  # time.monotonic() the router answered before routing (a callback offer)
    facts: CallFacts | None = None  # what the policy was given (for the audit trail)
    arm: str = "current"  # gradual rollout: which policy decided (current | candidate)
    cohorts: tuple[str, ...] = ()  # policy.cohorts_of the facts (exclusion measured by cohort)
    errors: list[str] = field(default_factory=list)
    sms: str | None = None  # "sent" or "failed" when the decision included an SMS
    speech_rounds: list[SpeechRound] = field(default_factory=list)  # live-audio rounds, in order
    transcript: str = ""  # the last motive sentence as recognised (kept in memory for this call only)
    samples: list[str] = field(default_factory=list)  # this call's sampled utterances (opt-in sampling)
    context: AgentContext | None = None  # what the agent receives (handoff/), for callers sent to one


class CallFlow:
    def __init__(
        self,
        *,
        policy: PolicyHolder,
        directory: AccountDirectory,
        memory: CallerMemory,
        pseudonymizer: Pseudonymizer,
        capture: MotiveCapture,
        config: CallFlowConfig | None = None,
        fallback: FallbackRoute | None = None,
        clock: Callable[[], datetime] | None = None,
        on_result: Callable[[CallResult], None] | None = None,
        sms: SmsSender | None = None,
        queue_state: Callable[[str], QueueSnapshot] | None = None,
        callbacks: CallbackRecords | None = None,
        handoff: Handoff | None = None,
        contexts: ContextStore | None = None,
    ) -> None:
        self.policy = policy
        self.directory = directory
        self.memory = memory
        self.pseudonymizer = pseudonymizer
        self.capture = capture
        self.config = config or CallFlowConfig()
        self.fallback = fallback or FallbackRoute()
        self.clock = clock or (lambda: datetime.now(UTC))
        self.on_result = on_result
        self.sms = sms if sms is not None else NoSms()
        self.queue_state = queue_state
        self.callbacks = callbacks
        self.handoff = handoff
        self.contexts = contexts
        self._background: set[asyncio.Task[None]] = set()

    async def __call__(self, session: AGISession) -> None:
        result = await self.run(session)
        if self.on_result is not None:
            self.on_result(result)

    async def run(self, session: AGISession) -> CallResult:
        env = session.env
        raw = env.callerid
        e164: str | None = None
        if not is_withheld(raw):
            with contextlib.suppress(ValueError):
                e164 = normalize_e164(raw)
        caller = self.pseudonymizer.of_e164(e164) if e164 else WITHHELD
        result = CallResult(call_id=env.uniqueid, caller=caller)
        ctx = CallContext(env.uniqueid, caller, env.language, hint=(env.args[0] if env.args else ""))
        result.speech_rounds = ctx.speech_rounds
        result.samples = ctx.samples
        account_task = asyncio.create_task(self._lookup(e164, caller, result))
        try:
            async with asyncio.timeout(self.config.call_deadline):
                if self.config.answer:
                    await session.answer()
                # one policy per call, chosen before the dialogue (its safeguards shape it) and kept for the
                # decision, even if a reload lands in between
                policy, result.arm = self.policy.for_caller(caller)
                ctx.person_after_failures = policy.safeguards.person_after_failed_captures
                motive = await self.capture.capture(session, ctx) or MotiveFacts(None)
                if ctx.failed_captures or ctx.heard_language:
                    motive = replace(
                        motive,
                        failed_captures=ctx.failed_captures,
                        language=motive.language or ctx.heard_language,
                    )
                result.motive = motive
                result.transcript = ctx.transcript
                result.decision = await self._decide(session, policy, caller, e164, motive, account_task, result)
                done_at = result.responded_at or time.monotonic()
                if ctx.speech_ended_at is not None:
                    result.speech_to_route_s = done_at - ctx.speech_ended_at
                if ctx.voice_ended_at is not None:
                    result.voice_to_route_s = done_at - ctx.voice_ended_at
        except TimeoutError:
            result.fallback_reason = result.fallback_reason or "deadline"
        except (AGIHangup, AGIDeadChannel):
            result.hung_up = True
        except AGIError as exc:
            # Connection-level trouble: the dialplan's own defaults take over.
            result.errors.append(f"agi: {exc}")
            result.fallback_reason = "agi_error"
        except Exception as exc:
            log.exception("call flow fault on %s", env.uniqueid)
            result.errors.append(f"internal: {exc!r}")
            result.fallback_reason = "internal_error"
        finally:
            account_task.cancel()
            if account_task.done() and not account_task.cancelled():
                account_task.exception()  # retrieved: a directory bug is in the logs via the decision path
        if result.fallback_reason and not result.hung_up and not session.hung_up:
            await self.fallback.apply(session, result.fallback_reason)
        if result.hung_up or session.hung_up:
            result.hung_up = True
        self._log(result)
        return result

    async def _lookup(self, e164: str | None, caller: str, result: CallResult) -> AccountFacts:
        if caller == WITHHELD:
            return AccountFacts.none()
        try:
            return await self.directory.lookup(e164, caller)
        except DirectoryError as exc:
            result.errors.append(f"directory: {exc}")
            return AccountFacts.unknown()

    async def _history(self, caller: str, motive: str, now: datetime, result: CallResult) -> tuple[PastCall, ...]:
        try:
            return await self.memory.history(caller, motive, now)
        except StateStoreError as exc:
            result.errors.append(f"state: {exc}")
            return ()

    async def _decide(
        self,
        session: AGISession,
        policy: Policy,
        caller: str,
        e164: str | None,
        motive: MotiveFacts,
        account_task: asyncio.Task[AccountFacts],
        result: CallResult,
    ) -> Decision:
        t0 = time.perf_counter()
        cfg = self.config
        try:
            async with asyncio.timeout(cfg.decision_budget):
                now = self.clock()
                withheld = caller == WITHHELD
                history_task = (
                    asyncio.create_task(self._history(caller, motive.motive_id, now, result))
                    if motive.motive_id and not withheld
                    else None
                )
                capped = policy.safeguards.daily_cap > 0 and not withheld
                ended_task = asyncio.create_task(self._history(caller, ENDED, now, result)) if capped else None
                try:
                    account = await asyncio.wait_for(asyncio.shield(account_task), cfg.directory_wait)
                except TimeoutError:
                    result.errors.append("directory: no answer within the decision budget")
                    account = AccountFacts.unknown()
                history = await history_task if history_task else ()
                ended = await ended_task if ended_task else ()
                today = now.astimezone(policy.timezone).date()
                result.account = account
                facts = CallFacts(
                    call_id=session.env.uniqueid,
                    caller=caller,
                    withheld=withheld,
                    account=account,
                    motive=motive,
                    now=now,
                    history=history,
                    sms_capable=e164 is not None and is_mobile(e164) and not isinstance(self.sms, NoSms),
                    queues=self._queues(policy, motive),
                    ended_today=sum(1 for c in ended if c.at.astimezone(policy.timezone).date() == today),
                )
                result.facts = facts
                result.cohorts = cohorts_of(facts, policy.language)
                decision = decide(policy, facts)
        except TimeoutError:
            result.fallback_reason = "decision_budget"
            raise
        result.decision_latency_s = time.perf_counter() - t0
        if decision.action is Action.DISSUADE and decision.callback_offer:
            # the caller's wait for an answer ends here: the offer is the router's answer (its own dialogue
            # after it is not turn-taking latency)
            result.responded_at = time.monotonic()
            decision = await self._offer_callback(session, decision, caller, e164, motive)
        variables = decision.channel_variables()
        if self.handoff is not None:  # the caller's context, for the agent who answers (headers, whisper)
            result.context = self.handoff.context(result, decision, policy)
            if result.context is not None:
                variables.update(self.handoff.variables(result.context))
        # ROUTER_DONE last, in its own command, so that a partial write
        # (connection lost midway) still leaves the dialplan on its human default.
        await session.set_variables(variables)
        await session.set_variable("ROUTER_DONE", "1")
        if result.context is not None and self.contexts is not None:
            self._spawn(self._store_context(result.context, policy))
        if decision.sms_template and e164 is not None:
            self._spawn(self._send_sms(e164, decision.sms_template, session.env.uniqueid, result))
        if motive.motive_id and not withheld:
            self._spawn(
                self._record(caller, motive.motive_id, PastCall(now, motive.motive_id, decision.action), policy)
            )
        if decision.action.hangs_up and policy.safeguards.daily_cap and not withheld:  # for the daily cap
            self._spawn(self._record(caller, ENDED, PastCall(now, ENDED, decision.action), policy))
        return decision

    async def _send_sms(self, e164: str, text: str, reference: str, result: CallResult) -> None:
        try:
            await self.sms.send(e164, text, reference=reference)
            result.sms = "sent"
        except SmsError as exc:
            result.sms = "failed"
            log.warning("SMS for call %s (%s) not sent: %s", reference, result.caller, exc)

    async def _offer_callback(
        self, session: AGISession, decision: Decision, caller: str, e164: str | None, motive: MotiveFacts
    ) -> Decision:
        """Saturated queue: say so, offer a callback (1) and record it durably, or keep the caller's place
        in the queue. No store or no number to call back: no offer, the caller waits."""
        if self.callbacks is None or e164 is None or decision.queue is None:
            return replace(decision, callback_offer=False)
        for prompt in decision.prompts:
            await session.stream_file(prompt)
        answer = await session.get_data(self.config.callback_offer_prompt, 6000, 1)
        if answer.digits != "1":
            return replace(decision, action=Action.QUEUE, prompts=(), reasons=(*decision.reasons, "callback.declined"))
        try:
            self.callbacks.add(
                call_id=session.env.uniqueid,
                caller=caller,
                number=e164,
                queue=decision.queue,
                motive=motive.motive_id or "",
                now=time.time(),
            )
        except StateStoreError as exc:  # not recorded (either store): never promise it
            log.warning("callback for %s (%s) not recorded: %s; keeps the queue", session.env.uniqueid, caller, exc)
            reasons = (*decision.reasons, "callback.unavailable")
            return replace(decision, action=Action.QUEUE, prompts=(), reasons=reasons)
        return replace(
            decision,
            action=Action.CALLBACK,
            prompts=(self.config.callback_confirmed_prompt,),
            reasons=(*decision.reasons, "callback.accepted"),
        )

    def _queues(self, policy: Policy, motive: MotiveFacts) -> dict[str, QueueSnapshot]:
        if self.queue_state is None:
            return {}
        names = {policy.queue_for(motive.motive_id), policy.default_queue}  # the skill queue and its fallback
        return {name: self.queue_state(name) for name in names}

    async def _store_context(self, context: AgentContext, policy: Policy) -> None:
        assert self.contexts is not None
        try:
            await self.contexts.put(context, policy.memory_ttl.total_seconds())
        except StateStoreError as exc:  # the channel variables still carry it to the agent
            log.warning("context of %s not stored: %s", context.call_id, exc)

    async def _record(self, caller: str, motive: str, call: PastCall, policy: Policy) -> None:
        try:
            await self.memory.record(caller, motive, call, policy.memory_ttl)
        except StateStoreError as exc:
            log.warning("caller memory not updated for %s/%s: %s", caller, motive, exc)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for background history writes (tests, shutdown)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    def _log(self, r: CallResult) -> None:
        d = r.decision
        decisions_log.info(
            "call=%s caller=%s action=%s queue=%s rule=%s motive=%s method=%s segment=%s policy=%s "
            "latency_ms=%s fallback=%s hung_up=%s errors=%s",
            r.call_id,
            r.caller,
            d.action.value if d else "-",
            (d.queue if d else None) or "-",
            d.rule if d else "-",
            (r.motive.motive_id if r.motive else None) or "-",
            r.motive.method if r.motive else "-",
            d.segment.value if d else "-",
            d.policy_version if d else "-",
            f"{r.decision_latency_s * 1000:.2f}" if r.decision_latency_s is not None else "-",
            r.fallback_reason or "-",
            r.hung_up,
            "; ".join(r.errors) or "-",
        )
