"""Who does the router hear as speaking another language? Real human recordings, through the product's recogniser.

    .venv/bin/python benchmarks/bench_language_id.py [--count 40] [--shifts 0,5,10] [--armelle DIR]

The ``other_language`` safeguard keeps callers heard speaking another language than the line's out of a
deflection (a French message they may not understand). It rests on ``WhisperRecognizer``'s language
identification (``detect_language``, ``other_language_below``). This measures it on real people, µ-law
round-tripped like a call:

- French that must NOT be flagged: Debian's ``asterisk-core-sounds-fr-wav`` (fr-CA, June) and, with
  ``--armelle``, ``asterisk-prompt-fr-armelle`` (France; it conflicts with the fr-CA transcripts package, so
  unpack it instead: ``apt-get download asterisk-prompt-fr-armelle && dpkg -x asterisk-prompt-fr-armelle_*.deb
  /tmp/armelle`` then ``--armelle /tmp/armelle/usr/share/asterisk/sounds/fr``; GSM, read through sox);
- other languages that should be: ``asterisk-core-sounds-{en,es,it,ru}-wav`` (one studio speaker each).

Clips of 1.5-6 s, evenly spaced through each folder; each shift (ms of leading silence) is a separate run,
the spread between them is the error bar. Prints, per language and threshold, the share heard as "other";
and the cost of the identification step (one decoder step on the encoder output) against the decode.
Writes ``benchmarks/results/language_id.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
from machine import machine_info  # benchmarks/machine.py

from agi_router.media.g711 import ulaw_decode, ulaw_encode
from agi_router.speech.model import default_model_dir, ensure_whisper_base
from agi_router.speech.recognizer import _FRAMES_PER_S, WhisperRecognizer, _pad_frames, upsample_8k_to_16k

ROOT = Path(__file__).resolve().parents[1]
BASE = Path("/usr/share/asterisk/sounds")
FOLDERS = {
    "fr-CA": BASE / "fr_CA_f_June",
    "en-US": BASE / "en_US_f_Allison",
    "es-MX": BASE / "es_MX_f_Allison",
    "it-IT": BASE / "it_IT_m_Carlo",
    "ru-RU": BASE / "ru_RU_f_IvrvoiceRU",
}
THRESHOLDS = (0.3, 0.5, 0.7)


def read_any(path: Path) -> np.ndarray:
    if path.suffix == ".wav":
        with wave.open(str(path)) as w:
            if w.getframerate() == 8000 and w.getsampwidth() == 2 and w.getnchannels() == 1:
                return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).copy()
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "o.wav"
        subprocess.run(["sox", str(path), "-r", "8000", "-c", "1", "-b", "16", str(out)], check=True)
        return read_any(out)


def clips(folder: Path, count: int) -> list[tuple[str, np.ndarray]]:
    files = sorted(p for p in folder.iterdir() if p.suffix in (".wav", ".gsm") and p.is_file())
    out = []
    for p in files:
        pcm = read_any(p)
        if 1.5 <= len(pcm) / 8000 <= 6.0:
            out.append((p.stem, pcm))
    step = max(1, len(out) // count)
    return out[::step][:count]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=40)
    ap.add_argument("--shifts", default="0,5,10")
    ap.add_argument("--armelle", type=Path, help="unpacked asterisk-prompt-fr-armelle sounds/fr folder")
    args = ap.parse_args()
    folders = {k: v for k, v in FOLDERS.items() if v.is_dir()}
    if args.armelle:
        folders = {"fr-FR": args.armelle, **folders}
    if "fr-CA" not in folders:
        print("needs Debian's asterisk-core-sounds-fr-wav (and -en-wav, -es-wav, -it-wav, -ru-wav)", file=sys.stderr)
        return 2
    shifts = [int(s) for s in args.shifts.split(",")]
    rec = WhisperRecognizer(ensure_whisper_base(default_model_dir(ROOT / "var")), window_s=6, beam_size=1)
    model = rec._model
    probs: dict[str, list[list[float]]] = {}  # language -> per shift, P(fr) of each clip
    decode_s: list[float] = []
    detect_s: list[float] = []
    for lang, folder in folders.items():
        chosen = clips(folder, args.count)
        probs[lang] = []
        for shift in shifts:
            run = []
            for _name, pcm in chosen:
                x = ulaw_decode(ulaw_encode(np.concatenate([np.zeros(8 * shift, np.int16), pcm])))
                frames = int(rec.window_s) * _FRAMES_PER_S
                f = model.feature_extractor(upsample_8k_to_16k(x), chunk_length=int(rec.window_s))
                enc = model.encode(_pad_frames(f[:, : min(frames, f.shape[-1] - 1)], frames)[None])
                t0 = time.perf_counter()
                p = dict(model.model.detect_language(enc)[0])
                detect_s.append(time.perf_counter() - t0)
                run.append(float(p.get("<|fr|>", 0.0)))
                t0 = time.perf_counter()
                rec.decode_batch([x])
                decode_s.append(time.perf_counter() - t0)
            probs[lang].append(run)
        line = [f"{lang:6s} {len(chosen):3d} clips"]
        for th in THRESHOLDS:
            shares = [100 * sum(1 for p in run if p < th) / len(run) for run in probs[lang]]
            line.append(f"P(fr)<{th}: {min(shares):.0f}-{max(shares):.0f} %")
        print("  ".join(line), file=sys.stderr)
    rec.close()
    summary = {
        lang: {str(th): [round(100 * sum(1 for p in run if p < th) / len(run), 1) for run in runs] for th in THRESHOLDS}
        for lang, runs in probs.items()
    }
    cost = {
        "detect_ms_p50": round(1000 * float(np.median(detect_s)), 2),
        "decode_ms_p50": round(1000 * float(np.median(decode_s)), 1),
    }
    out = {"machine": machine_info(), "shifts_ms": shifts, "flagged_percent": summary, "cost": cost, "p_fr": probs}
    (ROOT / "benchmarks" / "results" / "language_id.json").write_text(json.dumps(out, indent=1))
    print(machine_info())
    print(json.dumps({"flagged_percent": summary, "cost": cost}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
