"""How busy a recogniser is: utterances in flight and the recent decode time (the admission rule's input).

Its own module so that both recognisers (:mod:`.recognizer`'s threads, :mod:`.capacity`'s processes) use it
without importing each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["RecognizerLoad"]


@dataclass
class RecognizerLoad:
    """In-flight utterances and the recent decode time of a recogniser with ``workers`` parallel decoders,
    each decoding up to ``batch`` utterances per pass (:mod:`~agi_router.speech.batching`)."""

    workers: int
    batch: int = 1
    inflight: int = 0
    decode_s: float = 0.35  # moving average of the pass an utterance waited for (a cold start: typical)
    busy_s: float = 0.0  # total decoder time: rate(busy_s) / workers is the busy share
    decoded: int = 0
    alpha: float = 0.2

    def begin(self) -> None:
        self.inflight += 1

    def end(self, decode_s: float | None, share: float = 1.0) -> None:
        """One utterance done; ``decode_s`` the pass it was in, ``share`` its part of that pass (1/batch)."""
        self.inflight = max(0, self.inflight - 1)
        if decode_s is not None and math.isfinite(decode_s) and decode_s >= 0:
            self.decode_s += self.alpha * (decode_s - self.decode_s)
            self.busy_s += decode_s * share
            self.decoded += 1

    def expected_s(self) -> float:
        """How long a new utterance would take from now: the rounds of passes ahead of it, then its own."""
        rounds = math.ceil((self.inflight + 1) / (self.workers * self.batch))
        return rounds * self.decode_s
