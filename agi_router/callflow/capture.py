"""Motive capture: how the router learns why the caller calls.

Each source implements :class:`MotiveCapture`. The call flow asks a chain of them in turn
until one produces a motive (the dialplan's hint, speech, then the DTMF menu). A source that
cannot decide returns ``None`` so the next one runs; a caller who fails every source reaches a
human (``MotiveFacts(None)`` -> rule ``motive.none``).

The fallback dialogue is budgeted as a whole: from the end of the caller's first sentence that was
not understood (or the start of the menu when there was no speech round), every further step (a
re-prompt, a menu, a repeat of the menu) starts only if its prompt and its timeout fit in what is
left of ``fallback_budget_s``; otherwise the caller goes to a person at once. So a caller who cannot
be understood is in a person's queue within the budget, whatever they do. ``0`` (the human digit)
reaches a person at any prompt, and so does saying "conseiller".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
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

    outcome: str  # recognised | no_match | no_input | dtmf | human_request | max_length | error | overload
    #               | to_confirm | confirm_yes | confirm_no
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
    voice_ended_at: float | None = None  # time.monotonic() of its last voiced audio (before the hangover)
    speech_rounds: list[SpeechRound] = field(default_factory=list)
    fallback_deadline: float | None = None  # time.monotonic() by which a caller not understood is routed
    fallback_started_at: float | None = None
    budget_exhausted: bool = False  # a step was skipped because it would overrun the deadline
    sample: bool | None = None  # opt-in audio sampling: decided once per call (consent + share)
    failed_captures: int = 0  # sentences not understood (or a "no" to the confirmation), menus not answered
    person_after_failures: int = 0  # safeguard: a person once failed_captures reaches this (0: off)
    heard_language: str = ""  # the language the caller's last sentence was heard in ("" when none)
    transcript: str = ""  # the last motive sentence as recognised (for the agent, when the operator allows it)
    samples: list[str] = field(default_factory=list)  # ids of this call's sampled utterances (opt-in sampling)

    def failed(self) -> bool:
        """Count one failed capture; True when the policy's safeguard says: no further try, a person now."""
        self.failed_captures += 1
        return bool(self.person_after_failures) and self.failed_captures >= self.person_after_failures

    def ended_speaking(self, speech_end_at: float | None, endpoint_delay_s: float | None) -> None:
        """The sentence acted on ended at ``speech_end_at`` (end of speech declared), ``endpoint_delay_s``
        after its last voiced audio."""
        self.speech_ended_at = speech_end_at
        self.voice_ended_at = None
        if speech_end_at is not None and endpoint_delay_s is not None:
            self.voice_ended_at = speech_end_at - endpoint_delay_s

    def start_fallback(self, budget_s: float, at: float | None = None) -> None:
        """The caller was not understood (or there was nothing to understand them with): from now on
        the dialogue has ``budget_s`` to put them in a queue. Only the first call counts."""
        if self.fallback_deadline is None:
            self.fallback_started_at = time.monotonic() if at is None else at
            self.fallback_deadline = self.fallback_started_at + budget_s

    def fits(self, seconds: float) -> bool:
        """Would a step of ``seconds`` end before the fallback deadline? (True when none runs.)"""
        if self.fallback_deadline is None or time.monotonic() + seconds <= self.fallback_deadline:
            return True
        self.budget_exhausted = True
        return False


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
    attempts: int = 2  # the prompt once, then once more: never three times
    timeout_ms: int = 4000  # wait for a digit after the prompt
    skills_prompt: str = "router/menu-skills"
    skill_prompt_prefix: str = "router/menu-skill-"  # + skill key
    invalid_prompt: str = "router/invalid"
    human_digit: str = "0"  # a person, at any level
    other_digit: str = "9"  # level 2: another request of this skill
    fallback_budget_s: float = 36.0  # the menu alone, when no speech round started the clock


class DTMFMenuCapture:
    """Two-level DTMF menu: a skill digit, then a motive digit within that skill.

    Level 1: the skill's digit, or ``human_digit`` for a person. No valid answer after
    ``attempts`` -> ``None``-motive (a human). Level 2: the motive's second digit; ``other_digit``
    or no answer -> the skill's generic ``<skill>.autre`` motive (the caller still reaches the right
    skill queue); ``human_digit`` -> a person. A prompt that would overrun the fallback deadline is
    not played: level 1 then goes to a person, level 2 to the skill queue.
    """

    def __init__(
        self,
        catalogue: Catalogue,
        config: DTMFMenuConfig | None = None,
        prompt_seconds: Callable[[str], float] | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.config = config or DTMFMenuConfig()
        self.prompt_seconds = prompt_seconds or (lambda _prompt: 8.0)

    async def _ask(self, session: AGISession, prompt: str, valid: set[str], call: CallContext) -> str | None:
        cfg = self.config
        if call.pending_digits:
            digit, call.pending_digits = call.pending_digits[0], call.pending_digits[1:]
            if digit in valid:
                return digit
        step = self.prompt_seconds(prompt) + cfg.timeout_ms / 1000
        for attempt in range(cfg.attempts):
            if not call.fits(step):
                log.info("menu %s skipped for %s: it would overrun the time to a person", prompt, call.call_id)
                return None
            result = await session.get_data(prompt, cfg.timeout_ms, 1)
            digit = result.digits[:1]
            if digit in valid:
                return digit
            if digit and attempt + 1 < cfg.attempts and call.fits(self.prompt_seconds(cfg.invalid_prompt) + step):
                await session.stream_file(cfg.invalid_prompt)
        return None

    async def capture(self, session: AGISession, call: CallContext) -> MotiveFacts | None:
        cfg = self.config
        call.start_fallback(cfg.fallback_budget_s)
        skills = self.catalogue.skill_by_dtmf
        digit = await self._ask(session, cfg.skills_prompt, set(skills) | {cfg.human_digit}, call)
        if digit is None:
            call.failed()
            return MotiveFacts(None, 0.0, "dtmf")
        skill = skills.get(digit)
        if digit == cfg.human_digit and (skill is None or skill.key == "general"):
            return MotiveFacts(None, 1.0, "dtmf", human_requested=True)
        assert skill is not None
        motives = {
            m.dtmf[1]: m
            for m in self.catalogue
            if m.dtmf and len(m.dtmf) == 2 and m.dtmf[0] == digit and m.dtmf[1] != cfg.human_digit
        }
        generic = self.catalogue.generic_motive(skill.key)
        if not motives:
            return MotiveFacts(generic.id if generic else None, 1.0, "dtmf")
        valid = set(motives) | {cfg.other_digit, cfg.human_digit}
        second = await self._ask(session, cfg.skill_prompt_prefix + skill.key, valid, call)
        if second == cfg.human_digit:
            return MotiveFacts(None, 1.0, "dtmf", human_requested=True)
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
