"""The recall-first "a person, please" matcher the speech path checks before the motive classifier."""

from __future__ import annotations

import numpy as np
import pytest

from agi_router.motives.human import asks_for_person
from agi_router.speech.pipeline import TranscribeThenClassify

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
        self.text, self.audio_s, self.latency_s = text, 1.0, 0.1


class _Recognizer:
    def __init__(self, text: str) -> None:
        self.text = text

    async def transcribe(self, pcm: np.ndarray) -> _Transcript:
        return _Transcript(self.text)


class _NeverCalled:
    def classify(self, text: str) -> object:
        raise AssertionError("the classifier must not be asked when a person was requested")


async def test_the_speech_path_reports_a_person_before_classifying() -> None:
    pipeline = TranscribeThenClassify(_Recognizer("euh une conseillère s'il vous plaît"), _NeverCalled())  # type: ignore[arg-type]
    r = await pipeline.recognize(np.zeros(8000, dtype=np.int16))
    assert r.human_requested and r.motive_id is None and r.confidence == 1.0
