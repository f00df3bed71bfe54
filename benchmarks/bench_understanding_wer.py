"""Understanding on transcripts as a recogniser writes them: the held-out sentences with simulated
recognition errors (``benchmarks/asr_noise.py``) at 0, 10, 20 and 30 % WER, several seeds.

    .venv/bin/python benchmarks/bench_understanding_wer.py [--seeds 5] [--bootstrap 1000] [--set heldout|tune]

Reported per WER (shipped thresholds, chosen on the TUNE set's perfect transcripts; nothing here is tuned on
held-out): right queue first time, wrong deflections (count over every sentence and seed), re-asks,
out-of-scope not routed to a skill queue, several requests caught, several-requests on single-motive
sentences; each share with a 95 % bootstrap interval over sentences (a sentence's outcome averaged over
its seeds). ``--set tune`` runs the same on the tune sentences (the set to use for choosing thresholds).

Writes ``benchmarks/results/understanding_wer.json`` (held-out) and prints markdown.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from asr_noise import corrupt, word_error_rate  # benchmarks/asr_noise.py
from machine import machine_info  # benchmarks/machine.py

from agi_router.motives.catalogue import Catalogue
from agi_router.motives.classifier import MotiveClassifier, load_out_of_scope
from agi_router.motives.evaluation import Item, evaluate, load_items
from agi_router.motives.understanding import Level, Understander
from agi_router.policy.config import load_policy

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data"
WERS = (0.0, 0.1, 0.2, 0.3)

# name -> (kind of item, what counts for one sentence)
MEASURES: dict[str, tuple[str, Any]] = {
    "right queue first time": ("motive", lambda u, o: o in ("motive_right", "queue_right")),
    "re-asked": ("motive", lambda u, o: o == "reprompted"),
    "misrouted": ("motive", lambda u, o: o == "misrouted"),
    "out-of-scope not routed": ("out_of_scope", lambda u, o: o == "oos_rejected"),
    "several requests caught": ("several", lambda u, o: o == "several_caught"),
    "several on single-motive": ("motive", lambda u, o: u.level is Level.SEVERAL),
}


def run(
    items: Sequence[Item],
    understander: Understander,
    deflectable: frozenset[str],
    wer: float,
    seeds: Sequence[int],
    boot: int,
) -> dict[str, Any]:
    """One WER level: every item corrupted once per seed, evaluated, then summarised per sentence."""
    per_item: list[dict[str, list[bool]]] = [{} for _ in items]
    wrong = 0
    achieved: list[float] = []
    for seed in seeds:
        rng = random.Random(f"{seed}:{wer}")
        texts = [corrupt(it.text, wer, rng) for it in items]
        achieved.extend(word_error_rate(it.text, t) for it, t in zip(items, texts, strict=True))
        report = evaluate(items, understander, deflectable, texts=texts)
        wrong += report.outcomes["deflected_wrongly"]
        for k, (it, u, o) in enumerate(report.examples):
            for name, (kind, hit) in MEASURES.items():
                if it.kind == kind:
                    per_item[k].setdefault(name, []).append(bool(hit(u, o)))
    out: dict[str, Any] = {
        "wer": wer,
        "measured_wer": round(sum(achieved) / max(1, len(achieved)), 4),
        "seeds": list(seeds),
        "wrong_deflections": wrong,
        "sentences_x_seeds": len(items) * len(seeds),
    }
    for name in MEASURES:
        values = [sum(v[name]) / len(v[name]) for v in per_item if name in v]
        out[name] = share_interval(values, boot)
    return out


def share_interval(values: Sequence[float], boot: int, seed: int = 7) -> dict[str, float | int]:
    """Mean of per-sentence values, and its 95 % bootstrap interval over sentences."""
    if not values:
        return {"share": 0.0, "lo": 0.0, "hi": 0.0, "n": 0}
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choice(values) for _ in range(n)) / n for _ in range(boot))
    lo, hi = means[int(0.025 * boot)], means[max(0, int(0.975 * boot) - 1)]
    return {"share": round(sum(values) / n, 4), "lo": round(lo, 4), "hi": round(hi, 4), "n": n}


def table(rows: Sequence[dict[str, Any]]) -> str:
    head = "| WER (measured) | " + " | ".join(MEASURES) + " | wrong deflections |"
    lines = [head, "|" + "---|" * (len(MEASURES) + 2)]
    for r in rows:
        cells = [
            f"{100 * r[m]['share']:.1f} % ({100 * r[m]['lo']:.1f}-{100 * r[m]['hi']:.1f})" for m in MEASURES
        ]
        lines.append(
            f"| {100 * r['wer']:.0f} % ({100 * r['measured_wer']:.0f} %) | "
            + " | ".join(cells)
            + f" | {r['wrong_deflections']} of {r['sentences_x_seeds']} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--set", choices=("heldout", "tune"), default="heldout")
    args = ap.parse_args()
    if args.seeds < 1 or args.bootstrap < 10:
        print("error: --seeds >= 1 and --bootstrap >= 10", file=sys.stderr)
        return 2
    cat = Catalogue.load()
    deflectable = frozenset(load_policy(catalogue=cat).deflect_motives)
    understander = Understander(cat, MotiveClassifier(cat, out_of_scope=load_out_of_scope()[0]))
    items = load_items(DATA / f"understanding_{args.set}.tsv", cat)
    seeds = list(range(1, args.seeds + 1))
    rows = [run(items, understander, deflectable, w, seeds, args.bootstrap) for w in WERS]
    print(machine_info())
    print(f"\n{args.set} set, {len(items)} sentences x {len(seeds)} seeds, shipped thresholds\n")
    print(table(rows))
    if args.set == "heldout":
        out = ROOT / "benchmarks" / "results" / "understanding_wer.json"
        out.write_text(json.dumps({"set": args.set, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
