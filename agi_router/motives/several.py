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


# A clause that is a consequence or a complement of the one before, not a new request: "et je n'ai (toujours)
# rien reçu", "et je suis moins bien remboursé", "et ça fait un mois", "depuis trois semaines"... (accent-free)
_COMPLEMENT = re.compile(
    r"^(?:mais |et |donc |du coup )*(?:"
    r"(?:je n ai|j ai|on m a|vous m avez|vous ne m avez|on ne m a|ils m ont|ils ne m ont)"
    r" (?:toujours |encore |jamais )?"
    r"(?:rien|pas|jamais|toujours pas|que|seulement)\b"
    r"|(?:je suis|j ai ete|c est) (?:moins|mal|pas|plus|toujours pas|jamais|pas bien|moins bien) ?\w*"
    r"|(?:toujours|encore) (?:rien|pas)|rien (?:recu|vu|touche|eu)|pas de nouvelles?"
    r"|(?:ca|cela) fait|depuis|il y a|y a|c etait|c est (?:normal|long|toujours|bizarre)"
    r"|je (?:comprends|sais) pas pourquoi|personne ne|ca ne|ca n a|c est reste"
    r")"
)
MAX_COMPLEMENT_WORDS = 4  # a longer clause may carry a request of its own ("je n'ai pas été payé de mes IJ ...")


def _is_complement(clause: str) -> bool:
    return bool(_COMPLEMENT.match(clause)) and _content(clause) <= MAX_COMPLEMENT_WORDS


def split_clauses(text: str) -> list[str]:
    """The clauses of ``text`` (accent-free, lowercase); one element when it does not split. A clause
    that only completes the one before (:data:`_COMPLEMENT`) stays joined to it."""
    pieces = [p.strip() for p in _SPLIT.split(_fold(text))]
    clauses: list[str] = []
    pending = ""
    for p in pieces:
        if not p:
            continue
        if clauses and not pending and _is_complement(p):
            clauses[-1] = f"{clauses[-1]} {p}"
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
