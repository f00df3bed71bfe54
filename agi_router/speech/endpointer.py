"""Endpointing: where the caller's sentence starts and ends, with webrtcvad, sans I/O.

Feed it 10/20/30 ms frames of 8 kHz 16-bit audio with their arrival time; call ``tick`` with the
wall clock when no frame arrives (phones and Asterisk forward nothing while the caller is silent,
so a gap longer than ``gap_as_silence_ms`` counts as silence). It returns events:

* :class:`SpeechStart` once ``onset_ms`` of the last ``onset_window_ms`` were voiced (barge-in
  point: stop the prompt);
* :class:`SpeechPause` when the trailing silence reaches ``pause_ms``: the audio so far, for a
  *speculative* recognition that runs during the rest of the hangover;
* :class:`SpeechResumed` if the caller speaks again after a pause (drop the speculative result);
* :class:`SpeechEnd` after ``hangover_ms`` of silence, with the utterance (``pre_roll_ms`` of audio
  before the onset included, trailing silence trimmed to ``tail_ms``) — or earlier, when the caller asks
  for it with :meth:`Endpointer.end_now` during a pause (the words so far are a complete answer:
  :mod:`~agi_router.speech.turn`); :meth:`Endpointer.extend` lengthens this pause's hangover instead
  (the caller stopped on "et", "euh");
* :class:`NoInput` if no speech starts within ``no_input_ms``;
* :class:`MaxLength` when an utterance reaches ``max_utterance_ms`` (it ends there).

After SpeechEnd, NoInput or MaxLength the endpointer is finished; make a new one per question.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import webrtcvad

__all__ = [
    "Endpointer",
    "EndpointerConfig",
    "MaxLength",
    "NoInput",
    "SpeechEnd",
    "SpeechEvent",
    "SpeechPause",
    "SpeechResumed",
    "SpeechStart",
]

Pcm = npt.NDArray[np.int16]
SAMPLE_RATE = 8000


@dataclass(frozen=True, slots=True)
class EndpointerConfig:
    frame_ms: int = 20  # webrtcvad accepts 10, 20 or 30 ms
    aggressiveness: int = 2  # 0..3; 2-3 for telephone audio
    pre_roll_ms: int = 300
    onset_window_ms: int = 200
    onset_ms: int = 120  # voiced audio within the window that makes an onset
    pause_ms: int = 200  # trailing silence that triggers speculative recognition
    hangover_ms: int = 550  # trailing silence that ends the utterance
    tail_ms: int = 100  # silence kept after the last voiced frame
    no_input_ms: int = 5000
    max_utterance_ms: int = 10000
    gap_as_silence_ms: int = 120
    # A phone that sends RTP while its caller is silent (a carrier trunk, most G.711 phones) and suddenly sends
    # nothing is being held up by the network, not falling silent: its gaps count as silence only beyond
    # stall_ms, and frames that arrive late replace the silence counted meanwhile (the recogniser gets the
    # same audio). A stream is "continuous" once it delivered continuous_after_ms of silent frames before the
    # caller spoke (during the prompt), until it skips timestamps (DTX). A phone that sends nothing while its
    # caller is silent never is: its gaps are silence at once, as before (no stall allowance to pay).
    stall_ms: int = 400
    continuous_after_ms: int = 300

    def __post_init__(self) -> None:
        if self.frame_ms not in (10, 20, 30):
            raise ValueError(f"frame_ms must be 10, 20 or 30 (webrtcvad), got {self.frame_ms}")
        if not 0 <= self.aggressiveness <= 3:
            raise ValueError(f"aggressiveness must be 0..3, got {self.aggressiveness}")
        if not 0 < self.onset_ms <= self.onset_window_ms:
            raise ValueError("onset_ms must be > 0 and <= onset_window_ms")
        if not 0 < self.pause_ms < self.hangover_ms:
            raise ValueError("pause_ms must be > 0 and shorter than hangover_ms")
        if self.tail_ms > self.hangover_ms:
            raise ValueError("tail_ms must not exceed hangover_ms")


@dataclass(frozen=True, slots=True)
class SpeechEvent:
    at_ms: float  # stream time of the event


@dataclass(frozen=True, slots=True)
class SpeechStart(SpeechEvent):
    onset_ms: float  # stream time of the first voiced frame


@dataclass(frozen=True, slots=True)
class SpeechPause(SpeechEvent):
    audio: Pcm


@dataclass(frozen=True, slots=True)
class SpeechResumed(SpeechEvent):
    pass


@dataclass(frozen=True, slots=True)
class SpeechEnd(SpeechEvent):
    audio: Pcm
    onset_ms: float
    end_ms: float  # stream time of the end of the last voiced frame


@dataclass(frozen=True, slots=True)
class NoInput(SpeechEvent):
    pass


@dataclass(frozen=True, slots=True)
class MaxLength(SpeechEvent):
    audio: Pcm
    onset_ms: float


class Endpointer:
    def __init__(self, config: EndpointerConfig | None = None, *, start_ms: float = 0.0) -> None:
        self.config = cfg = config or EndpointerConfig()
        self._vad = webrtcvad.Vad(cfg.aggressiveness)
        self.frame_samples = SAMPLE_RATE * cfg.frame_ms // 1000
        self._start_ms = start_ms
        self._clock_ms = start_ms  # end of the audio (or silence) accounted for so far
        # audio before the onset decision: the pre-roll plus the onset window itself
        self._pre: deque[tuple[Pcm, bool]] = deque(maxlen=(cfg.pre_roll_ms + cfg.onset_window_ms) // cfg.frame_ms)
        self._window: deque[bool] = deque(maxlen=max(1, cfg.onset_window_ms // cfg.frame_ms))
        self._frames: list[Pcm] = []
        self._triggered = False
        self._onset_ms = 0.0
        self._last_voiced_end_ms = 0.0
        self._silence_ms = 0.0
        self._paused = False
        self._extra_ms = 0.0  # this pause's hangover extension (extend()); reset when the caller speaks again
        self._quiet_received_ms = 0.0  # silent frames received before the onset (continuous stream evidence)
        self._dtx = False  # the stream skipped timestamps once: its gaps are silence
        self._provisional = 0  # silent frames counted by tick() since the last frame received
        self._voiced_in_utterance = 0
        self.done = False
        self.frames_seen = 0
        self.voiced_frames = 0

    # -- input -------------------------------------------------------------------------------------

    def feed(self, frame: Pcm, at_ms: float | None = None) -> list[SpeechEvent]:
        """One frame of ``frame_ms``; ``at_ms`` its arrival (stream) time, for wall-clock gaps."""
        if self.done:
            return []
        if len(frame) != self.frame_samples:
            raise ValueError(
                f"frame of {len(frame)} samples; expected {self.frame_samples} ({self.config.frame_ms} ms)"
            )
        events: list[SpeechEvent] = []
        if at_ms is not None and self._provisional and at_ms < self._clock_ms - self.config.frame_ms / 2:
            self._take_back()  # held by the network: the silence counted meanwhile was not silence
        self._provisional = 0
        if at_ms is not None and at_ms - self._clock_ms > self.config.gap_as_silence_ms:
            self._dtx = True  # the phone stopped sending: discontinuous transmission
            events += self._silence(at_ms - self._clock_ms)
            if self.done:
                return events
        voiced = self._vad.is_speech(frame.tobytes(), SAMPLE_RATE)
        if not self._triggered and not voiced:
            self._quiet_received_ms += self.config.frame_ms
        self.frames_seen += 1
        self.voiced_frames += voiced
        events += self._frame(frame, voiced)
        return events

    @property
    def continuous(self) -> bool:
        """The phone sends while its caller is silent: a gap is the network, not silence (up to stall_ms)."""
        return not self._dtx and self._quiet_received_ms >= self.config.continuous_after_ms

    def tick(self, now_ms: float) -> list[SpeechEvent]:
        """Wall clock with no frame: a gap over ``gap_as_silence_ms`` is silence (on a continuous stream,
        only what lasts beyond ``stall_ms``, provisionally: frames arriving late take it back)."""
        if self.continuous:
            now_ms -= self.config.stall_ms
        if self.done or now_ms - self._clock_ms <= self.config.gap_as_silence_ms:
            return []
        before = self._clock_ms
        events = self._silence(now_ms - self._clock_ms)
        if self.continuous:
            self._provisional += int((self._clock_ms - before) // self.config.frame_ms)
        return events

    def _take_back(self) -> None:
        """Undo the silent frames tick() counted since the last frame (a late frame arrived: a stall)."""
        cfg = self.config
        # all of it: the stream's timestamps go on where they stopped (a frame's arrival-anchored time is off by
        # its jitter, which must not leave made-up silence behind); packets the network lost stay missing
        n = self._provisional
        if self._triggered:
            del self._frames[len(self._frames) - n :]
            self._silence_ms = max(0.0, self._silence_ms - n * cfg.frame_ms)
        self._clock_ms -= n * cfg.frame_ms
        self._provisional = 0

    @property
    def paused(self) -> bool:
        """In a pause of an utterance (after SpeechPause, before SpeechResumed/SpeechEnd)."""
        return self._triggered and self._paused and not self.done

    def end_now(self) -> SpeechEnd | None:
        """End the utterance at this pause (the turn is complete): the SpeechEnd the hangover would have
        given, earlier. None when not in a pause."""
        if not self.paused:
            return None
        self.done = True
        return SpeechEnd(self._clock_ms, self._utterance(), self._onset_ms, self._last_voiced_end_ms)

    def extend(self, extra_ms: float) -> None:
        """Wait ``extra_ms`` more than ``hangover_ms`` before ending this pause (the sentence goes on)."""
        if self.paused:
            self._extra_ms = max(self._extra_ms, extra_ms)

    # -- state machine -------------------------------------------------------------------------------

    def _silence(self, duration_ms: float) -> list[SpeechEvent]:
        """Account for a stretch with no audio as silent frames (not stored as audio but as zeros
        in the utterance while triggered, so the timing of the recording stays true)."""
        cfg = self.config
        n = int(duration_ms // cfg.frame_ms)
        events: list[SpeechEvent] = []
        zero = np.zeros(self.frame_samples, dtype=np.int16)
        for _ in range(n):
            events += self._frame(zero, False)
            if self.done:
                break
        return events

    def _frame(self, frame: Pcm, voiced: bool) -> list[SpeechEvent]:
        cfg = self.config
        self._clock_ms += cfg.frame_ms
        events: list[SpeechEvent] = []
        if not self._triggered:
            self._pre.append((frame, voiced))
            self._window.append(voiced)
            if sum(self._window) * cfg.frame_ms >= cfg.onset_ms:
                self._triggered = True
                # onset = first voiced frame of the window
                frames_back = len(self._window) - list(self._window).index(True)
                self._onset_ms = self._clock_ms - frames_back * cfg.frame_ms
                keep = (frames_back * cfg.frame_ms + cfg.pre_roll_ms) // cfg.frame_ms
                self._frames = [f for f, _ in list(self._pre)[-keep:]]
                self._pre.clear()
                self._last_voiced_end_ms = self._clock_ms
                self._voiced_in_utterance = sum(self._window)
                events.append(SpeechStart(self._clock_ms, self._onset_ms))
            elif self._clock_ms - self._start_ms >= cfg.no_input_ms:
                self.done = True
                events.append(NoInput(self._clock_ms))
            return events
        self._frames.append(frame)
        if voiced:
            self._voiced_in_utterance += 1
            self._last_voiced_end_ms = self._clock_ms
            self._silence_ms = 0.0
            self._extra_ms = 0.0
            if self._paused:
                self._paused = False
                events.append(SpeechResumed(self._clock_ms))
        else:
            self._silence_ms += cfg.frame_ms
            if not self._paused and self._silence_ms >= cfg.pause_ms:
                self._paused = True
                events.append(SpeechPause(self._clock_ms, self._utterance()))
            if self._silence_ms >= cfg.hangover_ms + self._extra_ms:
                self.done = True
                events.append(SpeechEnd(self._clock_ms, self._utterance(), self._onset_ms, self._last_voiced_end_ms))
                return events
        if self._clock_ms - self._onset_ms >= cfg.max_utterance_ms:
            self.done = True
            events.append(MaxLength(self._clock_ms, self._utterance(), self._onset_ms))
        return events

    def _utterance(self) -> Pcm:
        """Audio from pre-roll to the last voiced frame plus ``tail_ms``."""
        cfg = self.config
        keep_after = int(min(self._silence_ms, cfg.tail_ms) // cfg.frame_ms)
        drop = int(self._silence_ms // cfg.frame_ms) - keep_after
        frames = self._frames[: len(self._frames) - drop] if drop > 0 else self._frames
        if not frames:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(frames)
