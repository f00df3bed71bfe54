"""The recall-first "a person, please" matcher the speech path checks before the motive classifier."""

from __future__ import annotations

import numpy as np
import pytest

from agi_router.motives.catalogue import Catalogue
from agi_router.motives.classifier import MotiveClassifier
from agi_router.motives.human import asks_for_person
from agi_router.motives.understanding import Understander
from agi_router.speech.pipeline import TranscribeThenUnderstand

# written for this test, never used to tune the patterns' words beyond the issue's examples
ASKS = [
    "conseiller",
    "Conseillère s'il vous plaît",
    "je voudrais parler à quelqu'un",
    "passez-moi un humain",
    "je veux parler à une vraie personne",
    "un agent svp",
    "je veux pas un robot",
    "est-ce que je peux parler avec quelqu'un de chez vous",
    "une opératrice",
]
MOTIVES = [
    "je voudrais commander une carte vitale",
    "mon remboursement de kiné n'est pas arrivé",
    "c'est pour mon arrêt de travail",
    "j'ai perdu ma carte",
    "je n'ai personne pour m'aider avec les papiers",  # "personne" alone is not a request for one
]


@pytest.mark.parametrize("text", ASKS)
def test_requests_for_a_person_are_heard(text: str) -> None:
    assert asks_for_person(text)


@pytest.mark.parametrize("text", MOTIVES)
def test_motives_are_not_taken_for_a_request(text: str) -> None:
    assert not asks_for_person(text)


class _Transcript:
    def __init__(self, text: str) -> None:
        self.text, self.audio_s, self.latency_s, self.language = text, 1.0, 0.1, "fr"


class _Recognizer:
    def __init__(self, text: str) -> None:
        self.text = text

    async def transcribe(self, pcm: np.ndarray) -> _Transcript:
        return _Transcript(self.text)


async def test_the_speech_path_reports_a_person_whatever_else_is_said(mini_catalogue: Catalogue) -> None:
    understander = Understander(mini_catalogue, MotiveClassifier(mini_catalogue))
    said = "euh ma carte vitale est perdue, une conseillère s'il vous plaît"
    pipeline = TranscribeThenUnderstand(_Recognizer(said), understander)  # type: ignore[arg-type]
    r = await pipeline.recognize(np.zeros(8000, dtype=np.int16))
    assert r.human_requested and r.motive_id is None and r.confidence == 1.0
    assert r.understanding is not None and r.understanding.level == "person"
    assert r.facts().human_requested
