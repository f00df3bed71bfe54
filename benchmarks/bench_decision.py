"""Latency of the pure decision core: ``agi_router.policy.engine.decide(policy, facts)``.

Loads the bundled catalogue and policy when ``agi_router/data/motives.toml`` exists, otherwise the
test fixtures ``tests/fixtures/catalogue-mini.toml`` + ``policy-mini.toml``. Builds a seeded, realistic
mix of CallFacts (active / inactive / no / unknown accounts, withheld callers, histories of 0-3 past
calls, every catalogue motive plus none / unknown / human requests, some queue snapshots, saturated
or stale), then times each ``decide`` call with ``time.perf_counter_ns``.

    .venv/bin/python benchmarks/bench_decision.py [--calls 200000] [--seed 3646]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from machine import cpu_model as _cpu_model  # benchmarks/machine.py

from agi_router.motives.catalogue import Catalogue
from agi_router.policy.config import Policy, load_policy
from agi_router.policy.engine import decide
from agi_router.policy.model import AccountFacts, Action, CallFacts, MotiveFacts, PastCall, QueueSnapshot

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "agi_router" / "data"
FIXTURES = ROOT / "tests" / "fixtures"


def load() -> tuple[Policy, str]:
    """The bundled catalogue + policy if the catalogue is shipped, else the mini test fixtures."""
    if (DATA / "motives.toml").exists():
        catalogue = Catalogue.load(DATA / "motives.toml")
        return load_policy(DATA / "policy-3646-2024.toml", catalogue=catalogue), "bundled"
    catalogue = Catalogue.load(FIXTURES / "catalogue-mini.toml")
    return load_policy(FIXTURES / "policy-mini.toml", catalogue=catalogue), "tests/fixtures (mini)"


def build_facts(policy: Policy, n: int, rng: random.Random) -> list[CallFacts]:
    motive_ids = [m.id for m in policy.catalogue]
    deflectable = sorted(policy.deflect_motives)
    queues = sorted({policy.queue_for(m) for m in motive_ids})
    base = dt.datetime(2026, 11, 23, 7, 0, tzinfo=dt.UTC)  # Monday 08:00 in Paris
    out: list[CallFacts] = []
    for i in range(n):
        now = base + dt.timedelta(days=rng.randrange(7), seconds=rng.randrange(12 * 3600))
        today = now.date()
        withheld = rng.random() < 0.05
        r = rng.random()
        if withheld or r < 0.15:
            account = AccountFacts.none()
        elif r < 0.20:
            account = AccountFacts.unknown()  # directory down or timed out
        elif r < 0.35:
            account = AccountFacts(known=True, exists=True, last_login=today - dt.timedelta(days=rng.randint(200, 900)))
        elif r < 0.38:
            account = AccountFacts(known=True, exists=True, last_login=None)
        else:
            account = AccountFacts(known=True, exists=True, last_login=today - dt.timedelta(days=rng.randint(0, 170)))
        r = rng.random()
        if r < 0.45 and deflectable:
            motive = MotiveFacts(rng.choice(deflectable), 1.0, "dtmf")
        elif r < 0.80:
            motive = MotiveFacts(rng.choice(motive_ids), rng.choice((1.0, 0.95, 0.7, 0.5)), "speech")
        elif r < 0.90:
            motive = MotiveFacts(None, 0.0, "none")
        elif r < 0.95:
            motive = MotiveFacts(None, 1.0, "dtmf", human_requested=True)
        else:
            motive = MotiveFacts("no_such_motive", 1.0, "variable")
        history: list[PastCall] = []
        at = now
        for _ in range(rng.choice((0, 0, 0, 1, 1, 2, 3))):
            at = at - dt.timedelta(minutes=rng.randint(1, 15))
            action = rng.choice((Action.DEFLECT, Action.DEFLECT, Action.HANGUP, Action.QUEUE))
            history.append(PastCall(at, motive.motive_id or rng.choice(motive_ids), action))
        history.reverse()  # oldest first
        snapshots: dict[str, QueueSnapshot] = {}
        if rng.random() < 0.5:
            for q in queues:
                waiting = rng.choice((0, 2, 10, 45))
                snapshots[q] = QueueSnapshot(
                    q,
                    waiting=waiting,
                    available_agents=rng.choice((0, 0, 3)),
                    logged_in_agents=5,
                    estimated_wait_s=waiting * 40.0,
                    fresh=rng.random() < 0.9,
                )
        out.append(
            CallFacts(
                call_id=f"1763900000.{i}",
                caller=f"c-{rng.getrandbits(48):012x}",
                withheld=withheld,
                account=account,
                motive=motive,
                now=now,
                history=tuple(history),
                queues=snapshots,
            )
        )
    return out


def percentile(sorted_values: Sequence[int], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return float(sorted_values[rank - 1])


def timer_overhead_ns(samples: int = 100_000) -> float:
    clock = time.perf_counter_ns
    best = []
    for _ in range(samples):
        a = clock()
        b = clock()
        best.append(b - a)
    best.sort()
    return float(best[len(best) // 2])


def machine_info() -> dict[str, Any]:
    cpu_model = _cpu_model()
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=200_000, help="timed decide() calls (default 200000)")
    ap.add_argument("--distinct", type=int, default=20_000, help="distinct CallFacts cycled over (default 20000)")
    ap.add_argument("--seed", type=int, default=3646)
    ap.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "decision.json")
    args = ap.parse_args(argv)
    if args.calls < 1 or args.distinct < 1:
        ap.error("--calls and --distinct must be positive")

    policy, source = load()
    facts = build_facts(policy, args.distinct, random.Random(args.seed))
    n_facts = len(facts)
    clock = time.perf_counter_ns

    for f in facts[: min(n_facts, 10_000)]:  # warm-up
        decide(policy, f)

    samples = [0] * args.calls
    actions: Counter[str] = Counter()
    rules: Counter[str] = Counter()
    for i in range(args.calls):
        f = facts[i % n_facts]
        t0 = clock()
        d = decide(policy, f)
        samples[i] = clock() - t0
        actions[d.action.value] += 1
        rules[d.rule] += 1

    # Throughput without the per-call clock reads and counters.
    t0 = clock()
    for i in range(args.calls):
        decide(policy, facts[i % n_facts])
    bulk_s = (clock() - t0) / 1e9

    samples.sort()
    overhead = timer_overhead_ns()
    result = {
        "benchmark": "decision",
        "machine": machine_info(),
        "config": {
            "policy_source": source,
            "policy": policy.label,
            "catalogue_motives": len(policy.catalogue),
            "calls": args.calls,
            "distinct_facts": n_facts,
            "seed": args.seed,
            "gc": "enabled",
        },
        "latency_us": {
            "p50": round(percentile(samples, 50) / 1e3, 3),
            "p99": round(percentile(samples, 99) / 1e3, 3),
            "p99_9": round(percentile(samples, 99.9) / 1e3, 3),
            "max": round(samples[-1] / 1e3, 3),
            "mean": round(sum(samples) / len(samples) / 1e3, 3),
        },
        "timer_overhead_ns": overhead,
        "calls_per_s": round(args.calls / bulk_s),
        "mix": {"actions": dict(actions.most_common()), "rules": dict(rules.most_common())},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")

    lat = result["latency_us"]
    m = result["machine"]
    print(f"decide(), {m['cpu_model']}, Python {m['python']}, {m['date']}; policy {policy.label} ({source})")
    print()
    print("| calls | p50 µs | p99 µs | p99.9 µs | max µs | calls/s |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {args.calls} | {lat['p50']:.2f} | {lat['p99']:.2f} | {lat['p99_9']:.2f} | {lat['max']:.1f} "
        f"| {result['calls_per_s']:,} |"
    )
    print()
    print(f"per-call timer overhead (two perf_counter_ns reads): ~{overhead:.0f} ns, included in the latencies")
    print("mix: " + ", ".join(f"{k} {100 * v / args.calls:.1f}%" for k, v in actions.most_common()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
