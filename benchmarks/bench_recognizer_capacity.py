"""How many utterances per second the recogniser sustains, per configuration (threads vs processes).

    .venv/bin/python benchmarks/bench_recognizer_capacity.py [--utterances 80] [--repeats 3]
        [--configs threads:1,processes:2,threads:1:b4,processes:2:b4]

The product's own recognisers (``WhisperRecognizer`` with N threads, ``ProcessRecognizer`` with N
processes, ``:bN`` micro-batching up to N callers' utterances per pass; Whisper base int8, 6 s window,
beam 1) on real human French: 20 fr-CA prompts of Debian's
asterisk-core-sounds-fr-wav (2-3.4 s, µ-law round trip), all offered at once (closed loop, as many in
flight as the configuration has decoders plus a queue). Figures: utterances/s (wall), machine CPU per
utterance (from /proc/stat, so worker processes count), and the p50 / p99 time from submission to text.
Each configuration is run ``--repeats`` times: report the spread. Writes ``results/recognizer_capacity.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from machine import machine_info  # benchmarks/machine.py

from agi_router.media.g711 import ulaw_decode, ulaw_encode
from agi_router.speech.capacity import ProcessRecognizer
from agi_router.speech.evaluation import read_wav
from agi_router.speech.model import default_model_dir, ensure_whisper_base
from agi_router.speech.recognizer import WhisperRecognizer

ROOT = Path(__file__).resolve().parents[1]
SOUNDS = Path("/usr/share/asterisk/sounds/fr_CA_f_June")


def clips(n: int = 20) -> list[np.ndarray]:
    out = []
    for wav in sorted(SOUNDS.glob("*.wav")):
        pcm = read_wav(wav)
        if 2.0 <= len(pcm) / 8000 <= 3.4:
            out.append(ulaw_decode(ulaw_encode(pcm)))
    step = max(1, len(out) // n)
    return out[::step][:n]


def cpu_jiffies() -> int:
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in parts[:7])
    return user + nice + system + irq + softirq


async def offer(rec: object, audio: list[np.ndarray], concurrency: int) -> tuple[float, list[float]]:
    sem = asyncio.Semaphore(concurrency)
    lat: list[float] = []

    async def one(pcm: np.ndarray) -> None:
        async with sem:
            t0 = time.perf_counter()
            await rec.transcribe(pcm)  # type: ignore[attr-defined]
            lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(p) for p in audio))
    return time.perf_counter() - t0, lat


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--utterances", type=int, default=80)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--configs", default="threads:1,threads:2,processes:1,processes:2,threads:1:b4,processes:1:b4,processes:2:b4"
    )
    args = ap.parse_args()
    model = ensure_whisper_base(default_model_dir(ROOT / "var"))
    base = clips()
    audio = [base[i % len(base)] for i in range(args.utterances)]
    hz = os.sysconf("SC_CLK_TCK")
    results: dict[str, list[dict[str, float]]] = {}
    for spec in args.configs.split(","):
        kind, n, *opt = spec.split(":")
        workers = int(n)
        batch = int(opt[0].removeprefix("b")) if opt else 1
        if kind == "threads":
            rec: object = WhisperRecognizer(model, workers=workers, batch=batch)
        else:
            rec = ProcessRecognizer(model, processes=workers, batch=batch)
        asyncio.run(offer(rec, audio[: 2 * workers], workers))  # warm every decoder
        runs = []
        for _ in range(args.repeats):
            c0 = cpu_jiffies()
            wall, lat = asyncio.run(offer(rec, audio, workers * max(4, 2 * batch)))
            cpu_s = (cpu_jiffies() - c0) / hz
            runs.append(
                {
                    "utterances_per_s": len(audio) / wall,
                    "cpu_ms_per_utterance": 1000 * cpu_s / len(audio),
                    "p50_s": float(np.percentile(lat, 50)),
                    "p99_s": float(np.percentile(lat, 99)),
                }
            )
        rec.close()  # type: ignore[attr-defined]
        results[spec] = runs
        print(spec, [round(r["utterances_per_s"], 1) for r in runs], file=sys.stderr)
    out = {"machine": machine_info(), "utterances": len(audio), "results": results}
    (ROOT / "benchmarks" / "results" / "recognizer_capacity.json").write_text(json.dumps(out, indent=1))
    print(machine_info())
    print(f"\n{len(audio)} real fr-CA utterances (2-3.4 s, µ-law) offered at once, {args.repeats} repeats\n")
    print("| configuration | utterances/s | machine CPU ms per utterance | p50 / p99 submission -> text |")
    print("|---|---|---|---|")
    for spec, runs in results.items():

        def span(key: str, scale: float = 1.0, fmt: str = ".1f", runs: list[dict[str, float]] = runs) -> str:
            lo, hi = min(r[key] for r in runs) * scale, max(r[key] for r in runs) * scale
            return f"{lo:{fmt}}-{hi:{fmt}}"

        print(
            f"| {spec} | {span('utterances_per_s')} | {span('cpu_ms_per_utterance', fmt='.0f')} | "
            f"{span('p50_s')} / {span('p99_s')} s |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
