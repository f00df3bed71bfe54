"""Several requests in one sentence: split it into clauses, each classified on its own.

"J'ai perdu ma carte Vitale et aussi je voulais savoir où en est mon remboursement" is two requests; a
classifier that must pick one label picks one and the other is lost, or picks the "several requests"
label only when the caller says so. So several requests are detected as a capability: the sentence is
cut at coordinators and enumeration words ("et aussi", "et puis", "deux choses", "par ailleurs", "ensuite",
punctuation, plain "et"), clauses too short to carry a request are joined to their neighbour, and
:class:`~agi_router.motives.understanding.Understander` calls it *several* when two clauses give distinct
confident answers. Splitting is cheap and errs on cutting too much: a clause with no confident answer
simply does not count.
"""

from __future__ import annotations

import re
import unicodedata

from .classifier import tokens

__all__ = ["split_clauses"]

# accent-free, lowercase; longest first so that "et aussi" wins over "et"
_CONNECTORS = sorted(
    """et aussi|et puis|et ensuite|et egalement|et en plus|et autre chose|et par ailleurs|et d autre part|
    et deuxiemement|et sinon|et la deuxieme|et l autre|ainsi que|par ailleurs|d autre part|d une part|
    autre chose|en plus|aussi|egalement|ensuite|puis|deuxiemement|premierement|
    deuxieme chose|deuxieme question|premiere chose|premiere question|deux choses|deux questions|
    plusieurs choses|plusieurs questions|et""".replace("\n", "").split("|"),
    key=len,
    reverse=True,
)
_SPLIT = re.compile(r"[.;!?,:]+|\b(?:" + "|".join(re.escape(c.strip()) for c in _CONNECTORS) + r")\b")
MIN_WORDS = 2  # content words (fillers and stop words aside) a clause needs to stand alone


def _fold(text: str) -> str:
    t = unicodedata.normalize("NFKD", text.lower().replace("\u2019", "'"))
    return "".join(c for c in t if not unicodedata.combining(c)).replace("'", " ")


_STOP = frozenset(
    """je j tu il elle on nous vous ils elles me m te t se s le la les l un une des du de d a au aux en y
    ce c ca cela que qu qui quoi est suis ai as avez avons ont etre avoir pour par sur dans avec pas ne n
    mon ma mes ton ta tes son sa ses notre votre nos vos leur leurs voudrai voulai veux voudrait savoir
    appelle appel demande question chose aussi""".split()
)


def _content(clause: str) -> int:
    return sum(1 for w in tokens(clause) if w not in _STOP)


def split_clauses(text: str) -> list[str]:
    """The clauses of ``text`` (accent-free, lowercase); one element when it does not split."""
    pieces = [p.strip() for p in _SPLIT.split(_fold(text))]
    clauses: list[str] = []
    pending = ""
    for p in pieces:
        if not p:
            continue
        cur = f"{pending} {p}".strip()
        if _content(cur) >= MIN_WORDS:
            clauses.append(cur)
            pending = ""
        else:
            pending = cur
    if pending:
        if clauses:
            clauses[-1] = f"{clauses[-1]} {pending}"
        else:
            clauses.append(pending)
    return clauses or [_fold(text).strip()]
