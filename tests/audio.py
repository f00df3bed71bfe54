"""Test audio made at test time: espeak-ng French speech at 8 kHz, G.711, noise."""

from __future__ import annotations

import functools
import shutil
import tempfile
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from agi_router.prompts import speak_to_wav

Pcm = npt.NDArray[np.int16]
RATE = 8000


def have_tts() -> bool:
    return bool(shutil.which("espeak-ng") and shutil.which("sox"))


needs_tts = pytest.mark.skipif(
    not have_tts(), reason="needs espeak-ng and sox (scripts/bootstrap.sh test installs them)"
)


@functools.lru_cache(maxsize=256)
def speak(text: str, voice: str = "fr+m3", speed: int = 160) -> Pcm:
    """French speech at 8 kHz, telephone band, as int16 (the product's own espeak-ng + sox pipeline)."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "out.wav"
        speak_to_wav(text, out, voice=voice, speed=speed)
        with wave.open(str(out)) as w:
            return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).copy()


def silence(ms: int) -> Pcm:
    return np.zeros(RATE * ms // 1000, dtype=np.int16)


def noise(ms: int, rms: float, seed: int = 0) -> Pcm:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0, rms, RATE * ms // 1000), -32768, 32767).astype(np.int16)


def frames(pcm: Pcm, frame_ms: int = 20) -> list[Pcm]:
    n = RATE * frame_ms // 1000
    pad = (-len(pcm)) % n
    pcm = np.concatenate([pcm, np.zeros(pad, dtype=np.int16)])
    return [pcm[i : i + n] for i in range(0, len(pcm), n)]


def speech_bounds_ms(pcm: Pcm, threshold: float = 0.02) -> tuple[float, float]:
    """First and last 10 ms block whose RMS exceeds ``threshold`` of full scale: ground truth."""
    block = RATE // 100
    n = len(pcm) // block
    rms = np.sqrt(np.mean(pcm[: n * block].astype(np.float64).reshape(n, block) ** 2, axis=1)) / 32768
    loud = np.nonzero(rms > threshold)[0]
    return float(loud[0] * 10), float((loud[-1] + 1) * 10)


def read_wav(path: Path) -> Pcm:
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (RATE, 1, 2), path
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).copy()


def write_wav(path: Path, pcm: Pcm) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.astype(np.int16).tobytes())
