"""FastAGI server CPU per session, agi_router vs panoramisk, with an interval the machine's noise cannot hide.

    .venv/bin/python benchmarks/bench_fastagi_cpu.py [--rounds 12] [--duration 2] [--concurrency 50]

Issue #21: single runs of ``bench_fastagi.py`` flip between "ours is cheaper" and "panoramisk is" on this
shared 2-core machine. Here both servers (``bench_fastagi.start_server``: own process, pinned to one CPU,
the same 3-command route, the same fake res_agi client pinned to the other CPU) are measured in
**interleaved rounds**: each round runs every server once, in a shuffled order, back to back, so slow
phases of the machine hit both alike. The figure is the **paired ratio** of server CPU µs per session
(ours / panoramisk's) per round, with a bootstrap 95 % interval over the rounds (10,000 resamples), for the
default asyncio loop and for uvloop. Writes ``benchmarks/results/fastagi_cpu.json`` and prints markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_fastagi import _pin, cpu_plan, machine_info, run_point, start_server

PAIRS = (("agi_router", "panoramisk"), ("agi_router+uvloop", "panoramisk+uvloop"))


def bootstrap(values: list[float], n: int = 10_000, seed: int = 21) -> tuple[float, float]:
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(values, k=len(values))) for _ in range(n))
    return means[int(0.025 * n)], means[int(0.975 * n) - 1]


async def rounds(args: argparse.Namespace, servers: dict[str, Any]) -> dict[str, list[float]]:
    cpu: dict[str, list[float]] = {k: [] for k in servers}
    rng = random.Random(7)
    for r in range(args.rounds):
        order = list(servers)
        rng.shuffle(order)
        for kind in order:
            p = await run_point(servers[kind], args.concurrency, warmup=0.5, duration=args.duration,
                                max_sessions=500_000, timeout=5.0, close_after_answers=False)  # fmt: skip
            if p.failed:
                raise SystemExit(f"{kind}: {p.failed} failed session(s) in round {r}: {p.failures}")
            cpu[kind].append(p.server_cpu_us_per_session)
            await asyncio.sleep(0.2)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {cpu[k][-1]:.0f}" for k in servers),
              file=sys.stderr)  # fmt: skip
    return cpu


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--duration", type=float, default=2.0, help="measured seconds per server per round")
    ap.add_argument("--concurrency", type=int, default=50)
    args = ap.parse_args()
    server_cpu, client_cpu = cpu_plan()
    servers: dict[str, Any] = {}
    try:
        for a, b in PAIRS:
            servers[a], servers[b] = start_server(a, server_cpu), start_server(b, server_cpu)
        _pin(client_cpu)
        cpu = asyncio.run(rounds(args, servers))
    finally:
        for s in servers.values():
            s.stop()
    out: dict[str, Any] = {"machine": machine_info(), "rounds": args.rounds, "duration_s": args.duration,
                           "concurrency": args.concurrency, "cpu_us_per_session": cpu, "pairs": {}}  # fmt: skip
    print(f"\n{args.rounds} interleaved rounds, {args.duration:g} s each, {args.concurrency} concurrent sessions\n")
    print("| loop | agi_router µs/session (median) | panoramisk µs/session (median) "
          "| ratio ours/theirs, mean [95 % CI] |")  # fmt: skip
    print("|---|---|---|---|")
    for a, b in PAIRS:
        ratios = [x / y for x, y in zip(cpu[a], cpu[b], strict=True)]
        lo, hi = bootstrap(ratios)
        mean = statistics.fmean(ratios)
        out["pairs"][f"{a}/{b}"] = {"ratio_mean": mean, "ci95": [lo, hi], "ratios": ratios}
        loop = "uvloop" if "uvloop" in a else "asyncio"
        print(f"| {loop} | {statistics.median(cpu[a]):.0f} | {statistics.median(cpu[b]):.0f} | "
              f"{mean:.2f} [{lo:.2f}, {hi:.2f}] |")  # fmt: skip
    (Path(__file__).resolve().parent / "results" / "fastagi_cpu.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
