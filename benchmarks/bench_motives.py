"""Motive recognition: text classifier on perfect transcripts, then espeak-ng audio through Whisper.

    .venv/bin/python benchmarks/bench_motives.py [--sample 120] [--fit-sample 60] [--k 6]

(a) text classifier (:class:`~agi_router.motives.classifier.MotiveClassifier`) on every ``held_out``
    sentence of the bundled catalogue as a perfect transcript: top-1, top-3, accepted-right / misrouted /
    rejected, and rejection of the ``[held_out]`` out-of-scope sentences (agi_router/data/out_of_scope.txt);
    also the numpy logistic regression variant, for comparison.
(b) a sample of ``held_out`` sentences (evenly spaced, deterministic) spoken by espeak-ng (voices fr+m3,
    fr+f2, fr+m7 in turn, 150/160/170 wpm), sox to 8 kHz telephone band (300-3400 Hz), G.711 µ-law round
    trip; WhisperRecognizer (6 s window, beam 1, int8, one thread) -> text classifier alone, and -> the
    hybrid (text top-K re-scored by Whisper forced decoding of key phrases); latency p50/p99 per utterance.
(c) the same with white noise at 20 dB SNR added before the µ-law round trip.
The hybrid's beta / temperature / reject rule are fitted first on espeak audio of the catalogue's
``examples`` (a sample, clean condition) and the ``[tune]`` out-of-scope sentences, never on held_out.

Writes ``benchmarks/results/motives.json`` and prints markdown with the machine facts.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from machine import machine_info  # benchmarks/machine.py
from phrases import HybridClassifier, PhraseScorer  # benchmarks/phrases.py: measured, not in the product

from agi_router.media.g711 import ulaw_decode, ulaw_encode
from agi_router.motives.catalogue import Catalogue
from agi_router.motives.classifier import MotiveClassifier, MotiveGuess, choose_reject_rule, load_out_of_scope
from agi_router.speech.model import default_model_dir, ensure_whisper_base
from agi_router.speech.recognizer import WhisperRecognizer

Pcm = npt.NDArray[np.int16]
ROOT = Path(__file__).resolve().parents[1]
OOS = ROOT / "agi_router" / "data" / "out_of_scope.txt"
VOICES = ("fr+m3", "fr+f2", "fr+m7")
SPEEDS = (150, 160, 170)
OOS_ID = "<out_of_scope>"
BAND = ("highpass", "300", "lowpass", "3400")  # telephone band


def speak(text: str, voice: str, speed: int, work: Path) -> Pcm:
    raw, out = work / "raw.wav", work / "out.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True, capture_output=True)
    subprocess.run(
        ["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer", str(out), *BAND],
        check=True,
        capture_output=True,
    )
    with wave.open(str(out)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).copy()


def degrade(pcm: Pcm, snr_db: float | None, seed: int) -> Pcm:
    x = pcm.astype(np.float64)
    if snr_db is not None:
        voiced = x[np.abs(x) > 0.02 * np.abs(x).max()] if len(x) else x
        p_sig = float(np.mean(voiced**2)) if len(voiced) else 0.0
        rms = math.sqrt(p_sig / 10 ** (snr_db / 10))
        x = x + np.random.default_rng(seed).normal(0, rms, len(x))
    lin = np.clip(np.round(x), -32768, 32767).astype(np.int16)
    return ulaw_decode(ulaw_encode(lin))


def spaced(items: Sequence[Any], n: int) -> list[Any]:
    if n >= len(items):
        return list(items)
    return [items[int(i * len(items) / n)] for i in range(n)]


@dataclass
class Utt:
    text: str
    label: str  # motive id, or OOS_ID
    pcm: Pcm


def pct(xs: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def text_metrics(guesses: Sequence[MotiveGuess], labels: Sequence[str]) -> dict[str, Any]:
    ins = [(g, y) for g, y in zip(guesses, labels, strict=True) if y != OOS_ID]
    oos = [g for g, y in zip(guesses, labels, strict=True) if y == OOS_ID]
    n = max(1, len(ins))
    return {
        "n_in_scope": len(ins),
        "top1": round(sum(g.best == y for g, y in ins) / n, 4),
        "top3": round(sum(y in [m for m, _ in g.candidates[:3]] for g, y in ins) / n, 4),
        "accepted_right": round(sum(g.motive_id == y for g, y in ins) / n, 4),
        "misrouted": round(sum(g.motive_id is not None and g.motive_id != y for g, y in ins) / n, 4),
        "false_rejections": round(sum(g.motive_id is None for g, _ in ins) / n, 4),
        "false_rejections_of_right_top1": round(sum(g.motive_id is None and g.best == y for g, y in ins) / n, 4),
        "n_out_of_scope": len(oos),
        "oos_rejected": round(sum(g.motive_id is None for g in oos) / max(1, len(oos)), 4) if oos else None,
    }


def in_top(guess: MotiveGuess, label: str, k: int) -> bool:
    return label in [m for m, _ in guess.candidates[:k]]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--sample", type=int, default=120, help="held_out sentences spoken per condition")
    ap.add_argument("--fit-sample", type=int, default=60, help="examples spoken to fit the hybrid")
    ap.add_argument("--k", type=int, default=6, help="text top-K re-scored by phrase scoring")
    ap.add_argument(
        "--phrases-all",
        type=int,
        default=30,
        help="held_out utterances (clean) on which phrase scoring alone ranks ALL motives (slow: ~2.5 s each)",
    )
    ap.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "agi-router-bench-data")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "motives.json")
    args = ap.parse_args(argv)

    cat = Catalogue.load()
    oos_tune, oos_held = load_out_of_scope(OOS)
    held = [(t, m.id) for m in cat.motives.values() for t in m.held_out]
    results: dict[str, Any] = {
        "machine": machine_info(
            numpy=version("numpy"), ctranslate2=version("ctranslate2"), faster_whisper=version("faster-whisper")
        ),
        "catalogue": {
            "version": cat.version,
            "motives": len(cat.motives),
            "examples": sum(len(m.examples) for m in cat.motives.values()),
            "held_out": len(held),
            "oos_tune": len(oos_tune),
            "oos_held_out": len(oos_held),
        },
    }

    # ---------------------------------------------------------------- (a) perfect transcripts
    texts = [t for t, _ in held] + oos_held
    labels = [y for _, y in held] + [OOS_ID] * len(oos_held)
    text_part: dict[str, Any] = {}
    clf: MotiveClassifier | None = None
    for method in ("centroid_knn", "logreg"):
        t0 = time.perf_counter()
        c = MotiveClassifier(cat, out_of_scope=oos_tune, method=method)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        guesses = c.classify_many(texts)
        per = (time.perf_counter() - t0) / len(texts)
        text_part[method] = {
            **text_metrics(guesses, labels),
            "train_s": round(train_s, 2),
            "classify_ms": round(per * 1000, 3),
            "cv_top1_examples": round(c.cv_accuracy, 4),
            "temperature": round(c.temperature, 4),
            "reject": {"min_confidence": c.reject.min_confidence, "min_margin": c.reject.min_margin},
        }
        if method == "centroid_knn":
            clf = c
    assert clf is not None
    results["text_perfect_transcripts"] = text_part

    # ---------------------------------------------------------------- audio
    model_dir = ensure_whisper_base(default_model_dir(args.data_dir))
    rec = WhisperRecognizer(model_dir, workers=1, cpu_threads=1, beam_size=1, window_s=6)
    t0 = time.perf_counter()
    scorer = PhraseScorer(model_dir, window_s=6, cpu_threads=1)
    results["phrase_scorer"] = {
        "load_s": round(scorer.load_s, 2),
        "baseline_s": round(scorer.baseline_s, 2),
        "phrases": len(scorer.baseline),
        "total_init_s": round(time.perf_counter() - t0, 2),
    }
    hybrid = HybridClassifier(clf, scorer, k=args.k)
    rec.transcribe_sync(np.zeros(8000, dtype=np.int16))  # warm-up
    hybrid.classify_audio(np.zeros(8000, dtype=np.int16), "")

    with tempfile.TemporaryDirectory(prefix="bench-motives-") as d:
        work = Path(d)

        def voiced(items: Sequence[tuple[str, str]], snr: float | None, offset: int) -> list[Utt]:
            out = []
            for i, (text, label) in enumerate(items):
                j = i + offset
                pcm = speak(text, VOICES[j % 3], SPEEDS[(j // 3) % 3], work)
                out.append(Utt(text, label, degrade(pcm, snr, seed=j)))
            return out

        # -------------------------------------------------------- fit the hybrid on examples audio
        ex = [(t, m.id) for m in cat.motives.values() for t in m.examples]
        fit_items = spaced(ex, args.fit_sample) + [(t, OOS_ID) for t in oos_tune]
        fit_utts = voiced(fit_items, None, offset=1)
        fit_rows = []
        for u in fit_utts:
            tr = rec.transcribe_sync(u.pcm)
            tg, short, scores = hybrid.parts(u.pcm, tr)
            fit_rows.append((u.label, tg, short, scores))
        best: tuple[float, float] = (-1.0, 0.0)
        for beta in (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0):
            acc = float(
                np.mean([hybrid.fuse(tg, s, sc, beta=beta).best == y for y, tg, s, sc in fit_rows if y != OOS_ID])
            )
            if acc > best[0] + 1e-9:
                best = (acc, beta)
        beta = best[1]
        # temperature: log-loss of the fused short list on in-scope fit utterances whose label is in the list
        best_t, best_loss = 1.0, math.inf
        for t in np.exp(np.linspace(math.log(0.05), math.log(20.0), 60)):
            losses = []
            for y, tg, s, sc in fit_rows:
                if y == OOS_ID:
                    continue
                p = dict(hybrid.fuse(tg, s, sc, beta=beta, temperature=float(t)).candidates)
                losses.append(-math.log(max(p.get(y, 0.0), 1e-6)))
            if np.mean(losses) < best_loss:
                best_t, best_loss = float(t), float(np.mean(losses))
        fused = [(y, hybrid.fuse(tg, s, sc, beta=beta, temperature=best_t)) for y, tg, s, sc in fit_rows]
        ins = [(y, g) for y, g in fused if y != OOS_ID]
        outs = [g for y, g in fused if y == OOS_ID]
        rule = choose_reject_rule(
            np.array([g.confidence for _, g in ins]),
            np.array([g.runner_up_confidence for _, g in ins]),
            np.array([g.best == y for y, g in ins]),
            np.array([g.confidence for g in outs]),
            np.array([g.runner_up_confidence for g in outs]),
        )
        hybrid.beta, hybrid.temperature, hybrid.reject = beta, best_t, rule
        results["hybrid_fit"] = {
            "utterances": len(fit_rows),
            "beta": beta,
            "fit_top1": round(best[0], 4),
            "temperature": round(best_t, 4),
            "reject": {"min_confidence": rule.min_confidence, "min_margin": rule.min_margin},
            "k": args.k,
        }
        print(f"fit: {results['hybrid_fit']}", file=sys.stderr)

        # -------------------------------------------------------- evaluate on held_out audio
        eval_items = spaced(held, args.sample) + [(t, OOS_ID) for t in oos_held]
        conditions: dict[str, Any] = {}
        for name, snr in (("clean_ulaw", None), ("noise20db_ulaw", 20.0)):
            utts = voiced(eval_items, snr, offset=0)
            text_g: list[MotiveGuess] = []
            hyb_g: list[MotiveGuess] = []
            t_rec: list[float] = []
            t_hyb: list[float] = []
            topk_text = 0
            examples = []
            for u in utts:
                tr = rec.transcribe_sync(u.pcm)
                t_rec.append(tr.latency_s)
                res = hybrid.classify_audio_detailed(u.pcm, tr)
                t_hyb.append(res.latency_s)
                text_g.append(res.text_guess)
                hyb_g.append(res.guess)
                if u.label != OOS_ID:
                    topk_text += in_top(res.text_guess, u.label, args.k)
                if len(examples) < 8:
                    examples.append({"said": u.text, "heard": tr.text, "label": u.label, "hybrid": res.guess.best})
            labs = [u.label for u in utts]
            n_in = sum(y != OOS_ID for y in labs)
            total = [a + b for a, b in zip(t_rec, t_hyb, strict=True)]
            conditions[name] = {
                "utterances": len(utts),
                "audio_s_mean": round(float(np.mean([len(u.pcm) / 8000 for u in utts])), 2),
                "text_only": text_metrics(text_g, labs),
                "hybrid": text_metrics(hyb_g, labs),
                "text_topk_recall": round(topk_text / max(1, n_in), 4),
                "latency_ms": {
                    "transcribe_p50": round(pct(t_rec, 50) * 1000, 1),
                    "transcribe_p99": round(pct(t_rec, 99) * 1000, 1),
                    "hybrid_extra_p50": round(pct(t_hyb, 50) * 1000, 1),
                    "hybrid_extra_p99": round(pct(t_hyb, 99) * 1000, 1),
                    "total_p50": round(pct(total, 50) * 1000, 1),
                    "total_p99": round(pct(total, 99) * 1000, 1),
                },
                "examples": examples,
            }
            print(f"{name}: done", file=sys.stderr)
            if name == "clean_ulaw" and args.phrases_all:
                conditions[name]["phrases_all_motives"] = phrases_alone(scorer, cat, utts, args.phrases_all)
        results["audio"] = conditions
    rec.close()

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print_markdown(results)
    return 0


def phrases_alone(scorer: PhraseScorer, cat: Catalogue, utts: Sequence[Utt], n: int) -> dict[str, Any]:
    """Phrase scoring with no transcript at all: every motive's key phrases against the audio."""
    ids = list(cat.motives)
    ins = spaced([u for u in utts if u.label != OOS_ID], n)
    top1 = top3 = skill = 0
    lat = []
    for u in ins:
        t0 = time.perf_counter()
        s = scorer.score(u.pcm, ids)
        lat.append(time.perf_counter() - t0)
        ranked = sorted(ids, key=lambda m: -s[m])
        top1 += ranked[0] == u.label
        top3 += u.label in ranked[:3]
        skill += cat.motives[ranked[0]].skill == cat.motives[u.label].skill
    k = max(1, len(ins))
    return {
        "utterances": len(ins),
        "phrases": sum(len(scorer.phrases.get(m, ())) for m in ids),
        "top1": round(top1 / k, 4),
        "top3": round(top3 / k, 4),
        "skill_right": round(skill / k, 4),
        "latency_ms_p50": round(pct(lat, 50) * 1000, 1),
    }


def print_markdown(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(f"## Motive recognition ({m['date']})\n")
    print(f"{m['cpu_model']}, {m['nproc']} CPUs, Python {m['python']}, ctranslate2 {m['ctranslate2']}, one thread\n")
    c = r["catalogue"]
    print(
        f"Catalogue {c['version']}: {c['motives']} motives, {c['examples']} examples (tuning), "
        f"{c['held_out']} held_out, out-of-scope {c['oos_tune']} tune / {c['oos_held_out']} held out\n"
    )
    print("### (a) text classifier, held_out as perfect transcripts\n")
    print("| method | top-1 | top-3 | accepted right | misrouted | rejected | OOS rejected | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, t in r["text_perfect_transcripts"].items():
        print(
            f"| {name} | {t['top1']:.1%} | {t['top3']:.1%} | {t['accepted_right']:.1%} | {t['misrouted']:.1%} | "
            f"{t['false_rejections']:.1%} | {t['oos_rejected']:.1%} | {t['train_s']} |"
        )
    f = r["hybrid_fit"]
    print(f"\nHybrid fit on {f['utterances']} espeak example utterances: beta={f['beta']}, T={f['temperature']}, ")
    print(f"reject conf<{f['reject']['min_confidence']:.2f} or margin<{f['reject']['min_margin']:.2f}, K={f['k']}\n")
    print("### (b, c) espeak-ng audio of held_out, 8 kHz telephone band, µ-law\n")
    print(
        "| condition | path | top-1 | top-3 | accepted right | misrouted | rejected | OOS rejected | p50 ms | p99 ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, a in r["audio"].items():
        lat = a["latency_ms"]
        for path, key, p50, p99 in (
            ("Whisper -> text", "text_only", lat["transcribe_p50"], lat["transcribe_p99"]),
            ("Whisper -> hybrid", "hybrid", lat["total_p50"], lat["total_p99"]),
        ):
            t = a[key]
            print(
                f"| {name} | {path} | {t['top1']:.1%} | {t['top3']:.1%} | {t['accepted_right']:.1%} | "
                f"{t['misrouted']:.1%} | {t['false_rejections']:.1%} | {t['oos_rejected']:.1%} | {p50} | {p99} |"
            )
        print(
            f"| {name} | (text top-{f['k']} recall {a['text_topk_recall']:.1%}; hybrid extra p50/p99 "
            f"{lat['hybrid_extra_p50']}/{lat['hybrid_extra_p99']} ms) |||||||||"
        )
        pa = a.get("phrases_all_motives")
        if pa:
            print(
                f"| {name} | phrase scoring alone, all {pa['phrases']} phrases ({pa['utterances']} utt.) | "
                f"{pa['top1']:.1%} | {pa['top3']:.1%} | (skill right {pa['skill_right']:.1%}) ||||| "
                f"{pa['latency_ms_p50']} | |"
            )


if __name__ == "__main__":
    sys.exit(main())
