"""The Kamailio SIP edge (edge/kamailio.cfg, issue #20 item 3) under a scanner flood, through a real Asterisk 22.

Per repetition, two runs with the same load:

* ``edge``: legitimate SIPp callers (loadtest/scenarios/caller-no-media.xml, 127.0.0.3) call 3646 through
  Kamailio while a scanner (loadtest/scenarios/scanner.xml, 127.0.0.2: OPTIONS + REGISTER with made-up
  credentials + INVITE to a non-hotline number, ~200 requests/s) floods the edge;
* ``direct``: the same callers (from 127.0.0.1, the address the shipped pjsip.conf trusts) and the same flood
  straight at Asterisk.

Reported per run: legitimate calls answered (%), set-up time INVITE -> 200 OK (ms, from SIPp's message log),
time from the flood's start to its ban (Kamailio's EDGE-BAN log line) and the ban reason, Kamailio CPU seconds
(utime + stime of all its processes, /proc/<pid>/stat) per 1,000 SIP requests it received (its
core:rcv_requests counter), Asterisk's CPU seconds over the run; plus, per repetition, the time to ban a plain
OPTIONS flood (200/s, only pike can stop it). Summary: min / median / max over the repetitions.

Asterisk answers 3646 with a test-only context (no router): the edge is measured, not the routing
(tests/test_real_edge.py's set-up). Needs AGI_ROUTER_ASTERISK, kamailio, sipp, root.

    AGI_ROUTER_ASTERISK=/opt/ast22/sbin/asterisk .venv/bin/python benchmarks/bench_edge.py \\
        --repeat 3 [--output benchmarks/results/edge.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import machine_info
from tests.test_real_edge import (
    CALLER_IP,
    SCANNER_IP,
    Pbx,
    legit_callers,
    options_flood,
    scanner,
    start_edge,
    start_pbx,
)


def pid_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], q: float) -> float | None:
    return round(sorted(xs)[min(len(xs) - 1, int(q * len(xs)))], 2) if xs else None


def one_run(pbx: Pbx, root: Path, with_edge: bool, calls: int, rate: float, flood_cps: float) -> dict[str, Any]:
    assert pbx.ast.proc is not None
    edge = start_edge(root, pbx.ast.sip_port) if with_edge else None
    try:
        target = edge.address if edge else f"127.0.0.1:{pbx.ast.sip_port}"
        legit = legit_callers(target, root / "callers", calls=calls, rate=rate, ip=CALLER_IP if edge else "127.0.0.1")
        flood_seconds = calls / rate + 2
        time.sleep(1)
        ast_cpu0 = pid_cpu_seconds(pbx.ast.proc.pid)
        kam_cpu0 = edge.cpu_seconds() if edge else 0.0
        req0 = edge.stats().get("core:rcv_requests", 0) if edge else 0
        flood = scanner(target, root / "scanner", calls=int(flood_cps * flood_seconds), rate=flood_cps, trace=False)
        ban = edge.wait_ban(SCANNER_IP, timeout=10) if edge else None
        flood.wait(flood_seconds + 60)
        legit.wait(calls / rate + 120)
        out: dict[str, Any] = {"mode": "edge" if edge else "direct"}
        stats = legit.final_stats()
        ok, failed = int(stats.get("SuccessfulCall(C)", 0)), int(stats.get("FailedCall(C)", 0))
        setup = legit.setup_times_ms()
        out["legit_calls"] = calls
        out["legit_answered_pct"] = round(100 * ok / calls, 2)
        out["legit_failed"] = failed
        out["setup_ms"] = {"p50": pct(setup, 0.5), "p95": pct(setup, 0.95), "max": pct(setup, 1.0)}
        fstats = flood.final_stats()
        out["flood_requests"] = 3 * int(fstats.get("TotalCallCreated", 0))
        out["flood_requests_per_s"] = round(3 * flood_cps, 1)
        out["asterisk_cpu_s"] = round(pid_cpu_seconds(pbx.ast.proc.pid) - ast_cpu0, 3)
        if edge is not None:
            out["time_to_ban_s"] = round(ban[0] - flood.started, 3) if ban else None
            out["ban_reason"] = ban[1] if ban else None
            cpu = edge.cpu_seconds() - kam_cpu0
            reqs = edge.stats().get("core:rcv_requests", 0) - req0
            out["kamailio_cpu_s"] = round(cpu, 3)
            out["kamailio_requests"] = reqs
            out["kamailio_cpu_s_per_1000_requests"] = round(1000 * cpu / reqs, 4) if reqs else None
        return out
    finally:
        if edge is not None:
            edge.stop()


def pike_ban(pbx: Pbx, root: Path) -> float | None:
    edge = start_edge(root, pbx.ast.sip_port)
    try:
        started = time.monotonic()
        options_flood(("127.0.0.1", edge.port), "127.0.0.10", rate=200, seconds=3)
        ban = edge.wait_ban("127.0.0.10", timeout=1)
        return round(ban[0] - started, 3) if ban and ban[1] == "pike" else None
    finally:
        edge.stop()


def spread(xs: list[float | None]) -> dict[str, float | None]:
    vals = [x for x in xs if x is not None]
    if not vals:
        return {"min": None, "median": None, "max": None}
    return {"min": min(vals), "median": round(statistics.median(vals), 4), "max": max(vals)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--calls", type=int, default=100, help="legitimate calls per run")
    ap.add_argument("--rate", type=float, default=4.0, help="legitimate calls per second")
    ap.add_argument("--flood-cps", type=float, default=67.0, help="scanner 'calls' per second (3 requests each)")
    ap.add_argument("--output", type=Path)
    a = ap.parse_args()
    if not os.environ.get("AGI_ROUTER_ASTERISK"):
        sys.exit("set AGI_ROUTER_ASTERISK=/path/to/asterisk")
    runs: list[dict[str, Any]] = []
    pikes: list[float | None] = []
    with tempfile.TemporaryDirectory(prefix="bench-edge-") as tmp:
        root = Path(tmp)
        pbx = start_pbx(root / "asterisk")
        try:
            for rep in range(a.repeat):
                for with_edge in (True, False):
                    r = one_run(pbx, root / f"run{rep}-{int(with_edge)}", with_edge, a.calls, a.rate, a.flood_cps)
                    r["repetition"] = rep + 1
                    print(json.dumps(r), flush=True)
                    runs.append(r)
                pikes.append(pike_ban(pbx, root / f"pike{rep}"))
        finally:
            pbx.ami.close()
            pbx.ast.stop()

    def col(mode: str, *path: str) -> list[float | None]:
        vals: list[float | None] = []
        for r in runs:
            if r["mode"] != mode:
                continue
            v: Any = r
            for k in path:
                v = v.get(k) if isinstance(v, dict) else None
            vals.append(v)
        return vals

    summary: dict[str, Any] = {}
    for mode in ("edge", "direct"):
        summary[mode] = {
            "legit_answered_pct": spread(col(mode, "legit_answered_pct")),
            "setup_ms_p50": spread(col(mode, "setup_ms", "p50")),
            "setup_ms_p95": spread(col(mode, "setup_ms", "p95")),
            "asterisk_cpu_s": spread(col(mode, "asterisk_cpu_s")),
        }
    summary["edge"]["time_to_ban_s"] = spread(col("edge", "time_to_ban_s"))
    summary["edge"]["ban_reasons"] = sorted({str(r) for r in col("edge", "ban_reason")})
    summary["edge"]["kamailio_cpu_s_per_1000_requests"] = spread(col("edge", "kamailio_cpu_s_per_1000_requests"))
    summary["pike_options_flood_time_to_ban_s"] = spread(pikes)
    res = {
        "benchmark": "edge",
        "repeat": a.repeat,
        "legit_calls_per_run": a.calls,
        "legit_rate_cps": a.rate,
        "flood_requests_per_s": round(3 * a.flood_cps, 1),
        "summary": summary,
        "runs": runs,
        "pike_runs_time_to_ban_s": pikes,
    }
    print(json.dumps(summary, indent=1))
    if a.output is not None:
        old = json.loads(a.output.read_text()) if a.output.exists() else []
        a.output.write_text(json.dumps([*old, {**res, "machine": machine_info()}], indent=1) + "\n")


if __name__ == "__main__":
    main()
