"""webrtcvad endpointing on real (synthetic) French speech: boundaries, gaps, pauses, limits."""

from __future__ import annotations

import numpy as np
import pytest

from agi_router.speech.endpointer import (
    Endpointer,
    EndpointerConfig,
    MaxLength,
    NoInput,
    SpeechEnd,
    SpeechEvent,
    SpeechPause,
    SpeechResumed,
    SpeechStart,
)
from tests.audio import frames, needs_tts, noise, silence, speak, speech_bounds_ms

SENTENCE = "bonjour je voudrais une attestation de droits s'il vous plaît"


def run(ep: Endpointer, pcm: np.ndarray, *, drop: set[int] | None = None) -> list[SpeechEvent]:
    events: list[SpeechEvent] = []
    ms = ep.config.frame_ms
    for i, f in enumerate(frames(pcm, ms)):
        if drop and i in drop:
            continue  # not forwarded: the phone sent nothing
        events += ep.feed(f, at_ms=i * ms)
        if ep.done:
            break
    t = len(pcm) / 8
    while not ep.done and t < 60000:
        t += ms
        events += ep.tick(t)
    return events


def first(events: list[SpeechEvent], kind: type) -> SpeechEvent:
    return next(e for e in events if isinstance(e, kind))


@needs_tts
@pytest.mark.parametrize("voice", ["fr+m3", "fr+f2"])
def test_boundaries_on_speech(voice: str) -> None:
    speech = speak(SENTENCE, voice)
    pcm = np.concatenate([silence(1000), speech, silence(1500)])
    true_start, true_end = speech_bounds_ms(pcm)
    cfg = EndpointerConfig()
    events = run(Endpointer(cfg), pcm)
    start = first(events, SpeechStart)
    end = first(events, SpeechEnd)
    assert isinstance(start, SpeechStart) and isinstance(end, SpeechEnd)
    assert abs(start.onset_ms - true_start) <= 60
    assert start.at_ms - true_start <= cfg.onset_window_ms  # barge-in point comes quickly
    assert -100 <= end.end_ms - true_end <= 200
    assert end.at_ms == pytest.approx(end.end_ms + cfg.hangover_ms, abs=cfg.frame_ms)
    # pre-roll kept, trailing silence trimmed to tail_ms
    expected = (end.end_ms + cfg.tail_ms - (end.onset_ms - cfg.pre_roll_ms)) * 8
    assert abs(len(end.audio) - expected) <= 8 * 2 * cfg.frame_ms
    assert isinstance(first(events, SpeechPause), SpeechPause)


@needs_tts
def test_silence_not_forwarded_counts_as_silence() -> None:
    """Asterisk forwards nothing while the caller is silent: the end comes from the wall clock."""
    speech = speak(SENTENCE)
    pcm = np.concatenate([silence(600), speech, silence(2000)])
    _s, true_end = speech_bounds_ms(pcm)
    n_before = 600 // 20
    n_speech = len(frames(np.concatenate([silence(600), speech])))
    drop = set(range(n_before)) | set(range(n_speech, n_speech + 100))
    events = run(Endpointer(), pcm, drop=drop)
    end = first(events, SpeechEnd)
    assert isinstance(end, SpeechEnd)
    assert abs(end.end_ms - true_end) <= 200
    assert end.at_ms - end.end_ms <= 550 + 2 * 20 + 120


@needs_tts
def test_pause_then_resume_is_one_utterance() -> None:
    a = speak("j'ai perdu ma carte vitale")
    b = speak("et je voudrais en commander une nouvelle")
    pcm = np.concatenate([silence(500), a, silence(320), b, silence(1500)])
    events = run(Endpointer(), pcm)
    kinds = [type(e) for e in events]
    assert kinds.count(SpeechStart) == 1 and kinds.count(SpeechEnd) == 1
    assert SpeechPause in kinds and SpeechResumed in kinds
    end = first(events, SpeechEnd)
    assert isinstance(end, SpeechEnd) and len(end.audio) > len(a) + len(b)


def test_no_input() -> None:
    cfg = EndpointerConfig(no_input_ms=2000)
    events = run(Endpointer(cfg), silence(3000))
    assert [type(e) for e in events] == [NoInput]
    assert events[0].at_ms == pytest.approx(2000, abs=20)


def test_no_input_when_nothing_is_forwarded_at_all() -> None:
    ep = Endpointer(EndpointerConfig(no_input_ms=1000))
    events = ep.tick(500) + ep.tick(1100)
    assert [type(e) for e in events] == [NoInput]


@needs_tts
def test_max_length() -> None:
    long_speech = np.concatenate([speak(SENTENCE)] * 4)
    cfg = EndpointerConfig(max_utterance_ms=3000)
    events = run(Endpointer(cfg), np.concatenate([silence(300), long_speech]))
    m = first(events, MaxLength)
    assert isinstance(m, MaxLength)
    assert m.at_ms - m.onset_ms == pytest.approx(3000, abs=20)


def test_noise_is_not_speech_at_aggressiveness_3() -> None:
    events = run(Endpointer(EndpointerConfig(aggressiveness=3, no_input_ms=3000)), noise(3000, 300))
    assert [type(e) for e in events] == [NoInput]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"frame_ms": 25}, "10, 20 or 30"),
        ({"aggressiveness": 4}, "0..3"),
        ({"pause_ms": 600}, "shorter than hangover"),
        ({"onset_ms": 300}, "onset_window"),
    ],
)
def test_config_errors(kw: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EndpointerConfig(**kw)


def test_wrong_frame_size() -> None:
    with pytest.raises(ValueError, match="expected 160"):
        Endpointer().feed(np.zeros(100, dtype=np.int16))


@pytest.mark.parametrize("frame_ms", [10, 30])
@needs_tts
def test_other_frame_sizes(frame_ms: int) -> None:
    pcm = np.concatenate([silence(800), speak(SENTENCE), silence(1500)])
    events = run(Endpointer(EndpointerConfig(frame_ms=frame_ms)), pcm)
    assert isinstance(first(events, SpeechEnd), SpeechEnd)
