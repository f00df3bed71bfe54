"""The held-out sentences through the recogniser: SYNTHETIC audio (espeak-ng), labelled as such.

    .venv/bin/python benchmarks/bench_understanding_audio.py [--shifts 0,10] [--limit N]

Each sentence of ``benchmarks/data/understanding_heldout.tsv`` is spoken by espeak-ng (voices fr+m3,
fr+f2, fr+m7 in turn, 150/160/170 wpm), band-limited to 300-3400 Hz at 8 kHz, sent through a G.711 µ-law
round trip, then transcribed by the product's WhisperRecognizer (Whisper base, int8, one thread, 6 s
window, beam 1) and routed by the product's Understander with the shipped thresholds — the code path of a
live call after end of speech. Each ``--shifts`` value (ms of leading silence) is a separate run: espeak
audio measures the synthesiser as much as the recogniser, and Whisper's output on it moves with a few ms
of leading silence, so the spread between shifts is the honest error bar, not one run's figure.

Writes ``benchmarks/results/understanding_audio.json`` and prints markdown.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_motives import SPEEDS, VOICES, degrade, speak  # benchmarks/bench_motives.py
from machine import machine_info  # benchmarks/machine.py

from agi_router.app import build_understander
from agi_router.config import Settings
from agi_router.motives.catalogue import Catalogue
from agi_router.motives.evaluation import evaluate, load_items
from agi_router.policy.config import load_policy
from agi_router.speech.model import default_model_dir, ensure_whisper_base
from agi_router.speech.recognizer import WhisperRecognizer

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shifts", default="0,10", help="leading silence (ms) of each run, comma-separated")
    ap.add_argument("--limit", type=int, default=0, help="only the first N sentences (0: all)")
    args = ap.parse_args()
    cat = Catalogue.load()
    deflectable = frozenset(load_policy(catalogue=cat).deflect_motives)
    understander = build_understander(Settings(), cat)
    items = load_items(ROOT / "benchmarks" / "data" / "understanding_heldout.tsv", cat)
    if args.limit:
        items = items[: args.limit]
    model = ensure_whisper_base(default_model_dir(ROOT / "var"))
    rec = WhisperRecognizer(model, workers=1, beam_size=1, window_s=6)
    rec.transcribe_sync(np.zeros(8000, dtype=np.int16))  # warm
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clean = [speak(it.text, VOICES[i % 3], SPEEDS[i % 3], work) for i, it in enumerate(items)]
        for shift in (int(x) for x in args.shifts.split(",")):
            texts, lat = [], []
            for i, pcm in enumerate(clean):
                audio = degrade(np.concatenate([np.zeros(8 * shift, np.int16), pcm]), None, i)
                t0 = time.perf_counter()
                texts.append(rec.transcribe_sync(audio).text)
                lat.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            r = evaluate(items, understander, deflectable, texts=texts)
            understand_s = (time.perf_counter() - t0) / max(1, len(items))
            runs[shift] = {
                "report": r.as_json(),
                "recognition_p50_s": float(np.percentile(lat, 50)),
                "recognition_p99_s": float(np.percentile(lat, 99)),
                "understanding_mean_ms": understand_s * 1000,
                "examples": r.rows(),
            }
            print(f"shift {shift} ms: {dict(r.outcomes)}", file=sys.stderr)
    rec.close()
    out = {"machine": machine_info(), "synthetic": True, "sentences": len(items), "runs": runs}
    (ROOT / "benchmarks" / "results" / "understanding_audio.json").write_text(
        json.dumps(out, indent=1, ensure_ascii=False)
    )
    print(machine_info())
    print(f"\nSYNTHETIC audio (espeak-ng), {len(items)} held-out sentences, shifts {args.shifts} ms\n")
    kinds = ("motive", "several", "person", "out_of_scope")
    print("| shift | " + " | ".join(kinds) + " | 2nd turn | recognition p50 / p99 |\n|---|---|---|---|---|---|---|")
    for shift, run in runs.items():
        rep = run["report"]
        cells = []
        for k in kinds:
            c = rep["by_kind"].get(k, {})
            n = sum(c.values()) or 1
            cells.append(", ".join(f"{o} {100 * v / n:.0f} %" for o, v in sorted(c.items(), key=lambda kv: -kv[1])))
        print(
            f"| {shift} ms | " + " | ".join(cells) + f" | {100 * rep['second_turns'] / rep['items']:.0f} % | "
            f"{1000 * run['recognition_p50_s']:.0f} / {1000 * run['recognition_p99_s']:.0f} ms |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
