"""End of turn decided by what was said, not only by silence (pure; issue #21).

The endpointer ends a turn after ``hangover_ms`` (550 ms) of silence. A person answers a finished sentence
in 200-300 ms, and waits when the speaker stops on "et", "parce que" or "euh". The router already has what
a turn detector needs: at the first short pause (``pause_ms``, 200 ms) the speculative transcript of the
audio so far is recognised *and understood* during the rest of the hangover. :func:`judge_turn` reads it:

* **end** now, when the words so far are a complete, confident answer — an understanding the router acts
  on (a motive to deflect, a queue, a person asked for, several requests) at or above ``min_confidence``,
  or a clear yes/no to the confirmation question — and the last word is neither a connective nor a
  hesitation;
* **extend** the hangover by ``extend_ms`` when the caller stopped on a connective ("et", "mais", "parce
  que", a preposition or an article: the sentence goes on) or a hesitation ("euh"): cut-offs cost more
  than 400 ms;
* **wait** the normal hangover otherwise (not understood yet: the caller may be looking for words).

A caller who speaks again after an early end is not lost: the next question (confirmation, re-prompt)
listens again, and barge-in stops its prompt. The premature cut-offs this causes are measured, not
assumed (``benchmarks/bench_turn_taking.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["CONNECTIVES", "HESITATIONS", "TurnDecision", "judge_turn", "last_word"]

# The sentence goes on after these (French): conjunctions, relative pronouns, prepositions, articles and
# possessives a sentence cannot end on.
CONNECTIVES = frozenset(
    """et mais ou donc or ni car parce que qu qui quoi dont où si comme quand lorsque puisque alors puis ensuite
    pour par avec sans sur sous dans en de d du des à au aux chez vers depuis pendant entre contre après avant
    le la l les un une mon ma mes ton ta tes son sa ses notre nos votre vos leur leurs ce cet cette ces
    je j tu il elle on nous vous ils elles me m te t se s ne n y est c""".split()
)
# Thinking aloud: the caller has not finished.
HESITATIONS = frozenset("euh heu euhh hum hmm hm bah ben beh mmh mh ah oh enfin genre bref".split())
# What the router acts on at once (motives/understanding.py Level values)
ACTIONABLE = frozenset({"deflectable", "queue", "person", "several"})
_WORD = re.compile(r"[a-zàâäçéèêëîïôöùûüÿœæ]+")

Action = Literal["end", "extend", "wait"]


@dataclass(frozen=True, slots=True)
class TurnDecision:
    action: Action
    reason: str  # complete | connective | hesitation | not_understood | unsure | empty


def last_word(transcript: str) -> str:
    words = _WORD.findall(transcript.lower().replace("\u2019", "'"))
    return words[-1] if words else ""


def judge_turn(
    transcript: str,
    level: str | None,
    confidence: float,
    *,
    min_confidence: float = 0.0,
    reply: str = "",
) -> TurnDecision:
    """The speculative transcript at a pause: ``level`` the understanding level (None in a confirmation
    turn), ``confidence`` of what the router would act on, ``reply`` the confirmation answer (yes/no/person)."""
    word = last_word(transcript)
    if not word:
        return TurnDecision("wait", "empty")
    if word in HESITATIONS:
        return TurnDecision("extend", "hesitation")
    if word in CONNECTIVES:
        return TurnDecision("extend", "connective")
    if reply:
        return TurnDecision("end", "complete")
    if level in ACTIONABLE:
        if confidence >= min_confidence:
            return TurnDecision("end", "complete")
        return TurnDecision("wait", "unsure")
    return TurnDecision("wait", "not_understood")
