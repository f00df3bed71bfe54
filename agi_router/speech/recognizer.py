"""Speech to text for one caller utterance: a small engine protocol and the offline Whisper engine.

:class:`Recognizer` is all the call flow sees: ``await recognizer.transcribe(pcm)`` with the utterance
as 8 kHz int16 samples (what the endpointer hands over) returns a :class:`Transcript`. Another engine
(e.g. Vosk French with an operator-supplied model) only has to provide that one coroutine.

:class:`WhisperRecognizer` runs faster-whisper (CTranslate2, int8, CPU) on a local model directory
(see :mod:`agi_router.speech.model`) with what was measured to work for short telephone utterances:

* 8 kHz -> 16 kHz with a windowed-sinc interpolator in numpy (no scipy);
* a short encoder window (``window_s``, default 6 s instead of Whisper's 30 s): faster-whisper pads
  every window's features to 30 s before the encoder, so the padding is cut off again just before
  ``encode`` (CTranslate2 accepts shorter inputs): on base int8 this takes the encoder from ~1 s to
  well under 0.1 s; longer audio is decoded window after window;
* greedy decoding at temperature 0 only (no fallback re-decodes), no conditioning on previous text,
  no timestamps, no built-in VAD (the endpointer already cut the utterance);
* at most :func:`token_cap` new tokens per window (16 per second + 16), and immediately repeated
  sentences or phrases removed (:func:`drop_repeats`): Whisper sometimes loops on noise;
* inference in a pool of ``workers`` threads, never on the event loop; a caller cancelled while
  waiting for a worker (hang-up) never costs CPU.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import time
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from agi_router.exceptions import ConfigError

from .load import RecognizerLoad

__all__ = [
    "SAMPLE_RATE",
    "Recognizer",
    "Transcript",
    "WhisperRecognizer",
    "drop_repeats",
    "normalize_text",
    "token_cap",
    "upsample_8k_to_16k",
]

Pcm = npt.NDArray[np.int16]
SAMPLE_RATE = 8000
_WHISPER_RATE = 16000
_FRAMES_PER_S = 100  # Whisper's mel hop: 10 ms
_TOKENS_PER_S = 16
_TOKENS_EXTRA = 16
# Whisper's decoder context is 448 tokens; faster-whisper's longest prompt is sot_prev + 223 prompt tokens
# + 4 (sot, language, task, no-timestamps). Prompt + max_new_tokens must fit, or it raises.
_MAX_NEW_TOKENS = 448 - (1 + 223 + 4)


@dataclass(frozen=True, slots=True)
class Transcript:
    """What an engine heard.

    ``avg_logprob`` is the mean token log-probability (token-weighted over windows; ``-inf`` when nothing
    was decoded), ``no_speech_prob`` the engine's probability that there was no speech (the highest over
    windows; 1.0 when every window was judged silent). ``audio_s`` is the utterance's duration,
    ``latency_s`` the wall time of the ``transcribe`` call, waiting for a worker included.
    """

    text: str
    language: str
    avg_logprob: float
    no_speech_prob: float
    audio_s: float
    latency_s: float


class Recognizer(Protocol):
    """A speech-to-text engine. Implementations must not block the event loop."""

    async def transcribe(self, pcm: Pcm) -> Transcript:
        """Transcribe one utterance: mono int16 samples at 8000 Hz."""
        ...


# ---------------------------------------------------------------------------------------------- helpers


def token_cap(audio_s: float, window_s: float) -> int:
    """New tokens allowed per decoded window: 16 per second of audio in the window + 16, within the context.

    faster-whisper applies ``max_new_tokens`` to each window, so the audio counted is at most one window.
    """
    seconds = max(0.0, min(audio_s, window_s))
    return min(math.ceil(_TOKENS_PER_S * seconds) + _TOKENS_EXTRA, _MAX_NEW_TOKENS)


def _half_sample_taps(half_width: int = 16, beta: float = 8.0) -> npt.NDArray[np.float32]:
    """Kaiser-windowed sinc taps interpolating halfway between samples (unit DC gain)."""
    d = np.arange(-half_width + 1, half_width + 1, dtype=np.float64)  # offsets of the input samples used
    t = 0.5 - d  # distance from each of them to the half-sample point
    taps = np.sinc(t) * np.kaiser(2 * half_width, beta)
    taps /= taps.sum()
    return taps[::-1].astype(np.float32)  # reversed: np.convolve flips the kernel


_TAPS = _half_sample_taps()
_TAPS_DELAY = len(_TAPS) // 2


def upsample_8k_to_16k(pcm: Pcm) -> npt.NDArray[np.float32]:
    """8 kHz int16 -> 16 kHz float32 in [-1, 1]: the even samples are the input, the odd ones interpolated."""
    x = pcm.astype(np.float32) / 32768.0
    out = np.empty(2 * len(x), dtype=np.float32)
    out[0::2] = x
    if len(x):
        full = np.convolve(x, _TAPS, mode="full")
        # full[n] = sum_i x[n - i] * taps[i]; the half-sample point after x[k] sits at n = k + half_width
        out[1::2] = full[_TAPS_DELAY : _TAPS_DELAY + len(x)]
    np.clip(out, -1.0, 1.0, out=out)
    return out


_PUNCT_OR_SPACE = re.compile(r"[\W_]+", re.UNICODE)
_CLAUSE = re.compile(r"[^.!?…;,]+[.!?…;,]*|[.!?…;,]+")


def normalize_text(text: str) -> str:
    """Lowercase, accents removed, punctuation to single spaces: the form used to compare words."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _PUNCT_OR_SPACE.sub(" ", bare).strip()


def _clause_parts(clause: str) -> tuple[str, str]:
    body = clause.rstrip(".!?…;, ")
    return body, clause[len(body) :].strip()


def drop_repeats(text: str) -> str:
    """Remove immediately repeated sentences or phrases (Whisper's loops), keeping the first of each run.

    Clauses (split after ``. ! ? … ; ,``) equal to the previous one once normalised are dropped; then a run
    of the same word sequence repeated back to back is kept once when the sequence has 3+ words and is
    repeated at least twice, or has 1-2 words and is repeated at least 3 times ("non non" stays).
    Sequences made only of digits are left alone (a number may repeat digits).
    """
    kept: list[tuple[str, str, str]] = []  # (body, punctuation, key)
    for clause in _CLAUSE.findall(text):
        body, punct = _clause_parts(clause.strip())
        key = normalize_text(body)
        if kept and key and key == kept[-1][2]:
            kept[-1] = (kept[-1][0], punct or kept[-1][1], key)  # the run ends with the last one's punctuation
            continue
        if not key and kept:
            kept[-1] = (kept[-1][0], kept[-1][1] + punct, kept[-1][2])
            continue
        kept.append((body, punct, key))
    words = " ".join(f"{b}{p}" for b, p, _ in kept if b or p).split()
    while True:  # collapsing a run can expose a longer one ("a b a b c a b a b c")
        shorter = _collapse_runs(words)
        if len(shorter) == len(words):
            return " ".join(words)
        words = shorter


def _collapse_runs(words: list[str]) -> list[str]:
    """One pass: at each position the shortest word sequence repeated often enough is kept once."""
    keys = [normalize_text(w) for w in words]
    out: list[str] = []
    i = 0
    while i < len(words):
        for n in range(1, min(12, (len(words) - i) // 2) + 1):
            gram = keys[i : i + n]
            if all(k.isdigit() or not k for k in gram):
                continue
            reps = 1
            while keys[i + reps * n : i + (reps + 1) * n] == gram:
                reps += 1
            if reps >= (2 if n >= 3 else 3):
                last = words[i + (reps - 1) * n : i + reps * n]  # keep the last copy's trailing punctuation
                out.extend(words[i : i + n - 1] + last[-1:])
                i += reps * n
                break
        else:
            out.append(words[i])
            i += 1
    return out


# ---------------------------------------------------------------------------------------------- Whisper


class WhisperRecognizer:
    """faster-whisper on CPU, int8, from a local CTranslate2 directory; never touches the network.

    Construction loads the model (about half a second for base, ~300 MB RSS): do it at start-up, or
    with ``await asyncio.to_thread(WhisperRecognizer, ...)`` from a running loop. ``workers`` utterances
    are decoded at once, each with ``cpu_threads`` threads; ``window_s`` is a whole number of seconds
    (1..30). ``language=None`` lets Whisper detect the language (slower; not advised on 8 kHz audio).

    With ``detect_language`` (and greedy decoding), each utterance of one window or less is also given to
    Whisper's language identifier, on the encoder output the transcription uses (one decoder step: the
    encoder is not run twice): ``Transcript.language`` is then the language *heard*, the line's language
    unless its probability is below ``other_language_below`` (then the most probable one). Utterances
    shorter than ``language_min_s`` are not identified (a "oui", an "allô": too short to tell; measured:
    a 1.1 s French prompt heard as Italian). The text is still decoded in the line's language.
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        workers: int = 1,
        cpu_threads: int = 1,
        beam_size: int = 1,
        window_s: float = 6.0,
        language: str | None = "fr",
        initial_prompt: str | None = None,
        batch: int = 1,
        detect_language: bool = True,
        other_language_below: float = 0.5,
        language_min_s: float = 1.5,
    ) -> None:
        if workers < 1 or cpu_threads < 1 or beam_size < 1 or batch < 1:
            raise ValueError("workers, cpu_threads, beam_size and batch must be >= 1")
        if not (1 <= window_s <= 30 and float(window_s).is_integer()):
            raise ValueError(f"window_s must be a whole number of seconds from 1 to 30, not {window_s}")
        self.model_dir = Path(model_dir)
        self.workers = workers
        self.cpu_threads = cpu_threads
        self.beam_size = beam_size
        self.window_s = float(window_s)
        self.language = language
        self.initial_prompt = initial_prompt
        if not 0.0 <= other_language_below <= 1.0:
            raise ValueError(f"other_language_below must be a probability, not {other_language_below}")
        self.detect_language = detect_language and language is not None
        self.other_language_below = other_language_below
        self.language_min_s = language_min_s
        os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is first imported: it reads it once
        from faster_whisper import WhisperModel  # type: ignore[import-untyped]  # heavy: only when used

        t0 = time.perf_counter()
        try:
            self._model: Any = WhisperModel(
                str(self.model_dir),
                device="cpu",
                compute_type="int8",
                cpu_threads=cpu_threads,
                num_workers=workers,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:  # ctranslate2 / tokenizers refuse the files
            raise ConfigError(
                f"cannot load the Whisper model in {self.model_dir}: {exc}", key="speech.model_dir"
            ) from None
        self.load_s = time.perf_counter() - t0
        if self.window_s < 30:
            self._model.encode = _trimmed_encode(self._model.encode, int(self.window_s) * _FRAMES_PER_S)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="whisper")
        self._closed = False
        from .batching import MicroBatcher

        self.batch = batch
        self.load = RecognizerLoad(workers, batch)
        self._batcher: MicroBatcher[Pcm, tuple[str, str, float, float, float, float]] = MicroBatcher(
            self._run_batch, decoders=workers, max_batch=batch
        )

    async def _run_batch(self, batch: list[Pcm]) -> list[tuple[str, str, float, float, float, float]]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, timed_batch, self, batch)

    async def transcribe(self, pcm: Pcm) -> Transcript:
        """Transcribe one utterance (mono int16 at 8000 Hz) in a worker thread."""
        if self._closed:
            raise RuntimeError("WhisperRecognizer is closed")
        samples = np.asarray(pcm)
        if samples.dtype != np.int16 or samples.ndim != 1:
            raise ValueError(f"expected 1-D int16 samples at 8000 Hz, got {samples.dtype} with shape {samples.shape}")
        t0 = time.perf_counter()
        audio_s = len(samples) / SAMPLE_RATE
        if not len(samples):
            return Transcript("", self.language or "", -math.inf, 1.0, 0.0, 0.0)
        # Cancelling this coroutine (hang-up) drops the utterance if its pass has not started yet.
        self.load.begin()
        decode_s: float | None = None
        share = 1.0
        try:
            text, language, logprob, no_speech, decode_s, share = await self._batcher.submit(samples)
        finally:
            self.load.end(decode_s, share)
        return Transcript(text, language, logprob, no_speech, audio_s, time.perf_counter() - t0)

    def transcribe_sync(self, pcm: Pcm) -> Transcript:
        """The same on the calling thread (benchmarks, scripts): never call it from the event loop."""
        t0 = time.perf_counter()
        samples = np.asarray(pcm, dtype=np.int16)
        text, language, logprob, no_speech = self._decode(samples)
        return Transcript(text, language, logprob, no_speech, len(samples) / SAMPLE_RATE, time.perf_counter() - t0)

    def _decode(self, samples: Pcm) -> tuple[str, str, float, float]:
        audio = upsample_8k_to_16k(samples)
        segments, info = self._model.transcribe(
            audio,
            language=self.language,
            task="transcribe",
            beam_size=self.beam_size,
            best_of=1,
            temperature=[0.0],
            condition_on_previous_text=False,
            initial_prompt=self.initial_prompt,
            without_timestamps=True,
            vad_filter=False,
            max_new_tokens=token_cap(len(samples) / SAMPLE_RATE, self.window_s),
            chunk_length=int(self.window_s),
        )
        texts: list[str] = []
        logprob_sum = 0.0
        n_tokens = 0
        no_speech = 0.0
        for seg in segments:  # a generator: decoding happens here, in the worker thread
            texts.append(seg.text.strip())
            n = max(1, len(seg.tokens))
            logprob_sum += seg.avg_logprob * n
            n_tokens += n
            no_speech = max(no_speech, seg.no_speech_prob)
        if not n_tokens:
            return "", str(info.language), -math.inf, 1.0
        return drop_repeats(" ".join(t for t in texts if t)), str(info.language), logprob_sum / n_tokens, no_speech

    def decode_batch(self, batch: list[Pcm]) -> list[tuple[str, str, float, float]]:
        """Decode several utterances (of different callers) in one encoder + decoder pass.

        The same steps as :meth:`_decode` for each (faster-whisper's own feature extractor, prompt,
        suppressed tokens and no-speech rule, greedy decoding, the window trimmed to ``window_s``), done as
        one batch: the int8 matrix products amortise over the batch (measured ~2x the utterances per CPU
        second at 4). Utterances longer than one window, and batches of one, take :meth:`_decode`. Each
        utterance keeps its own token cap: the batch decodes up to the largest and each result is cut to
        its own (greedy decoding makes the cut one the sequential result).
        """
        if self.beam_size != 1 or (len(batch) == 1 and not self.detect_language):
            return [self._decode(x) for x in batch]
        model = self._model
        fe = model.feature_extractor
        frames = int(self.window_s) * _FRAMES_PER_S
        out: list[tuple[str, str, float, float] | None] = [None] * len(batch)
        feats, caps, idx = [], [], []
        long_enough: list[bool] = []
        for i, samples in enumerate(batch):
            audio_s = len(samples) / SAMPLE_RATE
            if audio_s == 0 or audio_s > self.window_s:
                out[i] = self._decode(samples)
                continue
            f = fe(upsample_8k_to_16k(samples), chunk_length=int(self.window_s))
            content = f.shape[-1] - 1
            feats.append(_pad_frames(f[:, : min(frames, content)], frames))
            caps.append(token_cap(audio_s, self.window_s))
            idx.append(i)
            long_enough.append(audio_s >= self.language_min_s)
        if len(feats) == 1 and not self.detect_language:
            out[idx[0]] = self._decode(batch[idx[0]])
        elif feats:
            for i, r in zip(idx, self._generate_batch(np.stack(feats), caps, long_enough), strict=True):
                out[i] = r
        return [r for r in out if r is not None]

    def _generate_batch(
        self, features: Any, caps: list[int], identify: list[bool] | None = None
    ) -> list[tuple[str, str, float, float]]:
        from faster_whisper.tokenizer import Tokenizer  # type: ignore[import-untyped]
        from faster_whisper.transcribe import get_suppressed_tokens  # type: ignore[import-untyped]

        model = self._model
        language = self.language or "fr"
        tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language)
        previous = tokenizer.encode(" " + self.initial_prompt.strip()) if self.initial_prompt else []
        prompt = model.get_prompt(tokenizer, previous, without_timestamps=True, prefix=None, hotwords=None)
        encoder_output = model.encode(features)
        heard = self._heard_languages(encoder_output, identify or [True] * len(caps), language)
        results = model.model.generate(
            encoder_output,
            [list(prompt) for _ in caps],
            length_penalty=1,
            repetition_penalty=1,
            no_repeat_ngram_size=0,
            max_length=len(prompt) + max(caps),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
            max_initial_timestamp_index=50,
            beam_size=1,
            patience=1,
        )
        out = []
        for result, cap in zip(results, caps, strict=True):
            tokens = list(result.sequences_ids[0])
            avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
            tokens = [t for t in tokens[:cap] if t < tokenizer.eot]
            no_speech = float(result.no_speech_prob)
            if (no_speech > 0.6 and avg_logprob <= -1.0) or not tokens:  # faster-whisper's silence rule
                out.append(("", language, -math.inf, 1.0))
                continue
            text = tokenizer.decode(tokens).strip()
            out.append((drop_repeats(text), heard[len(out)], float(avg_logprob), no_speech))
        return out

    def _heard_languages(self, encoder_output: Any, identify: list[bool], language: str) -> list[str]:
        """The line's language for each utterance, unless Whisper gives it less than ``other_language_below``:
        then its most probable language. One decoder step on the encoder output already computed."""
        if not self.detect_language or not any(identify):
            return [language] * len(identify)
        heard = []
        for probs, asked in zip(self._model.model.detect_language(encoder_output), identify, strict=True):
            p_line = next((p for token, p in probs if token == f"<|{language}|>"), 0.0)
            top = probs[0][0].strip("<|>") if probs else language
            heard.append(language if not asked or p_line >= self.other_language_below else top)
        return heard

    async def warmup(self) -> None:
        """Decode one second of faint noise once, so the first caller does not pay for lazy initialisation."""
        noise = np.random.default_rng(0).normal(0, 30, SAMPLE_RATE).astype(np.int16)
        await self.transcribe(noise)

    def close(self) -> None:
        """Stop the worker threads (waits for a running decode). Further transcribe calls raise."""
        self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)


def timed_batch(recognizer: WhisperRecognizer, batch: list[Pcm]) -> list[tuple[str, str, float, float, float, float]]:
    """Decode a batch; each result carries the pass's time and its share of it (1 / batch size)."""
    t0 = time.perf_counter()
    results = recognizer.decode_batch(batch)
    elapsed = time.perf_counter() - t0
    return [(*r, elapsed, 1.0 / len(batch)) for r in results]


def _pad_frames(features: Any, frames: int) -> Any:
    """Zero-pad (or cut) mel features to ``frames`` along time, as faster-whisper's ``pad_or_trim``."""
    if features.shape[-1] >= frames:
        return features[..., :frames]
    return np.pad(features, [(0, 0)] * (features.ndim - 1) + [(0, frames - features.shape[-1])])


def _trimmed_encode(encode: Callable[[Any], Any], frames: int) -> Callable[[Any], Any]:
    """Wrap ``WhisperModel.encode`` to drop the 30 s padding beyond ``frames`` mel frames."""

    def trimmed(features: Any) -> Any:
        return encode(features[..., :frames])

    return trimmed
