"""Speech: turning a caller's utterance into text, offline.

* :mod:`agi_router.speech.model`: the Whisper base model, joined from two PyPI wheels into a checked
  directory (or an operator's own CTranslate2 directory);
* :mod:`agi_router.speech.recognizer`: the :class:`Recognizer` protocol (``await transcribe(pcm)`` with
  8 kHz int16 samples -> :class:`Transcript`) and :class:`WhisperRecognizer` (faster-whisper, int8, CPU);
* :mod:`agi_router.speech.endpointer`: where an utterance starts and ends (webrtcvad).

Importing this package does not import faster-whisper: only constructing a WhisperRecognizer does.
"""

from __future__ import annotations

from agi_router.speech.model import (
    WHISPER_BASE_SHA256,
    WHISPER_BASE_SIZE,
    check_model_dir,
    default_model_dir,
    ensure_whisper_base,
    find_parts,
    resolve_model_dir,
)
from agi_router.speech.recognizer import (
    Recognizer,
    Transcript,
    WhisperRecognizer,
    drop_repeats,
    normalize_text,
    token_cap,
)

__all__ = [
    "WHISPER_BASE_SHA256",
    "WHISPER_BASE_SIZE",
    "Recognizer",
    "Transcript",
    "WhisperRecognizer",
    "check_model_dir",
    "default_model_dir",
    "drop_repeats",
    "ensure_whisper_base",
    "find_parts",
    "normalize_text",
    "resolve_model_dir",
    "token_cap",
]
