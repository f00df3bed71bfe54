"""Facts in, decision out: the value types of the routing policy. No I/O anywhere here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum

__all__ = [
    "AccountFacts",
    "Action",
    "CallFacts",
    "Decision",
    "MotiveFacts",
    "PastCall",
    "QueueSnapshot",
    "Segment",
]


class Action(StrEnum):
    DEFLECT = "deflect"  # voice message pointing to the online account (+ optional SMS), then hang up
    HANGUP = "hangup"  # immediate hang-up of a repeat call
    PRIORITY = "priority"  # agent, with queue priority
    QUEUE = "queue"  # skill queue
    DISSUADE = "dissuade"  # saturated queue: dissuasion message and a callback offer
    CALLBACK = "callback"  # saturated queue, the caller accepted to be called back: confirm, hang up
    CLOSED = "closed"  # outside opening hours
    HUMAN = "human"  # safeguard or fallback: straight to a person

    @property
    def hangs_up(self) -> bool:
        """True for the outcomes the router ends itself (they count towards repeat rules)."""
        return self in (Action.DEFLECT, Action.HANGUP)


class Segment(StrEnum):
    """Caller segment for exclusion metrics. Never finer than this: no per-caller label."""

    ACTIVE = "account_active"
    INACTIVE = "account_inactive"
    NO_ACCOUNT = "no_account"
    UNKNOWN = "account_unknown"
    WITHHELD = "withheld"


@dataclass(frozen=True, slots=True)
class AccountFacts:
    """What the directory said. ``known=False``: it could not answer (down, timeout)."""

    known: bool
    exists: bool = False
    last_login: date | None = None
    flags: frozenset[str] = frozenset()

    @classmethod
    def unknown(cls) -> AccountFacts:
        return cls(known=False)

    @classmethod
    def none(cls) -> AccountFacts:
        return cls(known=True, exists=False)


@dataclass(frozen=True, slots=True)
class MotiveFacts:
    motive_id: str | None  # None: not captured
    confidence: float = 1.0
    method: str = "none"  # dtmf | variable | speech | none
    runner_up: str | None = None
    human_requested: bool = False
    heard: str | None = None  # speech: the classifier's best exact motive, whatever the level acted on
    level: str = ""  # speech: deflectable | queue | several | confirmed | person ("" for other methods)
    parts: tuple[str, ...] = ()  # several requests: the motive of each one heard, in the order said
    language: str = ""  # speech: the language the recogniser heard (ISO 639-1), "" when not detected
    failed_captures: int = 0  # sentences not understood and menus not answered before this result


@dataclass(frozen=True, slots=True)
class PastCall:
    at: datetime
    motive: str
    action: Action


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    name: str
    waiting: int = 0
    available_agents: int = 0
    logged_in_agents: int = 0
    longest_wait_s: float = 0.0
    estimated_wait_s: float = 0.0
    fresh: bool = True  # False when AMI is down: stale data never dissuades


@dataclass(frozen=True, slots=True)
class CallFacts:
    call_id: str
    caller: str  # pseudonym, never the number
    withheld: bool
    account: AccountFacts
    motive: MotiveFacts
    now: datetime  # timezone-aware
    history: tuple[PastCall, ...] = ()  # this caller, this motive, oldest first
    queues: Mapping[str, QueueSnapshot] = field(default_factory=dict)
    sms_capable: bool = False  # an SMS can reach this caller (mobile number and a gateway configured)
    ended_today: int = 0  # calls of this caller (any motive) the router ended itself today (safeguards)


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    queue: str | None
    priority: int
    rule: str  # id of the rule that decided
    reasons: tuple[str, ...]  # every reason code met on the way
    policy_version: str
    segment: Segment
    motive_id: str | None = None
    prompts: tuple[str, ...] = ()  # sound ids, played by the dialplan in order
    sms_template: str | None = None
    callback_offer: bool = False

    def channel_variables(self) -> dict[str, str]:
        """What the dialplan branches on; ``ROUTER_DONE`` is written last by the call flow."""
        return {
            "ROUTER_ACTION": self.action.value,
            "ROUTER_QUEUE": self.queue or "",
            "ROUTER_PRIO": str(self.priority),
            "ROUTER_PROMPTS": "&".join(self.prompts),
            "ROUTER_MOTIVE": self.motive_id or "",
            "ROUTER_RULE": self.rule,
            "ROUTER_REASON": ",".join(self.reasons),
            "ROUTER_SMS": "1" if self.sms_template else "0",
            "ROUTER_CALLBACK_OFFER": "1" if self.callback_offer else "0",
            "ROUTER_POLICY": self.policy_version,
        }
