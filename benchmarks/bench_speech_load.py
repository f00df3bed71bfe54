"""The speech path under load through a real Asterisk 22 (issue #21): SIPp callers speaking stable voices.

For each recogniser configuration (``auto``: ``[speech] processes = "auto"``, today's default; ``thread``:
``processes = 0``, one thread, the default before #21) and each rate (calls/s), ``python -m loadtest.sipp
run`` places ``--seconds`` x rate calls through the shipped stack (``agi-router serve`` + ``asterisk setup`` on
a real Asterisk, tests/test_real_callers_path.py's fixture), 3 SIPp agents answering. The callers speak the
voices of ``loadtest/voices.py`` (measured stable across ±40 ms shifts: real recordings of Debian's French
prompts, a few espeak-ng sentences), so what is measured is the speech path, not where the frame grid fell.

Per run, from the router's audit trail (exact per call, not histogram buckets) and /metrics:

* the caller's last word -> route (``voice_to_route_ms``: end of turn + recognition + decision), p50/p90/p99;
* end of speech -> route (``speech_to_route_ms``) p99;
* speaking callers routed on what they said (the load report's ``understood``);
* speech rounds refused by admission (``agi_router_speech_admission_refused_total``), failed SIPp calls.

Repeated ``--reps`` times per cell, interleaved (rate order shuffled per repetition); min/median/max reported.
The load driver (SIPp, ~40 processes) runs on the same 2 cores as Asterisk and the router.

    AGI_ROUTER_ASTERISK=/opt/ast22/sbin/asterisk .venv/bin/python benchmarks/bench_speech_load.py \\
        [--rates 1,2,4,10] [--configs auto,thread] [--seconds 30] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import machine_info  # noqa: E402
from loadtest.report import percentile  # noqa: E402
from tests.test_real_callers_path import _ship, _wait_ready  # noqa: E402

CONFIGS = {"auto": "", "thread": "processes = 0\nworkers = 1\n"}


def _metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3).read().decode()
    return sum(float(line.rpartition(" ")[2]) for line in text.splitlines() if line.startswith(name))


def _audit(var: Path) -> list[dict[str, Any]]:
    rows = []
    for p in sorted((var / "audit").glob("*.jsonl*")):
        if p.suffix == ".gz":
            continue
        rows += [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    return rows


def _pct(xs: list[float], q: float) -> float | None:
    p = percentile(xs, q)
    return None if p is None else round(p, 1)


def one_run(shipped: Any, work: Path, rate: float, seconds: float) -> dict[str, Any]:
    calls = max(8, round(rate * seconds))
    env = {**os.environ, "AGI_ROUTER_CONFIG": str(shipped.var.parent / "router.toml")}
    prep = subprocess.run([sys.executable, "-m", "loadtest.sipp", "prepare", str(work), "--calls", str(calls)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    if prep.returncode:
        raise SystemExit(f"prepare failed: {prep.stderr[-500:]}")
    subprocess.run([sys.executable, "-m", "agi_router", "directory", "import", str(work / "directory.csv")],
                   env=env, capture_output=True, check=True, timeout=120)  # fmt: skip
    before = len(_audit(shipped.var))
    refused0 = _metric(shipped.metrics_port, "agi_router_speech_admission_refused_total")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadtest.sipp", "run", str(work), "--asterisk", f"127.0.0.1:{shipped.ast.sip_port}",
         "--rate", str(rate), "--calls", str(calls), "--agents", "3", "--handling-s", "5", "--timeout-s",
         str(int(seconds + 200)), "--report", str(work / "report")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    while proc.poll() is None:  # the fixture's AMI client reads only when asked: keep its socket drained
        for _ in shipped.ami.messages(1.0):
            pass
    out, err = proc.communicate()
    wall = time.monotonic() - t0
    time.sleep(2)
    if not (work / "report" / "summary.json").is_file():
        raise SystemExit(f"loadtest.sipp run exited {proc.returncode} without a report:\n{out[-1500:]}\n{err[-1500:]}")
    summary = json.loads((work / "report" / "summary.json").read_text())
    rows = _audit(shipped.var)[before:]
    wait = [r["voice_to_route_ms"] for r in rows if r.get("voice_to_route_ms") is not None]
    s2r = [r["speech_to_route_ms"] for r in rows if r.get("speech_to_route_ms") is not None]
    refused = _metric(shipped.metrics_port, "agi_router_speech_admission_refused_total") - refused0
    return {
        "rate": rate,
        "calls": calls,
        "wall_s": round(wall, 1),
        "sipp_failed": sum(summary["failed"].values()),
        "failed": summary["failed"],
        "understood": summary["understood"],
        "voice_to_route_ms": {"n": len(wait), "p50": _pct(wait, 50), "p90": _pct(wait, 90), "p99": _pct(wait, 99)},
        "speech_to_route_ms": {"n": len(s2r), "p50": _pct(s2r, 50), "p99": _pct(s2r, 99)},
        "admission_refused": refused,
        "load_avg_end": round(os.getloadavg()[0], 2),
        "sipp_tail": out.strip().splitlines()[-1:] + err.strip().splitlines()[-2:],
    }


def _spread(xs: list[float | None]) -> str:
    v = [x for x in xs if x is not None]
    if not v:
        return "no data"
    return f"{min(v):.0f} / {statistics.median(v):.0f} / {max(v):.0f}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="1,2,4,10")
    ap.add_argument("--configs", default="auto,thread")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "speech_load.json")
    a = ap.parse_args()
    if not os.environ.get("AGI_ROUTER_ASTERISK"):
        print("bench_speech_load: set AGI_ROUTER_ASTERISK=/path/to/asterisk (a real Asterisk 22)", file=sys.stderr)
        return 2
    rates = [float(x) for x in a.rates.split(",")]
    from agi_router.speech.model import default_model_dir, ensure_whisper_base

    whisper = ensure_whisper_base(default_model_dir(ROOT / "var"))
    results: dict[str, list[dict[str, Any]]] = {}
    for config in a.configs.split(","):
        runs: list[dict[str, Any]] = []
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "stack").mkdir()
            # the shipped range holds 500 capture legs (a fixture's 100 ports would cap a 10 calls/s run at 50)
            gen = _ship(Path(tmp) / "stack", whisper, CONFIGS[config], rtp=30000, rtp_ports=1000)
            shipped = next(gen)
            try:
                _wait_ready(shipped, 120)
                rng = random.Random(3646)
                for rep in range(a.reps):
                    order = rates[:]
                    rng.shuffle(order)
                    for rate in order:
                        r = one_run(shipped, Path(tmp) / f"run-{rep}-{rate:g}", rate, a.seconds)
                        r["rep"] = rep
                        runs.append(r)
                        print(f"{config} rep {rep} {rate:g}/s: understood {r['understood']}, wait "
                              f"{r['voice_to_route_ms']}, refused {r['admission_refused']:.0f}, "
                              f"failed {r['failed']}", file=sys.stderr, flush=True)  # fmt: skip
            finally:
                gen.close()
        results[config] = runs
        a.output.write_text(json.dumps({"machine": machine_info(), "seconds": a.seconds, "results": results},
                                       indent=1))  # fmt: skip
    print(machine_info())
    print("\n| recogniser | calls/s | understood | last word -> route p50 | p90 | p99 | refused by admission "
          "| failed |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
    for config, runs in results.items():
        for rate in rates:
            cell = [r for r in runs if r["rate"] == rate]
            und = [100 * r["understood"]["share"] if r["understood"]["share"] is not None else None for r in cell]
            waits = " | ".join(_spread([r["voice_to_route_ms"][q] for r in cell]) for q in ("p50", "p90", "p99"))
            refused = _spread([r["admission_refused"] for r in cell])
            print(f"| {config} | {rate:g} | {_spread(und)} % | {waits} | {refused} | "
                  f"{_spread([r['sipp_failed'] for r in cell])} |")  # fmt: skip
    print("\n(min / median / max over repetitions; ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
