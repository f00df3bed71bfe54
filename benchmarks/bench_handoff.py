"""What the agent's context costs on the routing path (issue #19).

The router as `agi-router serve` builds it (tests/test_metrics.py's rig: bundled policy, SQLite directory, no
AMI), FastAGI on loopback with res_agi's wire format played by tests/fakeasterisk.py: N calls routed to a
queue with the handoff on (11 more SET VARIABLE round trips before ROUTER_DONE) and off, interleaved in
rounds; reported: the router's own decision latency and the time from the AGI header to ROUTER_DONE, p50/p99.

    .venv/bin/python benchmarks/bench_handoff.py [--calls 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fakeasterisk import FakeChannel, run_call
from tests.test_metrics import NO_ACCOUNT, live_router


def pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


async def one_round(calls: int, handoff: bool) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory() as d:
        async with live_router(Path(d)) as live:
            if not handoff:
                live.router.flow.handoff = None
            lat: list[float] = []
            wall: list[float] = []
            live.router.flow.on_result = lambda r: lat.append(r.decision_latency_s or 0.0)
            for i in range(calls):
                ch = FakeChannel(callerid=NO_ACCOUNT, uniqueid=f"9.{i}", args=["attestation_droits"])
                t0 = time.perf_counter()
                await run_call("127.0.0.1", live.agi_port, ch)
                wall.append(time.perf_counter() - t0)
                assert ch.variables.get("ROUTER_DONE") == "1" and ("__ROUTER_REF" in ch.variables) == handoff
            await live.router.flow.drain()
            return lat, wall


async def main(calls: int, rounds: int) -> None:
    rows: dict[bool, list[tuple[float, float, float, float]]] = {True: [], False: []}
    for _ in range(rounds):
        for handoff in (False, True):
            lat, wall = await one_round(calls, handoff)
            rows[handoff].append((pct(lat, 0.5), pct(lat, 0.99), pct(wall, 0.5), pct(wall, 0.99)))
    for handoff, rs in rows.items():
        name = "handoff on " if handoff else "handoff off"
        cols = list(zip(*rs, strict=True))
        fmt = [f"{min(c) * 1000:.2f}-{max(c) * 1000:.2f}" for c in cols]
        print(f"{name}: decision p50 {fmt[0]} ms, p99 {fmt[1]} ms; AGI session p50 {fmt[2]} ms, p99 {fmt[3]} ms "
              f"({rounds} rounds x {calls} calls, range over rounds)")  # fmt: skip
    print(f"(median of medians, AGI session: on {statistics.median(r[2] for r in rows[True]) * 1000:.2f} ms, "
          f"off {statistics.median(r[2] for r in rows[False]) * 1000:.2f} ms)")  # fmt: skip


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    asyncio.run(main(a.calls, a.rounds))
