"""Real human French through ``agi-router speech eval``'s own code: WER and latency, with their spread.

    .venv/bin/python benchmarks/bench_real_voice_eval.py [--count 60] [--shifts 0,5,10,15]

The fr-CA prompts of Debian's ``asterisk-core-sounds-fr-wav`` (one studio speaker, 8 kHz) with their
published transcripts (``asterisk-core-sounds-fr``): prompts of 4+ words, <= 6 s, without digits, evenly
spaced through the list. Each shift (ms of leading silence added) is a separate run through a G.711 µ-law
round trip: Whisper's output moves with such shifts, so the spread between them is the error bar. They
state no motive: this measures the recogniser (WER), not routing. Writes
``benchmarks/results/real_voice_eval.json``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np
from machine import machine_info  # benchmarks/machine.py

from agi_router.app import build_understander
from agi_router.config import Settings
from agi_router.media.g711 import ulaw_decode, ulaw_encode
from agi_router.motives.catalogue import Catalogue
from agi_router.speech.evaluation import LABELS, evaluate_folder, read_wav
from agi_router.speech.model import default_model_dir, ensure_whisper_base
from agi_router.speech.recognizer import WhisperRecognizer

ROOT = Path(__file__).resolve().parents[1]
SOUNDS = Path("/usr/share/asterisk/sounds/fr_CA_f_June")
TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-fr/core-sounds-fr.txt.gz")


def chosen(count: int) -> list[tuple[str, str]]:
    out = []
    for line in gzip.decompress(TRANSCRIPTS.read_bytes()).decode().splitlines():
        name, sep, ref = line.partition(":")
        name, ref = name.strip(), ref.strip()
        wav = SOUNDS / f"{name}.wav"
        if not sep or line.startswith(";") or not wav.is_file() or "/" in name:
            continue
        if len(ref.split()) < 4 or any(c.isdigit() or c in "[]()" for c in ref):
            continue
        with wave.open(str(wav)) as w:
            if w.getnframes() / w.getframerate() > 6.0 or w.getframerate() != 8000:
                continue
        out.append((name, ref))
    out.sort()
    step = max(1, len(out) // count)
    return out[::step][:count]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=60)
    ap.add_argument("--shifts", default="0,5,10,15")
    args = ap.parse_args()
    if not TRANSCRIPTS.is_file():
        print("needs Debian's asterisk-core-sounds-fr-wav and asterisk-core-sounds-fr", file=sys.stderr)
        return 2
    prompts = chosen(args.count)
    cat = Catalogue.load()
    understander = build_understander(Settings(), cat)
    rec = WhisperRecognizer(ensure_whisper_base(default_model_dir(ROOT / "var")), window_s=6, beam_size=1)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for shift in (int(s) for s in args.shifts.split(",")):
            folder = Path(tmp) / f"shift{shift}"
            folder.mkdir()
            rows = ["id\tkind\texpected\treference"]
            for name, ref in prompts:
                pcm = np.concatenate([np.zeros(8 * shift, np.int16), read_wav(SOUNDS / f"{name}.wav")])
                with wave.open(str(folder / f"{name}.wav"), "wb") as w:
                    w.setnchannels(1)
                    w.setsampwidth(2)
                    w.setframerate(8000)
                    w.writeframes(ulaw_decode(ulaw_encode(pcm)).astype("<i2").tobytes())
                rows.append(f"{name}\t-\t-\t{ref}")
            (folder / LABELS).write_text("\n".join(rows) + "\n", encoding="utf-8")
            runs[shift] = evaluate_folder(folder, cat, rec, understander, frozenset())
            print(f"shift {shift} ms: WER {runs[shift]['wer']}", file=sys.stderr)
    rec.close()
    wers = [r["wer"] for r in runs.values()]
    p50 = [r["latency_s"]["p50"] for r in runs.values()]
    out = {
        "machine": machine_info(),
        "prompts": len(prompts),
        "words": runs[next(iter(runs))]["wer_words"],
        "runs": runs,
    }
    (ROOT / "benchmarks" / "results" / "real_voice_eval.json").write_text(json.dumps(out, indent=1))
    print(machine_info())
    print(
        f"\n{len(prompts)} real fr-CA prompts ({out['words']} words), µ-law, Whisper base 6 s beam 1: "
        f"WER {100 * min(wers):.1f}-{100 * max(wers):.1f} % over shifts {args.shifts} ms; "
        f"recognition p50 {1000 * min(p50):.0f}-{1000 * max(p50):.0f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
