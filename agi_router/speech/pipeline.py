"""From an utterance to a motive: the recogniser's transcript, then the motive classifier.

This is what the speech capture calls (``MotiveRecognizer``): it runs the recogniser off the
event loop (its own bounded worker pool) and the classifier on the transcript.
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np
import numpy.typing as npt

from ..callflow.speech import Recognition
from ..motives.human import asks_for_person
from .recognizer import Recognizer

__all__ = ["MotiveGuessLike", "TextMotiveClassifier", "TranscribeThenClassify"]

log = logging.getLogger(__name__)


class MotiveGuessLike(Protocol):
    @property
    def motive_id(self) -> str | None: ...

    @property
    def confidence(self) -> float: ...

    @property
    def runner_up(self) -> str | None: ...


class TextMotiveClassifier(Protocol):
    def classify(self, text: str) -> MotiveGuessLike: ...


class TranscribeThenClassify:
    def __init__(self, recognizer: Recognizer, classifier: TextMotiveClassifier) -> None:
        self.recognizer = recognizer
        self.classifier = classifier

    async def recognize(self, pcm: npt.NDArray[np.int16]) -> Recognition:
        t = await self.recognizer.transcribe(pcm)
        if asks_for_person(t.text):  # checked first: "dites conseiller" is promised at every prompt
            log.debug("recognised %.2f s in %.0f ms -> a person asked for", t.audio_s, t.latency_s * 1000)
            return Recognition(None, 1.0, None, t.text, human_requested=True)
        guess = self.classifier.classify(t.text)
        log.debug(
            "recognised %.2f s in %.0f ms -> %s (%.2f)",
            t.audio_s,
            t.latency_s * 1000,
            guess.motive_id,
            guess.confidence,
        )
        return Recognition(guess.motive_id, guess.confidence, guess.runner_up, t.text)

    def close(self) -> None:
        close = getattr(self.recognizer, "close", None)
        if close is not None:
            close()
