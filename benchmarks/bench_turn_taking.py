"""End of voice -> route and premature cut-offs, silence-only turn-taking vs the semantic end of turn (#21).

    .venv/bin/python benchmarks/bench_turn_taking.py [--limit N] [--shifts 0,20] [--real]

Sets (the held-out file is never used for tuning):

* **paused** (SYNTHETIC): held-out caller sentences (``data/understanding_heldout.tsv``, kinds motive and
  several) that contain a clause boundary ("parce que", "et", "mais", "car", a comma) between 30 % and 70 %
  of their words, spoken as two parts by espeak-ng with 200-600 ms of line noise between them (the caller's
  natural internal pause): a turn that ends before the second part is a **premature cut-off**;
* **single** (SYNTHETIC): held-out sentences without such a pause, spoken whole;
* **real** (``--real``): Debian's real French recordings (asterisk-core-sounds-fr-wav), two prompts joined
  by 200-600 ms of line noise: real voices and real pauses, though they state no motive.

Each item goes through the product's code offline, on a simulated clock: the real Endpointer (20 ms frames,
the shipped thresholds), the real Whisper base recogniser (one thread; its wall time per decode is the time
the speculative transcript takes to arrive), the real Understander and :func:`agi_router.speech.turn.judge_turn`.
Configurations: ``silence`` (the 550 ms hangover, speculative recognition during it: today's rule) and
``semantic`` (the same, plus end of turn at a pause when the words so far are a complete answer, +400 ms of
hangover after a connective or hesitation). Reported per configuration and set: end of voice -> route
p50 / p90 / p99 (end of the last voiced word to the routing decision: endpointing plus whatever recognition
remains), premature cut-offs, and what the understander decided on the transcript the turn ended with vs
on the whole sentence. Each ``--shifts`` value (ms of leading silence) is a run: Whisper's output on
synthetic speech moves with the frame grid, so the spread between shifts is the honest error bar.
Writes ``benchmarks/results/turn_taking.json`` and prints markdown.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from bench_motives import SPEEDS, VOICES, degrade, speak  # benchmarks/bench_motives.py
from machine import machine_info  # benchmarks/machine.py

from agi_router.app import build_understander
from agi_router.config import Settings
from agi_router.motives.catalogue import Catalogue
from agi_router.motives.evaluation import load_items
from agi_router.speech.endpointer import Endpointer, EndpointerConfig, MaxLength, NoInput, SpeechEnd, SpeechPause
from agi_router.speech.evaluation import read_wav
from agi_router.speech.model import default_model_dir, ensure_whisper_base
from agi_router.speech.recognizer import WhisperRecognizer
from agi_router.speech.turn import judge_turn

ROOT = Path(__file__).resolve().parents[1]
REAL = Path("/usr/share/asterisk/sounds/fr_CA_f_June")
BOUNDARY = re.compile(r"\s(?=(?:parce que|et|mais|car)\s)|(?<=,)\s")
FRAME = 160
EXTEND_MS = 400

Pcm = np.ndarray


@dataclass
class Piece:
    set: str
    text: str
    audio: Pcm
    voice_end_ms: float  # end of the last voiced sample (the true end of voice)
    second_start_ms: float | None  # start of the part after the pause (paused sets)


@dataclass
class Outcome:
    latency_ms: float | None  # end of voice -> route
    cut: bool  # the turn ended before the last part was spoken
    level_used: str
    level_full: str
    same_decision: bool
    early: bool = False
    extended: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _noise(ms: int, rng: random.Random) -> Pcm:
    n = 8 * ms
    return np.random.default_rng(rng.randrange(1 << 30)).normal(0, 40, n).astype(np.int16)  # ~ -58 dBFS hiss


def _voiced_bounds(pcm: Pcm) -> tuple[float, float]:
    env = np.abs(pcm.astype(np.int32))
    idx = np.nonzero(env > 0.05 * max(1, int(env.max())))[0]
    return (idx[0] / 8.0, idx[-1] / 8.0) if len(idx) else (0.0, 0.0)


def build_sets(limit: int, real: bool, work: Path, data: str = "heldout") -> list[Piece]:
    cat = Catalogue.load()
    items = [it for it in load_items(ROOT / "benchmarks" / "data" / f"understanding_{data}.tsv", cat)
             if it.kind in ("motive", "several")]  # fmt: skip
    rng = random.Random(21)
    pieces: list[Piece] = []
    for i, it in enumerate(items):
        voice, speed = VOICES[i % 3], SPEEDS[i % 3]
        words = it.text.split()
        cut = None
        for m in BOUNDARY.finditer(it.text):
            frac = len(it.text[: m.start()].split()) / len(words)
            if 0.3 <= frac <= 0.7:
                cut = m.start()
                break
        if cut is not None:
            a, b = speak(it.text[:cut], voice, speed, work), speak(it.text[cut:].strip(), voice, speed, work)
            _, a_end = _voiced_bounds(a)
            a = a[: int(a_end * 8) + 80]
            b_start, b_end = _voiced_bounds(b)
            b = b[int(b_start * 8) :]
            pause = rng.randint(200, 600)
            audio = np.concatenate([a, _noise(pause, rng), b])
            second = len(a) / 8 + pause
            pieces.append(Piece("paused", it.text, audio, second + (b_end - b_start), second))
        else:
            pcm = speak(it.text, voice, speed, work)
            pieces.append(Piece("single", it.text, pcm, _voiced_bounds(pcm)[1], None))
    if real and REAL.is_dir():
        wavs = sorted(REAL.glob("vm-*.wav"))[:60]
        for j in range(0, len(wavs) - 1, 2):
            a, b = read_wav(wavs[j]), read_wav(wavs[j + 1])
            a = a[: int(_voiced_bounds(a)[1] * 8) + 80]
            b_start, b_end = _voiced_bounds(b)
            b = b[int(b_start * 8) :]
            pause = rng.randint(200, 600)
            audio = np.concatenate([a, _noise(pause, rng), b])
            second = len(a) / 8 + pause
            pieces.append(Piece("real", f"{wavs[j].stem} + {wavs[j + 1].stem}", audio, second + b_end - b_start,
                                second))  # fmt: skip
    by_set: dict[str, list[Piece]] = {}
    for p in pieces:
        by_set.setdefault(p.set, []).append(p)
    out = []
    for ps in by_set.values():
        out += ps[:limit] if limit else ps
    return out


class Lab:
    """Recognition + understanding with a cache (the same audio prefix is decoded once per run)."""

    def __init__(self, rec: WhisperRecognizer, understander: Any) -> None:
        self.rec, self.understander = rec, understander
        self.cache: dict[bytes, tuple[str, str, float, float]] = {}

    def hear(self, audio: Pcm) -> tuple[str, str, float, float]:
        """(transcript, level, confidence, decode seconds) of ``audio``."""
        key = hashlib.blake2b(audio.tobytes(), digest_size=16).digest()
        if key not in self.cache:
            t0 = time.perf_counter()
            text = self.rec.transcribe_sync(audio).text
            decode = time.perf_counter() - t0
            u = self.understander.understand(text)
            self.cache[key] = (text, u.level.value, u.confidence, decode)
        return self.cache[key]


def simulate(piece: Piece, audio: Pcm, lead_ms: float, lab: Lab, semantic: bool, min_conf: float = 0.0) -> Outcome:
    """The capture of one utterance on a simulated clock (frame arrival = its stream time)."""
    ep = Endpointer(EndpointerConfig(no_input_ms=20000, max_utterance_ms=30000))
    spec: tuple[float, tuple[str, str, float, float]] | None = None  # (ready at ms, result)
    judged = False
    extended = False
    ended_at, used = None, None
    padded = np.concatenate([audio, np.zeros(8 * 3000, np.int16)])
    for i in range(len(padded) // FRAME):
        now = (i + 1) * 20.0
        events = ep.feed(padded[i * FRAME : (i + 1) * FRAME], i * 20.0)
        for ev in events:
            if isinstance(ev, SpeechPause):
                spec, judged = (now + 1000 * lab.hear(ev.audio)[3], lab.hear(ev.audio)), False
            elif type(ev).__name__ == "SpeechResumed":
                spec = None
            elif isinstance(ev, SpeechEnd | MaxLength):
                ended_at = now
                if spec is not None and isinstance(ev, SpeechEnd):
                    used = spec[1]
                    route_at = max(now, spec[0])
                else:
                    used = lab.hear(ev.audio)
                    route_at = now + 1000 * used[3]
                break
            elif isinstance(ev, NoInput):
                return Outcome(None, True, "no_input", "", False)
        if ended_at is not None:
            break
        if semantic and spec is not None and not judged and now >= spec[0] and ep.paused:
            judged = True
            text, level, conf, _ = spec[1]
            d = judge_turn(text, level, conf, min_confidence=min_conf)
            if d.action == "end":
                end = ep.end_now()
                assert end is not None
                ended_at, used, route_at = now, spec[1], now
                break
            if d.action == "extend":
                ep.extend(EXTEND_MS)
                extended = True
    assert ended_at is not None and used is not None
    full = lab.hear(audio)
    voice_end = lead_ms + piece.voice_end_ms
    cut = piece.second_start_ms is not None and ended_at < lead_ms + piece.second_start_ms + 20
    return Outcome(
        float(route_at - voice_end) if not cut else None,
        bool(cut),
        used[1],
        full[1],
        used[1] == full[1],
        early=bool(semantic and ended_at - voice_end < EndpointerConfig().hangover_ms),
        extended=extended,
    )


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _span(by_shift: dict[int, Any], f: Any) -> str:
    """min-max over the shifts (one figure when they agree)."""
    vals = [v for r in by_shift.values() if (v := f(r)) is not None]
    if not vals:
        return "-"
    lo, hi = min(vals), max(vals)
    return f"{lo:.0f}" if round(lo) == round(hi) else f"{lo:.0f}-{hi:.0f}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=0, help="at most N items per set (0: all)")
    ap.add_argument("--shifts", default="0,20", help="leading silence (ms) of each run")
    ap.add_argument("--real", action="store_true", help="add Debian's real recordings (asterisk-core-sounds-fr-wav)")
    ap.add_argument("--data", choices=("heldout", "tune"), default="heldout", help="tune: to choose thresholds")
    ap.add_argument("--min-confidence", default="0.0",
                    help="[speech] turn_min_confidence values to compare, comma-separated")  # fmt: skip
    args = ap.parse_args()
    understander = build_understander(Settings(), Catalogue.load())
    model = ensure_whisper_base(default_model_dir(ROOT / "var"))
    rec = WhisperRecognizer(model, workers=1, beam_size=1, window_s=6)
    rec.transcribe_sync(np.zeros(8000, dtype=np.int16))  # warm
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        pieces = build_sets(args.limit, args.real, Path(tmp), args.data)
    configs = [("silence", 0.0)] + [(f"semantic@{c}", float(c)) for c in args.min_confidence.split(",")]
    for shift in (int(x) for x in args.shifts.split(",")):
        lab = Lab(rec, understander)
        for cfg, min_conf in configs:
            rows: dict[str, list[Outcome]] = {}
            for k, p in enumerate(pieces):
                audio = degrade(np.concatenate([np.zeros(8 * (300 + shift), np.int16), p.audio]), None, k)
                semantic = cfg != "silence"
                rows.setdefault(p.set, []).append(simulate(p, audio, 300 + shift, lab, semantic, min_conf))
            for name, outs in rows.items():
                lat = [o.latency_ms for o in outs if o.latency_ms is not None]
                results.setdefault(name, {}).setdefault(cfg, {})[shift] = {
                    "n": len(outs),
                    "latency_ms": {"p50": pct(lat, 50), "p90": pct(lat, 90), "p99": pct(lat, 99)},
                    "cut_offs": int(sum(o.cut for o in outs)),
                    "decided_as_whole": int(sum(o.same_decision for o in outs)),
                    "early_ends": int(sum(o.early for o in outs)),
                    "extended": int(sum(o.extended for o in outs)),
                }
            print(f"shift {shift} ms, {cfg}: done", file=sys.stderr)
    rec.close()
    out = {"machine": machine_info(), "data": args.data, "synthetic_sets": ["paused", "single"], "results": results}
    name = "turn_taking.json" if args.data == "heldout" else "turn_taking_tune.json"
    (ROOT / "benchmarks" / "results" / name).write_text(json.dumps(out, indent=1))
    print(machine_info())
    print("\n| set | turn | n | end of voice -> route p50 / p90 / p99 ms | cut-offs | decided as on the whole |")
    print("|---|---|---|---|---|---|")
    for name, by_cfg in results.items():
        for cfg, by_shift in by_cfg.items():
            n = next(iter(by_shift.values()))["n"]
            lat = " / ".join(_span(by_shift, lambda r, q=q: r["latency_ms"][q]) for q in ("p50", "p90", "p99"))
            print(f"| {name} | {cfg} | {n} | {lat} | {_span(by_shift, lambda r: r['cut_offs'])} | "
                  f"{_span(by_shift, lambda r: r['decided_as_whole'])} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
