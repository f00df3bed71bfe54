"""Motive capture: how the router learns why the caller calls.

Each source implements :class:`MotiveCapture`. The call flow asks a chain of them in turn
until one produces a motive (speech first once live audio lands, then the DTMF menu). A
source that cannot decide returns ``None`` so the next one runs; a caller who fails every
source reaches a human (``MotiveFacts(None)`` -> rule ``motive.none``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..agi.session import AGISession
from ..motives.catalogue import Catalogue
from ..policy.model import MotiveFacts

__all__ = [
    "CallContext",
    "ChainedCapture",
    "DTMFMenuCapture",
    "DTMFMenuConfig",
    "HintCapture",
    "MotiveCapture",
    "SpeechRound",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SpeechRound:
    """One prompt-and-listen round of live-audio capture, as metrics and logs see it."""

    outcome: str  # recognised | no_match | no_input | dtmf | human_request | max_length | error
    confidence: float | None = None
    recognition_s: float | None = None  # the recogniser's own run time for the utterance used
    endpoint_delay_s: float | None = None  # end of the last voiced frame -> end of speech declared
    barged_in: bool = False
    jitter_s: float | None = None  # RFC 3550 interarrival jitter of the leg at its end


@dataclass(slots=True)
class CallContext:
    call_id: str
    caller: str  # pseudonym
    language: str
    hint: str = ""  # motive id given by the dialplan (first AGI argument), if any
    pending_digits: str = ""  # DTMF the caller typed during speech capture, not yet used
    speech_ended_at: float | None = None  # time.monotonic() at the end of the recognised utterance
    speech_rounds: list[SpeechRound] = field(default_factory=list)


class MotiveCapture(Protocol):
    async def capture(self, session: AGISession, call: CallContext) -> MotiveFacts | None: ...


class HintCapture:
    """The dialplan already knows the motive (first AGI argument): trust it, confidence 1.
    An id the catalogue does not know is passed on as is: the policy routes it to a human
    with the reason ``motive.unknown_id`` rather than guessing."""

    async def capture(self, session: AGISession, call: CallContext) -> MotiveFacts | None:
        hint = call.hint.strip()
        if not hint:
            return None
        return MotiveFacts(hint, 1.0, "variable")


@dataclass(frozen=True, slots=True)
class DTMFMenuConfig:
    attempts: int = 3  # tries per menu level before giving up
    timeout_ms: int = 5000  # wait for a digit after the prompt
    skills_prompt: str = "router/menu-skills"
    skill_prompt_prefix: str = "router/menu-skill-"  # + skill key
    invalid_prompt: str = "router/invalid"
    human_digit: str = "9"


class DTMFMenuCapture:
    """Two-level DTMF menu: a skill digit, then a motive digit within that skill.

    Level 1: the skill's digit, or ``human_digit`` for a person. No valid answer after
    ``attempts`` -> ``None``-motive (a human). Level 2: the motive's second digit; ``9`` or no
    answer -> the skill's generic ``<skill>.autre`` motive (the caller still reaches the right
    skill queue).
    """

    def __init__(self, catalogue: Catalogue, config: DTMFMenuConfig | None = None) -> None:
        self.catalogue = catalogue
        self.config = config or DTMFMenuConfig()

    async def _ask(
        self, session: AGISession, prompt: str, valid: set[str], call: CallContext | None = None
    ) -> str | None:
        cfg = self.config
        if call is not None and call.pending_digits:
            digit, call.pending_digits = call.pending_digits[0], call.pending_digits[1:]
            if digit in valid:
                return digit
        for attempt in range(cfg.attempts):
            result = await session.get_data(prompt, cfg.timeout_ms, 1)
            digit = result.digits[:1]
            if digit in valid:
                return digit
            if digit and attempt + 1 < cfg.attempts:
                await session.stream_file(cfg.invalid_prompt)
        return None

    async def capture(self, session: AGISession, call: CallContext) -> MotiveFacts | None:
        cfg = self.config
        skills = self.catalogue.skill_by_dtmf
        digit = await self._ask(session, cfg.skills_prompt, set(skills) | {cfg.human_digit}, call)
        if digit is None:
            return MotiveFacts(None, 0.0, "dtmf")
        skill = skills.get(digit)
        if digit == cfg.human_digit and (skill is None or skill.key == "general"):
            return MotiveFacts(None, 1.0, "dtmf", human_requested=True)
        assert skill is not None
        motives = {m.dtmf[1]: m for m in self.catalogue if m.dtmf and len(m.dtmf) == 2 and m.dtmf[0] == digit}
        generic = self.catalogue.generic_motive(skill.key)
        if not motives:
            return MotiveFacts(generic.id if generic else None, 1.0, "dtmf")
        second = await self._ask(session, cfg.skill_prompt_prefix + skill.key, set(motives) | {"9"}, call)
        chosen = motives.get(second or "")
        if chosen is None:
            return MotiveFacts(generic.id if generic else None, 1.0 if second else 0.5, "dtmf")
        return MotiveFacts(chosen.id, 1.0, "dtmf")


class ChainedCapture:
    def __init__(self, sources: Sequence[MotiveCapture]) -> None:
        self.sources = tuple(sources)

    async def capture(self, session: AGISession, call: CallContext) -> MotiveFacts | None:
        for source in self.sources:
            result = await source.capture(session, call)
            if result is not None:
                return result
        return None
