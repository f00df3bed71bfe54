"""The national line on several PBX nodes (issue #22): the Kamailio dispatcher (edge/dispatcher.cfg) in front of
two real Asterisk 22 nodes, one router per node, one shared Redis (tests/test_real_dispatcher.py's rig).

Per repetition, on the same rig:

* ``load``: ``--calls`` SIPp calls at ``--rate`` calls/s through the dispatcher: calls answered (%), the share
  of each node, set-up time INVITE -> 200 OK (p50/p95, SIPp's message log), the dispatcher's CPU seconds
  (utime + stime of all its processes, /proc/<pid>/stat) per call, its idle probing CPU over the same time
  subtracted, and the SIP requests it received per call (core:rcv_requests);
* ``idle failure``: node A killed (SIGKILL) with no traffic: time to the dispatcher's DS-DOWN (OPTIONS probes
  alone), then node A restarted: time from the restart and from "fully booted" to DS-UP (re-admitted);
* ``loaded failure``: the same burst, node A killed after 40 % of it: time to detection (the first DS-TIMEOUT
  of a call relayed to it, or DS-DOWN), calls lost (all placed before detection: calls in progress on the dead
  node), calls placed after detection that failed; node A restarted and re-admitted again.

Summary: min / median / max over the repetitions. Needs AGI_ROUTER_ASTERISK, kamailio, sipp, redis-server.

    AGI_ROUTER_ASTERISK=/opt/ast22/sbin/asterisk .venv/bin/python benchmarks/bench_dispatcher.py \\
        --repeat 3 [--output benchmarks/results/dispatcher.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_edge import pct, spread
from benchmarks.machine import machine_info
from tests.test_real_dispatcher import MOTIVE, National, call_outcomes, start_national


def callers(prefix: str, n: int) -> list[tuple[str, str]]:
    return [(f"{prefix}{k:05d}", MOTIVE) for k in range(n)]


def load_run(rig: National, root: Path, calls: int, rate: float) -> dict[str, Any]:
    ds = rig.dispatcher
    duration = calls / rate
    cpu0, t0 = ds.cpu_seconds(), time.monotonic()  # idle: probes only
    time.sleep(min(10.0, duration))
    idle_cpu_per_s = (ds.cpu_seconds() - cpu0) / (time.monotonic() - t0)
    since = time.monotonic()
    cpu0, req0 = ds.cpu_seconds(), ds.stats().get("core:rcv_requests", 0)
    s = rig.calls(root, callers("0755", calls), rate=rate)
    s.wait(duration + 180)
    time.sleep(1)
    cpu, req = ds.cpu_seconds() - cpu0, ds.stats().get("core:rcv_requests", 0) - req0
    elapsed = time.monotonic() - since
    stats = s.final_stats()
    ok = int(stats.get("SuccessfulCall(C)", 0))
    shares = [len(n.events.routes(since)) if n.events else 0 for n in rig.nodes]
    outcomes = call_outcomes(s.work)
    first, last = outcomes[0][0], outcomes[-1][0]
    setup = s.setup_times_ms()
    net_cpu = max(0.0, cpu - idle_cpu_per_s * elapsed)
    return {
        "calls": calls,
        "offered_cps": rate,
        "placed_cps": round((len(outcomes) - 1) / (last - first), 2) if last > first else None,
        "answered_pct": round(100 * ok / calls, 1),
        "node_shares": shares,
        "setup_ms": {"p50": pct(setup, 0.5), "p95": pct(setup, 0.95)},
        "dispatcher_cpu_s": round(cpu, 3),
        "dispatcher_idle_cpu_s_per_s": round(idle_cpu_per_s, 5),
        "dispatcher_cpu_ms_per_call": round(1000 * net_cpu / calls, 3),
        "dispatcher_requests_per_call": round(req / calls, 2),
    }


def readmit(rig: National) -> dict[str, float | None]:
    uri = re.escape(rig.nodes[0].uri)
    t0 = time.monotonic()
    rig.restart_node(0)
    booted = time.monotonic()
    up = rig.wait_log(rf"DS-UP node={uri}\b", t0, 30)
    return {
        "boot_s": round(booted - t0, 3),
        "readmit_after_restart_s": None if up is None else round(up - t0, 3),
        "readmit_after_booted_s": None if up is None else round(up - booted, 3),
    }


def idle_failure(rig: National) -> dict[str, Any]:
    uri = re.escape(rig.nodes[0].uri)
    time.sleep(3)  # probes settled
    t0 = time.monotonic()
    rig.kill_node(0)
    down = rig.wait_log(rf"DS-DOWN node={uri}\b", t0, 20)
    out: dict[str, Any] = {"detect_idle_s": None if down is None else round(down - t0, 3)}
    time.sleep(1)
    out.update(readmit(rig))
    return out


def loaded_failure(rig: National, root: Path, calls: int, rate: float) -> dict[str, Any]:
    uri = re.escape(rig.nodes[0].uri)
    time.sleep(3)
    s = rig.calls(root, callers("0766", calls), rate=rate)
    time.sleep(0.4 * calls / rate)
    t0, wall0 = time.monotonic(), time.time()
    rig.kill_node(0)
    det = rig.wait_log(rf"DS-(DOWN|TIMEOUT) node={uri}\b", t0, 20)
    s.wait(calls / rate + 180)
    outcomes = call_outcomes(s.work)
    det_wall = None if det is None else wall0 + (det - t0)
    lost = [t for t, ok in outcomes if not ok]
    after = [ok for t, ok in outcomes if det_wall is not None and t > det_wall]
    out: dict[str, Any] = {
        "detect_loaded_s": None if det is None else round(det - t0, 3),
        "calls": len(outcomes),
        "calls_lost": len(lost),
        "calls_lost_placed_after_detection": sum(1 for t in lost if det_wall is None or t > det_wall),
        "calls_after_detection": len(after),
        "failed_after_detection": after.count(False),
    }
    time.sleep(1)
    out.update({f"loaded_{k}": v for k, v in readmit(rig).items()})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--calls", type=int, default=100, help="calls per load run / failure burst")
    ap.add_argument("--rate", type=float, default=10.0, help="calls per second (load run)")
    ap.add_argument("--burst-rate", type=float, default=5.0, help="calls per second (failure burst)")
    ap.add_argument("--output", type=Path)
    a = ap.parse_args()
    if not os.environ.get("AGI_ROUTER_ASTERISK"):
        sys.exit("set AGI_ROUTER_ASTERISK=/path/to/asterisk")
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-dispatcher-") as tmp:
        root = Path(tmp)
        rig = start_national(root / "rig")
        try:
            for rep in range(a.repeat):
                r: dict[str, Any] = {"repetition": rep + 1}
                r["load"] = load_run(rig, root / f"load{rep}", a.calls, a.rate)
                r["idle_failure"] = idle_failure(rig)
                r["loaded_failure"] = loaded_failure(rig, root / f"burst{rep}", a.calls, a.burst_rate)
                print(json.dumps(r), flush=True)
                runs.append(r)
        finally:
            rig.stop()

    def col(*path: str) -> list[float | None]:
        vals: list[float | None] = []
        for run in runs:
            v: Any = run
            for k in path:
                v = v.get(k) if isinstance(v, dict) else None
            vals.append(v)
        return vals

    summary = {
        "answered_pct": spread(col("load", "answered_pct")),
        "placed_cps": spread(col("load", "placed_cps")),
        "setup_ms_p50": spread(col("load", "setup_ms", "p50")),
        "setup_ms_p95": spread(col("load", "setup_ms", "p95")),
        "dispatcher_cpu_ms_per_call": spread(col("load", "dispatcher_cpu_ms_per_call")),
        "dispatcher_requests_per_call": spread(col("load", "dispatcher_requests_per_call")),
        "dispatcher_idle_cpu_s_per_s": spread(col("load", "dispatcher_idle_cpu_s_per_s")),
        "detect_idle_s": spread(col("idle_failure", "detect_idle_s")),
        "readmit_after_restart_s": spread(col("idle_failure", "readmit_after_restart_s")
                                          + col("loaded_failure", "loaded_readmit_after_restart_s")),
        "readmit_after_booted_s": spread(col("idle_failure", "readmit_after_booted_s")
                                         + col("loaded_failure", "loaded_readmit_after_booted_s")),
        "detect_loaded_s": spread(col("loaded_failure", "detect_loaded_s")),
        "calls_lost_per_failure": spread(col("loaded_failure", "calls_lost")),
        "failed_after_detection": spread(col("loaded_failure", "failed_after_detection")),
    }  # fmt: skip
    res = {
        "benchmark": "dispatcher",
        "repeat": a.repeat,
        "calls_per_run": a.calls,
        "load_rate_cps": a.rate,
        "burst_rate_cps": a.burst_rate,
        "call_hold_s": "until the node hangs up (queue unavailable: ~1-2 s) or 4 s",
        "defines": {"DS_PING_INTERVAL": 1, "DS_PROBING_THRESHOLD": 2, "DS_INACTIVE_THRESHOLD": 2, "FR_TIMER": 1000},
        "summary": summary,
        "runs": runs,
    }
    print(json.dumps(summary, indent=1))
    if a.output is not None:
        old = json.loads(a.output.read_text()) if a.output.exists() else []
        a.output.write_text(json.dumps([*old, {**res, "machine": machine_info()}], indent=1) + "\n")


if __name__ == "__main__":
    main()
