"""Language identification for the ``other_language`` safeguard, on real human recordings: the same four
prompts read by a French (fr-CA) and an English (en-US) studio speaker, through the product's recogniser
(``transcribe``, as a call does). Figures on 40 clips per language, six languages: README / benchmarks."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agi_router.speech.evaluation import read_wav
from agi_router.speech.recognizer import WhisperRecognizer

FR = Path("/usr/share/asterisk/sounds/fr_CA_f_June")
EN = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
NAMES = ["agent-pass", "call-fwd-unconditional", "conf-onlyperson", "conf-getpin"]  # 2.3-4.9 s each
pytestmark = pytest.mark.skipif(
    not all((d / f"{n}.wav").is_file() for d in (FR, EN) for n in NAMES),
    reason="needs Debian's asterisk-core-sounds-fr-wav and asterisk-core-sounds-en-wav (scripts/test-debs.txt)",
)


def _heard(rec: WhisperRecognizer, folder: Path) -> list[str]:
    async def run() -> list[str]:
        return [(await rec.transcribe(read_wav(folder / f"{n}.wav"))).language for n in NAMES]

    return asyncio.run(run())


def await_transcribe(rec: WhisperRecognizer, path: Path) -> str:
    return asyncio.run(rec.transcribe(read_wav(path))).language


def test_french_is_heard_as_french_and_english_as_another_language(whisper_dir: Path) -> None:
    rec = WhisperRecognizer(whisper_dir)
    try:
        assert _heard(rec, FR) == ["fr"] * len(NAMES)
        assert _heard(rec, EN) == ["en"] * len(NAMES)
        # a 0.9 s "au revoir" / "goodbye" is too short to tell: not identified, nothing to act on
        short = [(await_transcribe(rec, d / "vm-goodbye.wav")) for d in (FR, EN)]
        assert short == ["fr", "fr"]
        # the identification shares the transcription's encoder pass and does not change the text
        clip = read_wav(FR / "vm-goodbye.wav")
        assert rec.decode_batch([clip])[0][0] == rec._decode(clip)[0]
    finally:
        rec.close()


def test_without_identification_the_line_language_is_reported(whisper_dir: Path) -> None:
    rec = WhisperRecognizer(whisper_dir, detect_language=False)
    try:
        assert _heard(rec, EN) == ["fr"] * len(NAMES)  # not identified: nothing to act on
    finally:
        rec.close()


def test_the_threshold_is_a_probability(whisper_dir: Path) -> None:
    with pytest.raises(ValueError, match="other_language_below"):
        WhisperRecognizer(whisper_dir, other_language_below=1.5)
