"""The caller's answer to a confirmation question: yes, no, a person, or not understood.

"Vous appelez pour une carte Vitale perdue ? Dites oui ou non, ou tapez 1 ou 2." The answer is short,
and Whisper on a short answer is either right or invents something unrelated ("Merci.", "Sous-titres
réalisés par ..."), so a small lexicon on the normalised transcript is more robust than a classifier:
an answer with both a yes and a no word ("oui... enfin non") or neither is *not understood*, never
guessed. A request for a person is checked first, as everywhere. DTMF: 1 = yes, 2 = no, 0 = a person.
"""

from __future__ import annotations

import re
from enum import StrEnum

from .human import asks_for_person, fold

__all__ = ["Reply", "reply_of_digit", "reply_of_text"]


class Reply(StrEnum):
    YES = "yes"
    NO = "no"
    PERSON = "person"
    UNKNOWN = ""


_NO = re.compile(
    r"\b(?:non|nan|non non|pas du tout|pas (?:ca|cela|pour ca|exactement|vraiment|tout a fait)|"
    r"c est pas|ce n est pas|n est pas|negatif|aucunement|absolument pas|mais non|pas (?:le bon|la bonne)|"
    r"autre chose|je me suis trompe|erreur)\b"
)
_YES = re.compile(
    r"\b(?:oui|ouais|ouai|ouaip|ui|exactement|tout a fait|c est ca|c est bien ca|c est exact|exact|"
    r"absolument|affirmatif|bien sur|effectivement|parfaitement|voila|d accord|oui oui|yes|correct|"
    r"c est cela|en effet|tout a fait ca)\b"
)


def reply_of_text(text: str) -> Reply:
    """Yes / no / a person from a transcript; :attr:`Reply.UNKNOWN` when unsure."""
    if asks_for_person(text):
        return Reply.PERSON
    t = fold(text)
    no = bool(_NO.search(t))
    # "absolument pas", "pas exactement": the negation wins over its yes word
    yes = bool(_YES.search(_NO.sub(" ", t)))
    if no == yes:
        return Reply.UNKNOWN
    return Reply.NO if no else Reply.YES


def reply_of_digit(digit: str, *, yes: str = "1", no: str = "2", person: str = "0") -> Reply:
    return {yes: Reply.YES, no: Reply.NO, person: Reply.PERSON}.get(digit[:1], Reply.UNKNOWN)
