"""What one response deadline costs the FastAGI session: ``asyncio.timeout`` (one timer handle scheduled and
cancelled per wait) against the session's lazy timer (``agi_router/agi/deadline.py``, one handle per session).

A session waits 4 times on a 3-command route (the header, then each answer). Runs the empty wait ``--n``
times, ``--repeats`` times, and prints the range of µs per wait.

    .venv/bin/python benchmarks/bench_agi_deadline.py [--n 200000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agi_router.agi.deadline import Deadline


async def _run(n: int, repeats: int) -> dict[str, list[float]]:
    res: dict[str, list[float]] = {"asyncio.timeout": [], "Deadline (agi-router)": []}
    d = Deadline()
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n):
            async with asyncio.timeout(5.0):  # noqa: ASYNC100 (the cost of the context is measured)
                pass
        res["asyncio.timeout"].append((time.perf_counter() - t) / n * 1e6)
        t = time.perf_counter()
        for _ in range(n):
            d.arm(5.0)
            try:
                pass
            finally:
                d.disarm()
        res["Deadline (agi-router)"].append((time.perf_counter() - t) / n * 1e6)
    d.close()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    for name, v in asyncio.run(_run(a.n, a.repeats)).items():
        print(f"{name:24s} {min(v):.2f}-{max(v):.2f} µs per wait; x4 per session: {4 * min(v):.1f}-{4 * max(v):.1f} µs")


if __name__ == "__main__":
    main()
