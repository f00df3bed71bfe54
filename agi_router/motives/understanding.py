"""Transcript -> what the router acts on: the one code path every recognised sentence takes.

Checked in this order (first match wins):

===============  =====================================================================================
``person``       the caller asks for a person ("conseiller", "quelqu'un", ...): recall-first matcher
                 (:mod:`.human`), or the classifier's own ``human`` motive, confidently
``several``      the sentence splits into clauses (:mod:`.several`) of which two give distinct
                 confident answers; or the classifier's ``multi`` motive ("j'ai plusieurs questions")
``deflectable``  the exact motive is confident (the classifier's reject rule: confidence and margin):
                 the policy may deflect it or recognise a repeat
``queue``        the exact motive is not, but its **skill** is: the probabilities of the skill's motives
                 summed >= ``queue_confidence``; the router acts on ``<skill>.autre`` (right queue, never
                 deflected nor hung up on, the best exact guess kept for the audit trail)
``confirm``      neither, but the best motive is plausible (>= ``confirm_confidence``): ask the caller
                 "Vous appelez pour X ?" once (see ``callflow/confirm.py``)
``reject``       not understood: re-prompt, then the DTMF menu, then a person
===============  =====================================================================================

Deflection precision is the constraint that matters most (a caller deflected wrongly is hung up on), so
only ``deflectable`` carries an exact motive into the policy; the ``queue`` level exists because a split
*inside* one family (card order vs card update) is the most common hesitation and the queue is the same.
The thresholds are settings (``[understanding]``), chosen on the project's tuning sentences; ``agi-router
speech eval`` suggests the ones that would minimise the cost of errors on an operator's own calls.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np

from ..policy.model import MotiveFacts
from .catalogue import Catalogue
from .classifier import Evidence, MotiveClassifier, RejectRule
from .human import asks_for_person
from .several import split_clauses

__all__ = ["Level", "Part", "Thresholds", "Understander", "Understanding"]


class Level(StrEnum):
    PERSON = "person"
    SEVERAL = "several"
    DEFLECTABLE = "deflectable"
    QUEUE = "queue"
    CONFIRM = "confirm"
    OUT_OF_SCOPE = "out_of_scope"
    REJECT = "reject"


DEFAULT_MOTIVE_RULE = RejectRule(0.90, 0.0)
# chosen on the tune sentences only (benchmarks/bench_understanding.py, "out-of-scope thresholds")
OOS_PROBABILITY = 0.50
MIN_SIMILARITY = 0.25
OOS_MARGIN = -0.05
QUEUE_MARGIN = 0.05
QUEUE_SIMILARITY = 0.0


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Where each level starts (the defaults: chosen on the project's tuning sentences, see the README).
    ``motive=None``: the classifier's own cross-validated reject rule."""

    motive: RejectRule | None = DEFAULT_MOTIVE_RULE  # deflectable: the exact motive's confidence, margin
    queue_confidence: float = 0.60  # queue: the skill's summed probability
    confirm_confidence: float = 0.30  # confirm: the best motive's probability
    part_queue_confidence: float = 0.60  # several requests: a clause counts when its skill is this sure
    # out of scope (evidence, not softmax): the out-of-scope class this probable, or no training sentence of
    # any motive this similar (raw cosine)
    out_of_scope_probability: float = OOS_PROBABILITY
    min_similarity: float = MIN_SIMILARITY
    out_of_scope_margin: float = OOS_MARGIN  # or an out-of-scope sentence this much more similar than any motive's
    # queue (catch-all): the skill itself must have evidence: a training sentence of one of its motives
    # at least this similar
    queue_similarity: float = QUEUE_SIMILARITY
    queue_margin: float = QUEUE_MARGIN  # ... and at least this much more similar than any out-of-scope sentence


@dataclass(frozen=True, slots=True)
class Part:
    """One clause of a several-requests sentence and the answer it gave."""

    text: str
    motive_id: str  # the exact motive, or ``<skill>.autre`` when only the skill was sure
    skill: str
    confidence: float


@dataclass(frozen=True, slots=True)
class Understanding:
    text: str
    level: Level
    motive_id: str | None  # the motive the router acts on (None: person, reject)
    confidence: float  # of what it acts on: the motive's, or the skill's at the queue level
    best: str | None  # the classifier's best exact motive, whatever the level
    best_confidence: float
    runner_up: str | None
    runner_up_confidence: float
    skill: str | None  # the best skill and its summed probability
    queue: str | None
    skill_confidence: float
    parts: tuple[Part, ...] = ()
    person: bool = False
    candidates: tuple[tuple[str, float], ...] = field(default=(), repr=False)
    out_of_scope: float = 0.0  # the out-of-scope class's probability
    similarity: float = 1.0  # the best raw cosine to any motive's training sentences

    def facts(self, method: str = "speech", *, confirmed: bool = False) -> MotiveFacts | None:
        """What the policy is given; ``None`` when not understood (re-prompt) or to be confirmed first."""
        if self.level is Level.PERSON:
            return MotiveFacts(None, 1.0, method, human_requested=True, level="person")
        if self.level in (Level.REJECT, Level.CONFIRM, Level.OUT_OF_SCOPE) and not confirmed:
            return None
        return MotiveFacts(
            self.motive_id,
            1.0 if confirmed else self.confidence,
            method,
            self.runner_up,
            heard=self.best,
            level=self.level.value if not confirmed else "confirmed",
            parts=tuple(p.motive_id for p in self.parts),
        )

    def as_json(self) -> dict[str, Any]:
        """The stable JSON form (``agi-router motive classify``)."""
        return {
            "text": self.text,
            "level": self.level.value,
            "motive": self.motive_id,
            "confidence": round(self.confidence, 4),
            "best": self.best,
            "best_confidence": round(self.best_confidence, 4),
            "runner_up": self.runner_up,
            "runner_up_confidence": round(self.runner_up_confidence, 4),
            "skill": self.skill,
            "queue": self.queue,
            "skill_confidence": round(self.skill_confidence, 4),
            "several": [
                {"text": p.text, "motive": p.motive_id, "skill": p.skill, "confidence": round(p.confidence, 4)}
                for p in self.parts
            ],
            "person": self.person,
            "out_of_scope": round(self.out_of_scope, 4),
            "similarity": round(self.similarity, 4),
        }


class Understander:
    """Human matcher + clause splitter + classifier + thresholds: transcript -> :class:`Understanding`."""

    def __init__(
        self, catalogue: Catalogue, classifier: MotiveClassifier, thresholds: Thresholds | None = None
    ) -> None:
        self.catalogue = catalogue
        self.classifier = classifier
        self.thresholds = thresholds or Thresholds()
        self.motive_rule = self.thresholds.motive or classifier.reject
        ids = classifier.motive_ids
        self._skill_keys = tuple(dict.fromkeys(catalogue.motives[m].skill for m in ids))
        # motives x skills membership, to sum probabilities per skill in one product
        self._member = np.zeros((len(ids), len(self._skill_keys)), dtype=np.float32)
        for i, mid in enumerate(ids):
            self._member[i, self._skill_keys.index(catalogue.motives[mid].skill)] = 1.0
        self._generic = {i for i, mid in enumerate(ids) if mid.endswith(".autre")}
        #: per skill, the column indices of its motives (the evidence a catch-all needs)
        self._skill_members = [
            np.array([i for i, mid in enumerate(ids) if catalogue.motives[mid].skill == s], dtype=np.int64)
            for s in self._skill_keys
        ]
        self._routable_skills = {
            s for s in self._skill_keys if catalogue.generic_motive(s) is not None and s in catalogue.skills
        }
        human = catalogue.by_kind("human")
        multi = catalogue.by_kind("multi")
        self._human_id = human.id if human else None
        self._multi_id = multi.id if multi else None

    # ------------------------------------------------------------------------------------------ single

    def _single(self, text: str, ev: Evidence, row: int) -> Understanding:
        cat = self.catalogue
        th = self.thresholds
        ids = self.classifier.motive_ids
        probs = ev.probabilities[row]
        order = np.argsort(-probs, kind="stable")
        best, second = int(order[0]), int(order[1])
        p_best, p_second = float(probs[best]), float(probs[second])
        skill_p = probs @ self._member
        s_idx = int(np.argmax(skill_p))
        skill = self._skill_keys[s_idx]
        p_skill = float(skill_p[s_idx])
        best_id = ids[best]
        cands = tuple((ids[i], round(float(probs[i]), 6)) for i in order[:8])
        sims = ev.similarity[row]
        similarity = float(sims.max()) if len(sims) else 0.0
        p_oos = float(ev.out_of_scope[row])
        oos_sim = float(ev.out_of_scope_similarity[row]) if ev.out_of_scope_similarity is not None else 0.0
        common: dict[str, Any] = {
            "text": text,
            "best": best_id,
            "best_confidence": p_best,
            "runner_up": ids[second],
            "runner_up_confidence": p_second,
            "skill": skill,
            "queue": cat.skills[skill].queue,
            "skill_confidence": p_skill,
            "candidates": cands,
            "out_of_scope": p_oos,
            "similarity": similarity,
        }
        kind = cat.motives[best_id].kind
        sure = self.motive_rule.accepts(p_best, p_second)
        if sure and kind == "human":
            return Understanding(level=Level.PERSON, motive_id=None, confidence=1.0, person=True, **common)
        # out of scope is decided on evidence: the out-of-scope class, or words no motive was trained on
        if (
            p_oos >= th.out_of_scope_probability
            or similarity < th.min_similarity
            or oos_sim - similarity >= th.out_of_scope_margin
        ):
            return Understanding(
                level=Level.OUT_OF_SCOPE, motive_id=None, confidence=max(p_oos, 1.0 - similarity), **common
            )
        if sure and kind == "multi":
            return Understanding(level=Level.SEVERAL, motive_id=best_id, confidence=p_best, **common)
        if sure and best not in self._generic:  # a catch-all is never deflected: it routes at the queue level
            return Understanding(level=Level.DEFLECTABLE, motive_id=best_id, confidence=p_best, **common)
        skill_sim = float(sims[self._skill_members[s_idx]].max()) if len(self._skill_members[s_idx]) else 0.0
        skill_evidence = skill_sim >= th.queue_similarity and skill_sim - oos_sim >= th.queue_margin
        if p_skill >= th.queue_confidence and skill in self._routable_skills and skill_evidence:
            generic = cat.generic_motive(skill)
            assert generic is not None
            return Understanding(level=Level.QUEUE, motive_id=generic.id, confidence=p_skill, **common)
        if p_best >= th.confirm_confidence and kind == "normal":
            return Understanding(level=Level.CONFIRM, motive_id=best_id, confidence=p_best, **common)
        return Understanding(level=Level.REJECT, motive_id=None, confidence=p_best, **common)

    def _answer(self, u: Understanding, *, min_skill: float) -> Part | None:
        """A clause's confident answer, for several-requests detection: a sure exact motive, or a sure skill
        whose best exact motive is a real one (a catch-all ``<skill>.autre`` absorbs anything, so it never
        makes a request by itself)."""
        if u.level is Level.DEFLECTABLE and u.motive_id and not u.motive_id.endswith(".autre"):
            return Part(u.text, u.motive_id, self.catalogue.motives[u.motive_id].skill, u.confidence)
        best_is_exact = u.best is not None and not u.best.endswith(".autre")
        if u.level is Level.QUEUE and best_is_exact and u.skill_confidence >= min_skill and u.motive_id and u.skill:
            return Part(u.text, u.motive_id, u.skill, u.skill_confidence)  # its skill is sure, on a real motive
        return None

    # ------------------------------------------------------------------------------------------ public

    def understand(self, text: str) -> Understanding:
        return self.understand_many([text])[0]

    def understand_many(self, texts: Iterable[str]) -> list[Understanding]:
        texts = list(texts)
        if not texts:
            return []
        clauses = [split_clauses(t) for t in texts]
        flat = [c for cs in clauses for c in cs if len(cs) > 1]
        ev = self.classifier.evidence([*texts, *flat])
        out: list[Understanding] = []
        k = len(texts)
        for i, text in enumerate(texts):
            whole = self._single(text, ev, i)
            parts: list[Part] = []
            if len(clauses[i]) > 1:
                for c in clauses[i]:
                    a = self._answer(self._single(c, ev, k), min_skill=self.thresholds.part_queue_confidence)
                    k += 1
                    if a is not None:
                        parts.append(a)
            if asks_for_person(text):  # recall first, before anything else
                out.append(replace(whole, level=Level.PERSON, motive_id=None, confidence=1.0, person=True))
                continue
            distinct = _distinct(parts)
            if len(distinct) >= 2 and self._multi_id is not None:
                conf = min(p.confidence for p in distinct)
                several = replace(whole, level=Level.SEVERAL, motive_id=self._multi_id, confidence=conf)
                out.append(replace(several, parts=tuple(distinct)))
                continue
            out.append(whole)
        return out


def _distinct(parts: list[Part]) -> list[Part]:
    """Distinct requests: one per exact motive; a skill-only answer (``<skill>.autre``) is dropped when
    an exact motive of the same skill is there (it is most likely the same request)."""
    seen: dict[str, Part] = {}
    for p in parts:
        if p.motive_id not in seen:
            seen[p.motive_id] = p
    exact_skills = {p.skill for p in seen.values() if not p.motive_id.endswith(".autre")}
    return [p for p in seen.values() if not (p.motive_id.endswith(".autre") and p.skill in exact_skills)]
