"""Transcript -> motive: a small TF-IDF text classifier trained at start-up from the catalogue (numpy only).

Training data: each motive's ``examples`` plus its ``label`` (``held_out`` is never read here: it is kept
for measuring). Start-up costs well under a second for the bundled catalogue's ~800 sentences.

* :func:`normalize` folds what speech recognition gets wrong or what carries no motive: case, accents,
  punctuation, elisions (``l'`` ``j'`` ``qu'``...), fillers (euh, bah, ben, bonjour, oui, allô...), and
  homophone endings (``é/er/ez/ée/ées/és`` -> ``e``, ``ais/ait/aient`` -> ``ai``, plural ``s``/``x``).
* Features: word unigrams + bigrams and character 3-5-grams inside word boundaries, sublinear TF-IDF,
  each block L2-normalised, then concatenated (the char block lets Whisper's misspellings still match).
* Scores: a blend of cosine to each motive's centroid and a kNN vote (the k nearest training sentences,
  similarity-weighted): the centroid generalises across paraphrases, kNN keeps rare phrasings.
  (A numpy logistic regression was measured too; see ``benchmarks/bench_motives.py``.)
* Confidence: softmax of the scores with a temperature fitted by k-fold cross-validation on the examples
  (minimum log-loss), so 0.8 means about 80 % right on unseen phrasings of the catalogue's own style.
* Reject (``motive_id=None``): confidence below ``reject_confidence`` or margin to the runner-up below
  ``reject_margin``; both chosen by the same cross-validation plus the ``[tune]`` part of the out-of-scope
  sentences (``agi_router/data/out_of_scope.txt``), whose ``[held_out]`` part is never used.

Everything is deterministic: no randomness, folds are by position, ties broken by catalogue order.
"""

from __future__ import annotations

import itertools
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .catalogue import Catalogue

__all__ = [
    "Evidence",
    "MotiveClassifier",
    "MotiveGuess",
    "RejectRule",
    "default_out_of_scope_path",
    "load_out_of_scope",
    "normalize",
    "tokens",
]

F32 = npt.NDArray[np.float32]

# ---------------------------------------------------------------------------------------------- normalisation

_APOSTROPHES = "'\u2019`\u00b4"  # ascii, typographic, grave, acute
_ELISION = re.compile(rf"\b(?:[ljdnmtsc]|qu|jusqu|lorsqu|puisqu)[{_APOSTROPHES}]", re.IGNORECASE)
_NON_WORD = re.compile(r"[^a-z0-9]+")
#: Words that say nothing about the motive (politeness, hesitations, telephone noise words).
FILLERS = frozenset(
    """euh heu hum hmm bah ben bon bonjour bonsoir oui allo alors voila ouais madame monsieur merci
    hein donc enfin ok okay ah oh eh beh pardon excusez excuse bjr""".split()
)


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _fold_word(w: str) -> str:
    """Fold homophone endings and plurals: ``payées/payés/payer/payez/payé`` -> ``paye``."""
    if len(w) <= 3 or w.isdigit():
        return w
    if w.endswith(("aient", "ais", "ait")):  # voulais / voulait / voulaient
        return w[: -len("aient")] + "ai" if w.endswith("aient") else w[:-1]
    if w[-1] in "sx" and not w.endswith(("ss", "us", "is")):  # plural (not "plus", "mois", "pass")
        w = w[:-1]
    if w.endswith("ee"):  # payee(s) -> paye
        w = w[:-1]
    elif len(w) > 4 and w.endswith(("er", "ez")):  # payer / payez -> paye
        w = w[:-2] + "e"
    return w


def tokens(text: str) -> list[str]:
    """The normalised words of ``text`` (see :func:`normalize`)."""
    t = _ELISION.sub(" ", text.lower())
    t = _NON_WORD.sub(" ", _strip_accents(t).replace("œ", "oe").replace("æ", "ae"))
    return [_fold_word(w) for w in t.split() if w not in FILLERS]


def normalize(text: str) -> str:
    """Lowercase, no accents/punctuation/elisions/fillers, homophone endings folded: the compared form."""
    return " ".join(tokens(text))


# ---------------------------------------------------------------------------------------------- features


def _word_grams(words: Sequence[str]) -> list[str]:
    return [f"w:{w}" for w in words] + [f"b:{a}_{b}" for a, b in itertools.pairwise(words)]


def _char_grams(words: Sequence[str], lo: int = 3, hi: int = 5) -> list[str]:
    out: list[str] = []
    for w in words:
        p = f" {w} "
        for n in range(lo, hi + 1):
            out.extend(f"c:{p[i : i + n]}" for i in range(len(p) - n + 1))
    return out


class _Vectorizer:
    """Sublinear TF-IDF over word and char n-grams, each block L2-normalised and weighted."""

    def __init__(self, docs: Sequence[Sequence[str]], *, word_weight: float = 0.5, min_df_char: int = 2) -> None:
        self.word_weight = word_weight
        df: Counter[str] = Counter()
        for words in docs:
            df.update(set(_word_grams(words)) | set(_char_grams(words)))
        keep = sorted(g for g, n in df.items() if n >= (min_df_char if g.startswith("c:") else 1))
        keep.sort(key=lambda g: g.startswith("c:"))  # word grams first, then char grams: two contiguous blocks
        self.index = {g: i for i, g in enumerate(keep)}
        self.n_word = sum(1 for g in keep if not g.startswith("c:"))
        n_docs = len(docs)
        self.idf = np.array([math.log((1 + n_docs) / (1 + df[g])) + 1.0 for g in keep], dtype=np.float32)

    @property
    def dim(self) -> int:
        return len(self.index)

    def transform(self, docs: Iterable[Sequence[str]]) -> F32:
        rows = list(docs)
        x = np.zeros((len(rows), self.dim), dtype=np.float32)
        for r, words in enumerate(rows):
            counts = Counter(_word_grams(words) + _char_grams(words))
            cols = [(j, n) for g, n in counts.items() if (j := self.index.get(g)) is not None]
            if cols:
                js, ns = zip(*cols, strict=True)
                x[r, list(js)] = 1.0 + np.log(np.asarray(ns, dtype=np.float32))
        x *= self.idf
        for block, weight in ((x[:, : self.n_word], self.word_weight), (x[:, self.n_word :], 1.0 - self.word_weight)):
            norm = np.linalg.norm(block, axis=1, keepdims=True)
            block *= math.sqrt(weight) / np.maximum(norm, 1e-9)
        return x


# ---------------------------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class MotiveGuess:
    """The classifier's answer. ``motive_id is None``: rejected (out of scope or not sure)."""

    motive_id: str | None
    confidence: float
    runner_up: str | None
    runner_up_confidence: float
    candidates: tuple[tuple[str, float], ...]  # best first, with confidences
    method: str

    @property
    def best(self) -> str:
        """The top candidate even when rejected."""
        return self.candidates[0][0] if self.candidates else ""


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the classifier knows about some sentences, one row each (see :meth:`MotiveClassifier.evidence`).

    * ``probabilities``: the motives' calibrated probabilities (sum 1 over the catalogue);
    * ``out_of_scope``: the probability of the *out-of-scope* class, in a softmax over the motives and it
      (0 when the classifier was trained without out-of-scope sentences);
    * ``similarity``: the best raw cosine of the sentence to each motive's own training sentences: words
      that belong to no motive of the line give a low similarity to all of them, whatever the softmax says.
    """

    probabilities: F32
    out_of_scope: F32
    similarity: F32
    out_of_scope_similarity: F32 | None = None  # best cosine to an out-of-scope training sentence


@dataclass(frozen=True, slots=True)
class RejectRule:
    """Reject when ``confidence < min_confidence`` or ``confidence - runner_up < min_margin``."""

    min_confidence: float
    min_margin: float

    def accepts(self, confidence: float, runner_up: float) -> bool:
        return confidence >= self.min_confidence and confidence - runner_up >= self.min_margin


def default_out_of_scope_path() -> Path:
    """The bundled out-of-scope sentences (``agi_router/data/out_of_scope.txt``)."""
    return Path(__file__).resolve().parent.parent / "data" / "out_of_scope.txt"


def load_out_of_scope(path: Path | None = None) -> tuple[list[str], list[str]]:
    """``(tune, held_out)`` sentences of an out-of-scope file with ``[tune]`` / ``[held_out]`` sections."""
    sections: dict[str, list[str]] = {"tune": [], "held_out": []}
    current = "tune"
    path = path if path is not None else default_out_of_scope_path()
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line in ("[tune]", "[held_out]"):
            current = line[1:-1]
            continue
        sections[current].append(line)
    return sections["tune"], sections["held_out"]


def softmax(scores: F32, temperature: float) -> F32:
    z = scores / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    out: F32 = (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
    return out


# ---------------------------------------------------------------------------------------------- classifier


class _Core:
    """Vectoriser + centroid/kNN scorer (or logistic regression) trained on one set of sentences."""

    def __init__(
        self,
        texts: Sequence[str],
        labels: Sequence[int],
        n_classes: int,
        *,
        method: str,
        knn: int,
        alpha: float,
        word_weight: float,
    ) -> None:
        self.method = method
        self.knn = knn
        self.alpha = alpha
        self.n_classes = n_classes
        docs = [tokens(t) for t in texts]
        self.vec = _Vectorizer(docs, word_weight=word_weight)
        x = self.vec.transform(docs)
        self.y = np.asarray(labels, dtype=np.int64)
        self.x = x
        self.members = [np.nonzero(self.y == c)[0] for c in range(n_classes)]
        onehot = np.zeros((len(labels), n_classes), dtype=np.float32)
        onehot[np.arange(len(labels)), self.y] = 1.0
        self.onehot = onehot
        cent = onehot.T @ x
        self.centroids = cent / np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-9)
        if method == "logreg":
            self.w, self.b = _train_logreg(x, onehot)

    def scores(self, texts: Sequence[str]) -> F32:
        return self.analyse(texts)[0]

    def analyse(self, texts: Sequence[str]) -> tuple[F32, F32]:
        """``(scores, similarity)``: the class scores, and each text's best cosine to each class's
        training sentences (raw evidence, before any softmax)."""
        q = self.vec.transform(tokens(t) for t in texts)
        sims = q @ self.x.T
        best = np.zeros((len(texts), self.n_classes), dtype=np.float32)
        for c, idx in enumerate(self.members):
            if len(idx):
                best[:, c] = sims[:, idx].max(axis=1)
        if self.method == "logreg":
            out: F32 = (q @ self.w + self.b).astype(np.float32)
            return out, best
        cent = q @ self.centroids.T
        k = min(self.knn, sims.shape[1])
        # k nearest by similarity; stable ordering for ties (deterministic)
        idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        knn = np.zeros_like(cent)
        for r in range(len(texts)):
            np.add.at(knn[r], self.y[idx[r]], sims[r, idx[r]])
        knn /= k
        blended: F32 = (self.alpha * cent + (1.0 - self.alpha) * knn * 2.0).astype(np.float32)
        return blended, best


def _train_logreg(x: F32, onehot: F32, *, epochs: int = 300, lr: float = 2.0, l2: float = 1e-4) -> tuple[F32, F32]:
    """Multinomial logistic regression, full-batch gradient descent from zeros (deterministic)."""
    n, d = x.shape
    w = np.zeros((d, onehot.shape[1]), dtype=np.float32)
    b = np.zeros(onehot.shape[1], dtype=np.float32)
    for _ in range(epochs):
        p = softmax(x @ w + b, 1.0)
        g = (p - onehot) / n
        w -= lr * (x.T @ g + l2 * w)
        b -= lr * g.sum(axis=0)
    return w, b


def _fit_temperature(scores: F32, y: npt.NDArray[np.int64]) -> float:
    """The softmax temperature minimising the log-loss of ``scores`` against ``y`` (log-grid search)."""
    best_t, best_loss = 1.0, math.inf
    for t in np.exp(np.linspace(math.log(0.003), math.log(3.0), 120)):
        p = softmax(scores, float(t))
        loss = float(-np.mean(np.log(np.maximum(p[np.arange(len(y)), y], 1e-12))))
        if loss < best_loss:
            best_t, best_loss = float(t), loss
    return best_t


def choose_reject_rule(
    conf_in: npt.NDArray[np.float64],
    runner_in: npt.NDArray[np.float64],
    correct_in: npt.NDArray[np.bool_],
    conf_out: npt.NDArray[np.float64],
    runner_out: npt.NDArray[np.float64],
    *,
    misroute_cost: float = 2.0,
    reject_cost: float = 0.5,
    oos_weight: float = 0.5,
) -> RejectRule:
    """Grid search of the rule maximising (right routes) - cost x (wrong routes) - cost x (false rejects)
    on in-scope sentences, plus ``oos_weight`` x (rate of out-of-scope sentences rejected).

    A wrong route costs 4x a false reject (2.0 vs 0.5): a rejected caller is asked again and then gets the
    DTMF menu (seconds), a misrouted one waits in the wrong queue or is sent away to the website."""
    best = RejectRule(0.0, 0.0)
    best_u = -math.inf
    for c in np.linspace(0.0, 0.9, 46):
        for m in np.linspace(0.0, 0.6, 31):
            acc_in = (conf_in >= c) & (conf_in - runner_in >= m)
            acc_out = (conf_out >= c) & (conf_out - runner_out >= m)
            right = float(np.mean(acc_in & correct_in))
            wrong = float(np.mean(acc_in & ~correct_in))
            false_rej = float(np.mean(~acc_in & correct_in))
            oos_rej = float(np.mean(~acc_out)) if len(conf_out) else 1.0
            u = right - misroute_cost * wrong - reject_cost * false_rej + oos_weight * oos_rej
            if u > best_u + 1e-9:
                best_u, best = u, RejectRule(float(c), float(m))
    return best


class MotiveClassifier:
    """Transcript -> :class:`MotiveGuess`, trained from a :class:`Catalogue` (see module docstring).

    ``out_of_scope`` are sentences that belong to no motive of the line (pass the ``[tune]`` part of
    :func:`load_out_of_scope`): they choose the reject rule and, with ``oos_class`` (the default), train
    one more class, *out of scope*, whose probability :meth:`evidence` reports next to the motives'.
    ``folds`` is the cross-validation used for the temperature, the reject rule and
    :attr:`cv_out_of_scope` (every sentence scored by a model that never saw it).
    """

    def __init__(
        self,
        catalogue: Catalogue,
        *,
        out_of_scope: Sequence[str] = (),
        method: str = "centroid_knn",
        knn: int = 5,
        alpha: float = 0.8,
        word_weight: float = 0.5,
        folds: int = 5,
        reject: RejectRule | None = None,
        oos_weight: float = 0.5,
        oos_class: bool = True,
    ) -> None:
        if method not in ("centroid_knn", "logreg"):
            raise ValueError(f"unknown method {method!r}")
        self.method = method
        self.motive_ids: tuple[str, ...] = tuple(catalogue.motives)
        texts: list[str] = []
        labels: list[int] = []
        for i, m in enumerate(catalogue.motives.values()):
            for t in (m.label, *m.examples):
                texts.append(t)
                labels.append(i)
        self._texts, self._labels = texts, labels
        n = len(self.motive_ids)
        oos = list(out_of_scope)
        self.has_oos_class = bool(oos) and oos_class
        # the out-of-scope class, when trained, is the last column (index n)
        n_cls = n + 1 if self.has_oos_class else n
        all_texts = [*texts, *oos] if self.has_oos_class else texts
        all_labels = [*labels, *([n] * len(oos))] if self.has_oos_class else labels
        params: dict[str, Any] = {"method": method, "knn": knn, "alpha": alpha, "word_weight": word_weight}
        self._core = _Core(all_texts, all_labels, n_cls, **params)
        # Cross-validation: every sentence scored by a model that never saw it (folds by position).
        y = np.asarray(all_labels, dtype=np.int64)
        cv = np.zeros((len(all_texts), n_cls), dtype=np.float32)
        fold_of = np.arange(len(all_texts)) % folds
        oos_scores = np.zeros((0 if self.has_oos_class else folds, len(oos), n), dtype=np.float32)
        for f in range(folds):
            train = np.nonzero(fold_of != f)[0]
            test = np.nonzero(fold_of == f)[0]
            core = _Core([all_texts[i] for i in train], [all_labels[i] for i in train], n_cls, **params)
            cv[test] = core.scores([all_texts[i] for i in test])
            if oos and not self.has_oos_class:
                oos_scores[f] = core.scores(oos)
        inscope = y < n
        self.temperature = _fit_temperature(cv[inscope][:, :n], y[inscope])
        self.cv_accuracy = float(np.mean(cv[inscope][:, :n].argmax(axis=1) == y[inscope]))
        #: cross-validated out-of-scope probability of the in-scope and of the out-of-scope training sentences
        self.cv_out_of_scope: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] = (
            (
                softmax(cv[inscope], self.temperature)[:, n].astype(np.float64),
                softmax(cv[~inscope], self.temperature)[:, n].astype(np.float64),
            )
            if self.has_oos_class
            else (np.zeros(0), np.zeros(0))
        )
        if reject is None:
            p_in = softmax(cv[inscope][:, :n], self.temperature).astype(np.float64)
            top2 = -np.sort(-p_in, axis=1)[:, :2]
            correct = p_in.argmax(axis=1) == y[inscope]
            out_rows = cv[~inscope][:, :n] if self.has_oos_class else oos_scores.reshape(-1, n)
            p_out = softmax(out_rows, self.temperature).astype(np.float64)
            top2o = -np.sort(-p_out, axis=1)[:, :2] if len(p_out) else np.zeros((0, 2))
            reject = choose_reject_rule(
                top2[:, 0], top2[:, 1], correct, top2o[:, 0], top2o[:, 1], oos_weight=oos_weight
            )
        self.reject = reject

    # -------------------------------------------------------------------------------------- inference

    def scores(self, texts: Sequence[str]) -> F32:
        """Raw (uncalibrated) scores, one row per text, one column per motive in catalogue order."""
        return self._core.scores(texts)[:, : len(self.motive_ids)]

    def probabilities(self, texts: Sequence[str]) -> F32:
        """Calibrated probabilities (softmax with the fitted temperature), one row per text."""
        return softmax(self.scores(texts), self.temperature)

    def evidence(self, texts: Sequence[str]) -> Evidence:
        """The motives' probabilities plus what says whether the sentence is about this line at all."""
        n = len(self.motive_ids)
        if not texts:
            z = np.zeros(0, np.float32)
            return Evidence(np.zeros((0, n), np.float32), z, np.zeros((0, n), np.float32), z)
        scores, sims = self._core.analyse(texts)
        probs = softmax(scores[:, :n], self.temperature)
        p_oos = softmax(scores, self.temperature)[:, n] if self.has_oos_class else np.zeros(len(texts), np.float32)
        oos_sim = sims[:, n] if self.has_oos_class else np.zeros(len(texts), np.float32)
        return Evidence(probs, p_oos.astype(np.float32), sims[:, :n].astype(np.float32), oos_sim.astype(np.float32))

    def classify(self, text: str, *, top: int = 8) -> MotiveGuess:
        return self.classify_many([text], top=top)[0]

    def classify_many(self, texts: Sequence[str], *, top: int = 8) -> list[MotiveGuess]:
        if not texts:
            return []
        probs = self.probabilities(texts)
        return [self.guess_from_probabilities(row, method=f"text:{self.method}", top=top) for row in probs]

    def guess_from_probabilities(self, probs: F32, *, method: str, top: int = 8) -> MotiveGuess:
        """Build a guess (with the reject rule) from one row of probabilities in catalogue order."""
        order = np.argsort(-probs, kind="stable")[: max(2, top)]
        cands = tuple((self.motive_ids[i], round(float(probs[i]), 6)) for i in order)
        conf, runner = cands[0][1], cands[1][1]
        empty = not np.isfinite(probs).all()
        accepted = not empty and self.reject.accepts(conf, runner)
        return MotiveGuess(
            motive_id=cands[0][0] if accepted else None,
            confidence=conf,
            runner_up=cands[1][0],
            runner_up_confidence=runner,
            candidates=cands,
            method=method,
        )
