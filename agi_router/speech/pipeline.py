"""From an utterance to what the router acts on: the recogniser's transcript, then the understander.

This is what the speech capture calls (``MotiveRecognizer``): it runs the recogniser off the event loop
(its own bounded worker pool) and :class:`~agi_router.motives.understanding.Understander` on the
transcript: the same code path as ``agi-router motive classify``. ``reply`` is the confirmation turn's:
a transcript read as yes / no / a person (:mod:`agi_router.motives.replies`).
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

from ..callflow.speech import Recognition
from ..motives.replies import reply_of_text
from ..motives.understanding import Understander
from .recognizer import Recognizer

__all__ = ["TranscribeThenUnderstand"]

log = logging.getLogger(__name__)


class TranscribeThenUnderstand:
    def __init__(self, recognizer: Recognizer, understander: Understander) -> None:
        self.recognizer = recognizer
        self.understander = understander

    async def recognize(self, pcm: npt.NDArray[np.int16]) -> Recognition:
        t = await self.recognizer.transcribe(pcm)
        u = self.understander.understand(t.text)
        log.debug(
            "recognised %.2f s in %.0f ms -> %s %s (%.2f)",
            t.audio_s,
            t.latency_s * 1000,
            u.level.value,
            u.motive_id,
            u.confidence,
        )
        return Recognition.of(u, language=t.language)

    async def reply(self, pcm: npt.NDArray[np.int16]) -> Recognition:
        t = await self.recognizer.transcribe(pcm)
        r = reply_of_text(t.text)
        log.debug("reply %.2f s in %.0f ms -> %r", t.audio_s, t.latency_s * 1000, r.value)
        return Recognition(None, 0.0, None, t.text, human_requested=r.value == "person", reply=r.value)

    def expected_s(self) -> float:
        """How long a new utterance would take to recognise now (0 when the recogniser does not say)."""
        load = getattr(self.recognizer, "load", None)
        return float(load.expected_s()) if load is not None else 0.0

    def busy(self) -> bool:
        """Whether an utterance is being decoded or waits for a decoder (False when the recogniser does not say)."""
        load = getattr(self.recognizer, "load", None)
        return bool(load.inflight) if load is not None else False

    def close(self) -> None:
        close = getattr(self.recognizer, "close", None)
        if close is not None:
            close()
