"""The context of a routed call, as the agent (and a CTI/CRM) receives it. Pure: no I/O here.

A context is built once, when the router decides, from what the call flow already knows (the
:class:`~agi_router.callflow.flow.CallResult`); a correction by the agent updates it. It never holds the
caller's number nor their pseudonym: the agent's softphone shows the caller ID Asterisk gives it, nothing
more leaves through here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..policy.model import Action
from .whisper import whisper_prompts

if TYPE_CHECKING:
    from ..callflow.flow import CallResult
    from ..motives.catalogue import Catalogue
    from ..policy.config import Policy
    from ..policy.model import Decision

__all__ = ["HEADER_VARIABLES", "AgentContext", "Handoff", "HandoffConfig", "context_ref"]

#: actions whose caller ends up with an agent (the others end in the router or the dialplan)
TO_AN_AGENT = frozenset({Action.QUEUE, Action.PRIORITY, Action.DISSUADE, Action.HUMAN, Action.CALLBACK})

#: SIP header (after ``X-Router-``) -> the inheritable channel variable the pre-dial handler reads it from.
#: asterisk/extensions.conf [agent-context] adds exactly these; a test keeps the two lists equal.
HEADER_VARIABLES: dict[str, str] = {
    "Call": "ROUTER_REF",
    "Motive": "ROUTER_H_MOTIVE",
    "Motive-Label": "ROUTER_H_LABEL",
    "Queue": "ROUTER_H_QUEUE",
    "Priority": "ROUTER_H_PRIORITY",
    "Rule": "ROUTER_H_RULE",
    "Segment": "ROUTER_H_SEGMENT",
    "Calls-Today": "ROUTER_H_CALLS",
    "Method": "ROUTER_H_METHOD",
    "Flags": "ROUTER_H_FLAGS",
    "Transferred-From": "ROUTER_H_FROM",
}

_UNSAFE = re.compile(r"[\x00-\x1f\x7f,;\"\\]")  # no line breaks in a header, nothing the dialplan would split on


def context_ref(key: bytes, call_id: str) -> str:
    """The call's public reference: a keyed hash of Asterisk's Uniqueid (16 characters, 80 bits), so that
    it cannot be guessed from the Uniqueid, and any part of the router holding the key (the callback placer,
    another router sharing Redis) finds the same context again."""
    digest = hmac.new(key, b"handoff " + call_id.encode(), hashlib.sha256).digest()
    return base64.b32encode(digest[:10]).decode("ascii").lower()


@dataclass(slots=True)
class AgentContext:
    ref: str
    call_id: str  # Asterisk's Uniqueid of the caller's channel (no personal data)
    action: str
    queue: str | None
    priority: int
    rule: str
    segment: str
    policy: str
    motive: str | None  # what the call was routed on (None: not understood)
    motive_label: str  # the catalogue's label ("" when no motive)
    short_label: str  # what the whisper says
    level: str  # speech: deflectable | queue | several | confirmed | person; "" for other methods
    method: str  # speech | dtmf | variable | none
    confidence: float
    heard: str | None  # speech: the classifier's best exact motive
    runner_up: str | None
    parts: list[str]  # several requests: each part's motive, in the order said
    calls_today: int  # this caller's calls for this motive today, this one included
    flags: list[str]  # priority | repeat | several | not_understood | other_language | callback | transferred
    routed_at: float  # epoch seconds
    language: str = ""
    answered_at: float | None = None
    agent: str | None = None  # the member interface that answered (PJSIP/agent2), when known
    transferred_from: str | None = None
    corrections: list[dict[str, Any]] = field(default_factory=list)
    transcript: str | None = None  # only with [handoff] transcript = true
    samples: list[str] = field(default_factory=list)  # sampled utterances of this call (never served)

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        """What ``GET /calls/{ref}`` returns: everything but the sample ids, with the wait so far."""
        out = asdict(self)
        out.pop("samples")
        end = self.answered_at if self.answered_at is not None else (time.time() if now is None else now)
        out["wait_s"] = round(max(0.0, end - self.routed_at), 1)
        if out["transcript"] is None:
            out.pop("transcript")
        return out

    def dumps(self) -> dict[str, Any]:
        """Everything, for a store."""
        return asdict(self)

    @classmethod
    def loads(cls, data: dict[str, Any]) -> AgentContext:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def headers(self) -> dict[str, str]:
        """``X-Router-*`` header -> value; empty ones are left out."""
        values = {
            "Call": self.ref,
            "Motive": self.motive or "none",
            "Motive-Label": self.motive_label,
            "Queue": self.queue or "",
            "Priority": str(self.priority),
            "Rule": self.rule,
            "Segment": self.segment,
            "Calls-Today": str(self.calls_today),
            "Method": self.method,
            "Flags": " ".join(self.flags),
            "Transferred-From": self.transferred_from or "",
        }
        return {k: _UNSAFE.sub(" ", v).strip() for k, v in values.items() if v}

    def corrected(self, to_queue: str, agent: str | None, at: float) -> AgentContext:
        """The context once an agent moved the caller to ``to_queue``."""
        flags = [f for f in self.flags if f != "transferred"] + ["transferred"]
        record = {"at": round(at, 3), "from_queue": self.queue, "to_queue": to_queue, "agent": agent}
        return replace(
            self,
            queue=to_queue,
            transferred_from=self.queue,
            flags=flags,
            corrections=[*self.corrections, record],
            answered_at=None,
            agent=None,
            routed_at=at,
        )


@dataclass(frozen=True, slots=True)
class HandoffConfig:
    whisper: str = "useful"  # off | on | useful
    headers: bool = True
    transcript: bool = False  # the caller's words in GET /calls/{ref}


class Handoff:
    """Builds a call's context and the channel variables that carry it to the agent. Pure: the call flow
    stores the context (``store.py``) and writes the variables (AGI)."""

    def __init__(self, catalogue: Catalogue, key: bytes, config: HandoffConfig | None = None) -> None:
        self.catalogue = catalogue
        self.key = key
        self.config = config or HandoffConfig()

    def ref(self, call_id: str) -> str:
        return context_ref(self.key, call_id)

    def context(self, result: CallResult, d: Decision, policy: Policy) -> AgentContext | None:
        """The context of a decided call whose caller goes to an agent; None for the others."""
        m, f = result.motive, result.facts
        if d.action not in TO_AN_AGENT:
            return None
        motive = self.catalogue.get(d.motive_id or "")
        calls = 1
        if f is not None and d.motive_id:
            today = f.now.astimezone(policy.timezone).date()
            calls += sum(1 for c in f.history if c.at.astimezone(policy.timezone).date() == today)
        flags: list[str] = []
        if d.action is Action.PRIORITY:
            flags.append("priority")
        if calls >= 2:
            flags.append("repeat")
        if m is not None and (m.level == "several" or len(m.parts) > 1):
            flags.append("several")
        if m is None or m.motive_id is None or m.failed_captures > 0:
            flags.append("not_understood")
        if m is not None and m.language and m.language != policy.language:
            flags.append("other_language")
        if d.action is Action.CALLBACK:
            flags.append("callback")
        return AgentContext(
            ref=self.ref(result.call_id),
            call_id=result.call_id,
            action=d.action.value,
            queue=d.queue,
            priority=d.priority,
            rule=d.rule,
            segment=d.segment.value,
            policy=d.policy_version,
            motive=d.motive_id,
            motive_label=motive.label if motive else "",
            short_label=motive.short if motive else "",
            level=m.level if m else "",
            method=m.method if m else "none",
            confidence=round(m.confidence, 3) if m else 0.0,
            heard=m.heard if m else None,
            runner_up=m.runner_up if m else None,
            parts=list(m.parts) if m else [],
            calls_today=calls,
            flags=flags,
            routed_at=time.time(),
            language=m.language if m else "",
            transcript=(result.transcript or None) if self.config.transcript else None,
            samples=list(result.samples),
        )

    def variables(self, ctx: AgentContext) -> dict[str, str]:
        """The channel variables for the caller's channel: ``__`` makes them inheritable, so app_queue's
        member channel (and the pre-dial handler running on it) sees them; ``ROUTER_WHISPER`` stays on the
        caller's channel, where Queue() reads it as its announceoverride."""
        out = {"__ROUTER_REF": ctx.ref}
        if self.config.headers:
            headers = ctx.headers()
            for name, var in HEADER_VARIABLES.items():
                if var != "ROUTER_REF":
                    out["__" + var] = headers.get(name, "")
        out["ROUTER_WHISPER"] = "&".join(whisper_prompts(ctx, self.config.whisper, self.catalogue))
        return out
