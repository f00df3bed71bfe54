"""Simulated speech-recognition errors on French sentences (benchmarks only, never product code).

:func:`corrupt` turns a written sentence into what a recogniser might write at a given word error rate:

* always: lowercase, no punctuation, numbers written in words or in digits (both directions happen);
* then exactly ``round(wer x words)`` word errors at random positions, each one of
  - a **deletion** (a short word swallowed),
  - a **substitution** from French phonetic confusions: homophones (et/est, ces/ses/c'est, cent/sans...),
    homophone endings (é/er/ez/ais/ait), spelling by sound (ph/f, qu/k, eau/o, an/en, ain/in, tion/sion,
    doubled consonants), domain words a recogniser hears wrong (vitale/vital, ameli/amélie, ALD/a l d...),
  - a **split** (``remboursement`` -> ``rembour sement``: one substitution + one insertion = 2 errors) or a
    **merge** of two words (``carte vitale`` -> ``cartevitale``: 2 errors).

WER counts substitutions + deletions + insertions over the reference words, so the sentence's error
budget is spent exactly (an operation costing 2 is skipped when 1 is left). Deterministic for a seed.
"""

from __future__ import annotations

import random
import re
import unicodedata

__all__ = ["corrupt", "normalise_written", "word_error_rate"]

_HOMOPHONES = [
    ("et", "est", "ai"),
    ("a", "à", "as"),
    ("ces", "ses", "c'est", "sait"),
    ("son", "sont"),
    ("on", "ont"),
    ("mais", "mes", "mai", "met"),
    ("ou", "où", "août"),
    ("la", "là", "l'a"),
    ("sans", "cent", "sang", "s'en"),
    ("peu", "peut", "peux"),
    ("quand", "qu'en", "camp"),
    ("si", "six", "scie"),
    ("temps", "tant", "t'en"),
    ("vingt", "vin", "vain"),
    ("fois", "foie", "foi"),
    ("mère", "maire", "mer"),
    ("cour", "cours", "court"),
    ("du", "dû"),
    ("leur", "leurs", "l'heure"),
    ("dans", "d'en", "dent"),
    ("vers", "vert", "verre"),
    ("pris", "prix"),
    ("carte", "quarte"),
    ("tout", "tous", "toux"),
    ("plus", "plu"),
    ("mon", "m'ont"),
    ("ma", "m'a"),
    ("ta", "t'a"),
    ("sa", "ça"),
    ("ce", "se"),
    ("je", "j'"),
]
_HOMOPHONE_OF = {w: [x for x in group if x != w] for group in _HOMOPHONES for w in group}
_DOMAIN = {
    "vitale": ["vital", "vitalle"],
    "ameli": ["amélie", "a mélie"],
    "ald": ["a l d", "à elle dé"],
    "ij": ["i j", "il j"],
    "sécu": ["sécurité", "sec u"],
    "cpam": ["c pam", "cépame"],
    "c2s": ["c deux s", "cédeuxesse"],
    "ame": ["âme", "a m e"],
    "rib": ["rhib", "r i b"],
    "kiné": ["qui né", "kinée"],
    "ordonnance": ["ordonnances", "hors donnance"],
    "remboursement": ["remboursements", "rembourse ment"],
    "indemnités": ["indemnité", "indemnisé"],
    "arrêt": ["arrêté", "arrê"],
    "mutuelle": ["mutuel", "mu tuelle"],
}
# spelling by sound: (pattern, replacement), applied once at a random matching place
_SOUNDS = [
    ("ph", "f"),
    ("qu", "k"),
    ("eau", "o"),
    ("au", "o"),
    ("ai", "è"),
    ("è", "ai"),
    ("é", "er"),
    ("er", "é"),
    ("ez", "é"),
    ("ais", "ait"),
    ("ait", "é"),
    ("an", "en"),
    ("en", "an"),
    ("ain", "in"),
    ("ein", "in"),
    ("tion", "sion"),
    ("ss", "s"),
    ("ll", "l"),
    ("mm", "m"),
    ("nn", "n"),
    ("tt", "t"),
    ("rr", "r"),
    ("pp", "p"),
    ("ç", "ss"),
    ("gn", "ni"),
    ("c", "k"),
    ("s", ""),  # a final silent s, heard or not
    ("t", ""),
]
_UNITS = "zéro un deux trois quatre cinq six sept huit neuf dix onze douze treize quatorze quinze seize".split()
_TENS = {20: "vingt", 30: "trente", 40: "quarante", 50: "cinquante", 60: "soixante"}
_NUMBER = re.compile(r"\b\d+\b")


def _in_words(n: int) -> str:
    if n < len(_UNITS):
        return _UNITS[n]
    if n < 70 and n // 10 * 10 in _TENS:
        tens, unit = _TENS[n // 10 * 10], n % 10
        return tens if unit == 0 else f"{tens} et un" if unit == 1 else f"{tens}-{_UNITS[unit]}"
    if n == 100:
        return "cent"
    return str(n)


_WORD_NUMBER = {w: str(i) for i, w in enumerate(_UNITS)} | {v: str(k) for k, v in _TENS.items()} | {"cent": "100"}


def normalise_written(text: str) -> str:
    """Lowercase, punctuation removed (apostrophes kept), spaces collapsed: a transcript without punctuation."""
    t = unicodedata.normalize("NFC", text.lower().replace("\u2019", "'"))
    t = re.sub(r"[^\w' -]+", " ", t).replace(" - ", " ")
    return " ".join(t.split())


def _substitute(word: str, rng: random.Random) -> str:
    if word in _DOMAIN:
        return rng.choice(_DOMAIN[word])
    if word in _HOMOPHONE_OF:
        return rng.choice(_HOMOPHONE_OF[word])
    places = [(a, b, m.start()) for a, b in _SOUNDS for m in re.finditer(re.escape(a), word)]
    places = [(a, b, i) for a, b, i in places if b or i + len(a) == len(word)]  # drop only a final letter
    if places:
        a, b, i = rng.choice(places)
        out = word[:i] + b + word[i + len(a) :]
        if out and out != word:
            return out
    return word + "s" if not word.endswith("s") else word[:-1]


def _split(word: str, rng: random.Random) -> list[str]:
    cut = rng.randint(2, len(word) - 2)
    return [word[:cut], word[cut:]]


def corrupt(text: str, wer: float, rng: random.Random) -> str:
    """``text`` as a recogniser might write it with about ``wer`` word errors (see module docstring)."""
    words = normalise_written(text).split()
    # numbers: digits to words or words to digits (a recogniser does either; not counted as errors)
    words = [
        _in_words(int(w)) if w.isdigit() and rng.random() < 0.5 else _WORD_NUMBER.get(w, w)
        if rng.random() < 0.3
        else w
        for w in words
    ]
    words = " ".join(words).split()
    budget = round(wer * len(words))
    if budget <= 0 or not words:
        return " ".join(words)
    out: list[list[str]] = [[w] for w in words]
    positions = list(range(len(words)))
    rng.shuffle(positions)
    merged: set[int] = set()
    for i in positions:
        if budget <= 0:
            break
        if i in merged:
            continue
        w = words[i]
        r = rng.random()
        if budget >= 2 and r < 0.1 and len(w) >= 6:  # split: 2 errors
            out[i] = _split(w, rng)
            budget -= 2
        elif budget >= 2 and r < 0.2 and i + 1 < len(words) and i + 1 not in merged:  # merge: 2 errors
            out[i] = [w + words[i + 1]]
            out[i + 1] = []
            merged.update((i, i + 1))
            budget -= 2
        elif r < 0.45:  # deletion
            out[i] = []
            budget -= 1
        else:
            out[i] = [_substitute(w, rng)]
            budget -= 1
    return " ".join(w for ws in out for w in ws)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Levenshtein distance over words / reference words (both normalised as written transcripts)."""
    ref, hyp = normalise_written(reference).split(), normalise_written(hypothesis).split()
    if not ref:
        return float(bool(hyp))
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / len(ref)
