"""How well the understander routes a labelled set of sentences, and which thresholds would do better.

Used by ``agi-router speech eval`` (on an operator's own labelled calls) and by the benchmarks (on the
project's tuning and held-out sentences). A labelled item says what the caller wanted:

* ``motive``        one motive id;
* ``person``        a person;
* ``several``       two or more motive ids (``a+b``);
* ``out_of_scope``  nothing this line handles.

Each item gets one **outcome**, from the caller's side:

=====================  ==============================================================================
``motive_right``       routed on the right exact motive, first time (deflectable level)
``queue_right``        routed to the right skill queue, first time (queue level, or a wrong exact motive
                       of the right skill that the policy does not deflect)
``confirmed``          asked "Vous appelez pour X ?" with the right X: one more turn, then routed right
``several_caught``     several requests heard, the queue of one of them chosen (a person sees the rest)
``person_honoured``    a person asked for and given
``oos_rejected``       out of scope and not routed on a guess (asked again, then a person)
``reprompted``         not understood, or a confirmation the caller answers "no": asked again
``misrouted``          routed to a wrong skill queue (or, for a person / several, to a single motive)
``deflected_wrongly``  hung up on with the online message of a motive they did not ask for: the worst
=====================  ==============================================================================

The **cost** (lower is better) weighs them as a contact centre would: a wrong deflection 10, a misroute
2, a re-prompt 0.5 (about 8 s of the caller's time), a confirmation turn 0.2 (about 3 s).
"""

from __future__ import annotations

import csv
import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import ConfigError
from .catalogue import Catalogue
from .classifier import Evidence, MotiveClassifier, RejectRule
from .understanding import Level, Thresholds, Understander, Understanding

__all__ = [
    "COSTS",
    "OUTCOMES",
    "Item",
    "Report",
    "calibration",
    "evaluate",
    "load_items",
    "outcome_of",
    "reliability",
    "search_thresholds",
]

OUTCOMES = (
    "motive_right",
    "queue_right",
    "confirmed",
    "several_caught",
    "person_honoured",
    "oos_rejected",
    "reprompted",
    "misrouted",
    "deflected_wrongly",
)
COSTS = {"deflected_wrongly": 10.0, "misrouted": 2.0, "reprompted": 0.5, "confirm_turn": 0.2}
KINDS = ("motive", "person", "several", "out_of_scope")


@dataclass(frozen=True, slots=True)
class Item:
    kind: str
    expected: tuple[str, ...]  # motive ids (empty for person / out_of_scope)
    text: str
    line: int = 0


def load_items(path: Path, catalogue: Catalogue) -> list[Item]:
    """A ``kind<TAB>expected<TAB>text`` file (header line, ``#`` comments); errors name the line."""
    items: list[Item] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 ({exc.reason}); save it as UTF-8", file=str(path)) from None
    for n, raw in enumerate(lines, 1):
        if not raw.strip() or raw.startswith("#") or (n == 1 and raw.startswith("kind\t")):
            continue
        cols = raw.split("\t")
        if len(cols) != 3:
            raise ConfigError(
                f"line {n}: expected kind<TAB>expected<TAB>text, got {len(cols)} column(s)", file=str(path)
            )
        kind, expected, text = (c.strip() for c in cols)
        if kind not in KINDS:
            raise ConfigError(f"line {n}: unknown kind {kind!r}; one of {', '.join(KINDS)}", file=str(path))
        ids = tuple(x for x in expected.split("+") if x and x != "-")
        for mid in ids:
            if mid not in catalogue:
                raise ConfigError(f"line {n}: unknown motive {mid!r} (catalogue {catalogue.version})", file=str(path))
        if (kind == "motive" and len(ids) != 1) or (kind == "several" and len(ids) < 2):
            raise ConfigError(f"line {n}: a {kind} item names {'one' if kind == 'motive' else 'two+'} motive id(s)")
        items.append(Item(kind, ids, text, n))
    return items


def outcome_of(item: Item, u: Understanding, catalogue: Catalogue, deflectable: frozenset[str]) -> str:
    """The caller-side outcome of one item (see the module table); a confirmation is assumed answered
    truthfully (yes when X is what they asked for, no otherwise)."""
    lv = u.level
    skill_of = {m.id: m.skill for m in catalogue}
    if lv is Level.PERSON:
        return "person_honoured" if item.kind == "person" else "misrouted" if item.kind == "motive" else "reprompted"
    if item.kind == "person":
        return "reprompted" if lv in (Level.REJECT, Level.CONFIRM) else "misrouted"
    if lv in (Level.REJECT, Level.OUT_OF_SCOPE):  # asked again (out of scope: told what the line is for)
        return "oos_rejected" if item.kind == "out_of_scope" else "reprompted"
    if lv is Level.CONFIRM:
        if item.kind == "out_of_scope":
            return "oos_rejected"  # asked, answers no, asked again
        return "confirmed" if u.motive_id in item.expected else "reprompted"
    if lv is Level.SEVERAL:
        if item.kind == "several":
            return "several_caught"
        if item.kind == "motive":
            heard = {p.skill for p in u.parts}
            return "queue_right" if skill_of[item.expected[0]] in heard else "misrouted"
        return "misrouted"
    # deflectable or queue: one motive / skill acted on
    routed = u.motive_id or ""
    if lv is Level.DEFLECTABLE and routed in deflectable and routed not in item.expected:
        return "deflected_wrongly"
    if item.kind == "out_of_scope":
        return "misrouted"
    if item.kind == "several":
        return "misrouted"  # one request routed, the other lost
    if lv is Level.DEFLECTABLE and routed == item.expected[0]:
        return "motive_right"
    return "queue_right" if skill_of.get(routed) == skill_of[item.expected[0]] else "misrouted"


@dataclass
class Report:
    n: int
    outcomes: Counter[str]
    by_kind: dict[str, Counter[str]]
    second_turns: int  # confirmations asked
    cost: float
    thresholds: Thresholds
    examples: list[tuple[Item, Understanding, str]] = field(default_factory=list, repr=False)

    def share(self, outcome: str, kind: str | None = None) -> float:
        c = self.by_kind.get(kind, Counter()) if kind else self.outcomes
        total = sum(c.values())
        return c[outcome] / total if total else 0.0

    def rows(self) -> list[dict[str, Any]]:
        """One row per item: what was expected, heard, the level, what the router acted on, the outcome."""
        return [
            {
                "line": it.line,
                "kind": it.kind,
                "expected": "+".join(it.expected),
                "heard": u.text,
                "level": u.level.value,
                "motive": u.motive_id,
                "outcome": o,
            }
            for it, u, o in self.examples
        ]

    def as_json(self) -> dict[str, Any]:
        t = self.thresholds
        return {
            "items": self.n,
            "outcomes": dict(self.outcomes),
            "by_kind": {k: dict(v) for k, v in self.by_kind.items()},
            "second_turns": self.second_turns,
            "cost": round(self.cost, 3),
            "thresholds": {
                "motive_confidence": t.motive.min_confidence if t.motive else None,
                "motive_margin": t.motive.min_margin if t.motive else None,
                "queue_confidence": t.queue_confidence,
                "confirm_confidence": t.confirm_confidence,
                "part_queue_confidence": t.part_queue_confidence,
            },
        }


class _CachedClassifier:
    """The classifier's probabilities memoised per sentence: a threshold search re-reads them only."""

    def __init__(self, classifier: MotiveClassifier) -> None:
        self._c = classifier
        self.motive_ids = classifier.motive_ids
        self.reject = classifier.reject
        self._cache: dict[str, tuple[Any, Any, Any, Any]] = {}

    def evidence(self, texts: Sequence[str]) -> Evidence:
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            ev = self._c.evidence(missing)
            for k, t in enumerate(missing):
                assert ev.out_of_scope_similarity is not None
                self._cache[t] = (
                    ev.probabilities[k],
                    ev.out_of_scope[k],
                    ev.similarity[k],
                    ev.out_of_scope_similarity[k],
                )
        rows = [self._cache[t] for t in texts]
        if not rows:
            return self._c.evidence([])
        return Evidence(*(np.stack([r[j] for r in rows]) for j in range(4)))

    def probabilities(self, texts: Sequence[str]) -> np.ndarray[Any, Any]:
        return self.evidence(texts).probabilities


def evaluate(
    items: Iterable[Item],
    understander: Understander,
    deflectable: frozenset[str],
    *,
    texts: Sequence[str] | None = None,
) -> Report:
    """Run every item through ``understander`` (``texts``: what was heard instead of the item's text,
    e.g. Whisper's transcripts) and count the outcomes."""
    items = list(items)
    heard = list(texts) if texts is not None else [i.text for i in items]
    results = understander.understand_many(heard) if items else []
    outcomes: Counter[str] = Counter()
    by_kind: dict[str, Counter[str]] = {}
    examples = []
    for item, u in zip(items, results, strict=True):
        o = outcome_of(item, u, understander.catalogue, deflectable)
        outcomes[o] += 1
        by_kind.setdefault(item.kind, Counter())[o] += 1
        examples.append((item, u, o))
    second = sum(1 for u in results if u.level is Level.CONFIRM)
    cost = (
        COSTS["deflected_wrongly"] * outcomes["deflected_wrongly"]
        + COSTS["misrouted"] * outcomes["misrouted"]
        + COSTS["reprompted"] * outcomes["reprompted"]
        + COSTS["confirm_turn"] * second
    ) / max(1, len(items))
    th = replace(understander.thresholds, motive=understander.motive_rule)
    return Report(len(items), outcomes, by_kind, second, cost, th, examples)


def search_thresholds(
    items: Sequence[Item],
    catalogue: Catalogue,
    classifier: MotiveClassifier,
    deflectable: frozenset[str],
    *,
    texts: Sequence[str] | None = None,
    motive_rules: Sequence[RejectRule] | None = None,
) -> list[Report]:
    """Every combination of a small grid of thresholds, best (lowest cost) first. Ties: the later levels
    stricter (fewer confirmations), then the higher queue threshold."""
    cached = _CachedClassifier(classifier)
    rules = list(motive_rules) if motive_rules else [classifier.reject]
    reports = []
    grid = itertools.product(
        rules,
        (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98),
        (0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 1.01),
        (0.6, 0.7, 0.8, 0.9, 0.95),
    )
    for rule, q, c, p in grid:
        th = Thresholds(motive=rule, queue_confidence=q, confirm_confidence=c, part_queue_confidence=p)
        u = Understander(catalogue, cached, th)  # type: ignore[arg-type]
        reports.append(evaluate(items, u, deflectable, texts=texts))
    reports.sort(key=lambda r: (round(r.cost, 6), r.second_turns, -r.thresholds.queue_confidence))
    return reports


def write_tsv(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    rows = list(rows)
    if not rows:
        path.write_text("")
        return
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def reliability(
    confidence: Sequence[float], correct: Sequence[bool], *, bins: int = 10
) -> tuple[list[dict[str, Any]], float]:
    """Reliability table (equal-width confidence bins: sentences, mean confidence, observed accuracy) and
    the expected calibration error: the bins' |accuracy - confidence| weighted by their share of sentences."""
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    if len(conf) == 0:
        return [], 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, bins - 1)
    table: list[dict[str, Any]] = []
    ece = 0.0
    for b in range(bins):
        sel = which == b
        n = int(sel.sum())
        if not n:
            continue
        mean_conf, acc = float(conf[sel].mean()), float(ok[sel].mean())
        ece += n / len(conf) * abs(acc - mean_conf)
        table.append(
            {
                "bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}",
                "n": n,
                "confidence": round(mean_conf, 3),
                "accuracy": round(acc, 3),
            }
        )
    return table, ece


def calibration(
    items: Sequence[Item], classifier: MotiveClassifier, *, bins: int = 10
) -> tuple[list[dict[str, Any]], float]:
    """Reliability of the classifier's top probability on the ``motive`` items: is its best motive the one
    expected, as often as its probability says?"""
    motive_items = [i for i in items if i.kind == "motive"]
    if not motive_items:
        return [], 0.0
    probs = classifier.probabilities([i.text for i in motive_items])
    best = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    ids = classifier.motive_ids
    correct = [ids[int(b)] == it.expected[0] for b, it in zip(best, motive_items, strict=True)]
    return reliability(conf.tolist(), correct, bins=bins)
