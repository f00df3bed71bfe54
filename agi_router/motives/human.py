"""Did the caller ask for a person? A recall-first matcher, checked before the motive classifier.

The prompts tell callers they can say "conseiller" at any time, so the speech path must honour it even
when the classifier would hesitate ("conseillère", "un humain", "quelqu'un de chez vous"). It errs on the
side of a person: a false positive costs a queue slot, a false negative costs a caller who asked for a
human and did not get one. Matched on the normalised transcript (lowercase, no accents, elisions split).
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["asks_for_person", "fold"]

_PATTERNS = re.compile(
    r"\b("
    r"conseill(?:er|ere|ers|eres)"
    r"|quelqu ?un(?: de chez vous| d ici)?"
    r"|(?:un|une|des) (?:humain|humaine|vraie personne|personne physique|agent|operat(?:eur|rice)|interlocut\w+)"
    r"|(?:parler|causer|discuter) (?:a|avec) (?:un|une|quelqu|le|la|des) ?\w*"
    r"|(?:pas|plus) (?:un|une|de) (?:robot|machine|repondeur)"
    r"|un etre humain|personne en chair"
    r"|standard(?:iste)?"
    r")\b"
)
_NOT_WORD = re.compile(r"[^a-z0-9 ]+")


def fold(text: str) -> str:
    """Lowercase, accents removed, apostrophes and punctuation to single spaces: what the matchers read."""
    t = unicodedata.normalize("NFKD", text.lower().replace("\u2019", "'"))
    t = "".join(c for c in t if not unicodedata.combining(c)).replace("'", " ")
    return " ".join(_NOT_WORD.sub(" ", t).split())


def asks_for_person(text: str) -> bool:
    """True when the transcript asks for a person (recall first)."""
    return bool(_PATTERNS.search(fold(text)))
