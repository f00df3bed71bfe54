"""The agent's context under load, through a real Asterisk 22 (issue #19): N SIPp callers choose a motive by
RFC 4733 DTMF, three SIPp agents (loadtest/scenarios/agent-context.xml) answer; reported:

* the share of answered calls whose agent INVITE carried the call's own context intact (X-Router-Call = the
  reference of the RouterRoute event of that call, and its queue and motive; the scenario also fails any call
  whose INVITE lacks a header);
* agent answer -> bridge (AMI: the member channel's Newstate Up -> the caller's BridgeEnter, Asterisk's own
  timestamps), p50/p99, with the whisper on (the prompts of the chosen motives) or off.

The product as shipped (`agi-router serve` + `agi-router asterisk setup`, the fixture of
tests/test_real_callers_path.py), DTMF menu only (speech off: the context does not depend on how the motive
was captured). Needs AGI_ROUTER_ASTERISK, sipp, root. Agents wrap up 10 s after each call (queues.conf), so
100 calls take ~9 minutes.

    AGI_ROUTER_ASTERISK=/opt/ast22/sbin/asterisk .venv/bin/python benchmarks/bench_handoff_sipp.py \\
        --calls 100 --whisper on [--output benchmarks/results/handoff_sipp.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agi_router.motives.catalogue import Catalogue
from benchmarks.machine import machine_info
from tests.asterisk_harness import free_port
from tests.test_real_callers_path import _ship, _wait_ready
from tests.test_real_handoff import SCENARIOS, _agent, _invites, _register


def pct(xs: list[float], q: float) -> float | None:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] if xs else None


def motives() -> list[tuple[str, str]]:
    """(DTMF, motive id): one precise motive of each skill the three agents serve."""
    cat = Catalogue.load()
    out = []
    for skill in ("remboursements", "indemnites", "droits"):
        m = next(m for m in cat if m.skill == skill and m.dtmf and len(m.dtmf) == 2 and not m.id.endswith(".autre"))
        out.append((m.dtmf or "", m.id))
    return out


def run(calls: int, whisper: str, rate: float, root: Path) -> dict[str, Any]:
    extra = f'enabled = false\n[handoff]\nwhisper = "{whisper}"\n'  # (first line: the fixture's [speech])
    gen = _ship(root, root / "no-model", extra, rtp=32400)
    pbx = next(gen)
    try:
        _wait_ready(pbx)
        sip = pbx.ast.sip_port
        agents = []
        for n in (1, 2, 3):
            port = free_port()
            _register(f"agent{n}", port, sip, root)
            agents.append(_agent(f"agent{n}", port, 34000 + 100 * n, "0;1500;3000", root))
        deadline = time.monotonic() + 60
        while pbx.ast.cli("queue show accueil").count("Not in use") < 3:
            assert time.monotonic() < deadline, pbx.ast.cli("queue show accueil")
            for _ in pbx.ami.messages(0.5):
                pass
        start = len(pbx.ami.events)
        chosen = motives()
        lines = [f"06{10000000 + i:08d};{chosen[i % 3][0][0]};{chosen[i % 3][0][1]};300000" for i in range(calls)]
        (root / "callers.csv").write_text("SEQUENTIAL\n" + "\n".join(lines) + "\n")
        t0 = time.monotonic()
        caller = subprocess.Popen(
            ["sipp", "-sf", str(SCENARIOS / "caller-3646.xml"), "-inf", "callers.csv", "-i", "127.0.0.1", "-p",
             str(free_port()), "-mp", "35000", "-r", str(rate), "-rp", "1000", "-m", str(calls), "-l", str(calls),
             "-nostdin", "-timeout", f"{int(calls / rate + 900)}s", "-trace_stat", "-trace_counts", "-trace_err",
             f"127.0.0.1:{sip}"],
            cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        while caller.poll() is None:
            for _ in pbx.ami.messages(1.0):
                pass
        for _ in pbx.ami.messages(3.0):
            pass
        elapsed = time.monotonic() - t0
        for a in agents:
            a.terminate()
            a.wait(10)
        events = pbx.ami.events[start:]
    finally:
        gen.close()
    routes = {e["Uniqueid"]: e for e in events if e.get("UserEvent") == "RouterRoute"}
    invites = {i["call"]: i for n in (1, 2, 3) for i in _invites(root / f"agent{n}")}
    answered, intact, delays = 0, 0, []
    for uid, r in routes.items():
        up = [float(e["Timestamp"]) for e in events if e.get("Event") == "Newstate" and e.get("Linkedid") == uid
              and e.get("Channel", "").startswith("PJSIP/agent") and e.get("ChannelStateDesc") == "Up"]  # fmt: skip
        if not up:
            continue
        answered += 1
        inv = invites.get(r["Ref"])
        if inv is not None and (inv["queue"], inv["motive"]) == (r["Queue"], r["Motive"]):
            intact += 1
        bridged = [float(e["Timestamp"]) for e in events if e.get("Event") == "BridgeEnter"
                   and e.get("Uniqueid") == uid and float(e["Timestamp"]) >= up[0]]  # fmt: skip
        if bridged:
            delays.append(bridged[0] - up[0])
    return {
        "calls": calls, "whisper": whisper, "rate": rate, "seconds": round(elapsed, 1), "routed": len(routes),
        "answered": answered, "headers_intact": intact, "invites_logged": len(invites),
        "answer_to_bridge_p50_s": pct(delays, 0.5), "answer_to_bridge_p99_s": pct(delays, 0.99),
        "answer_to_bridge_max_s": max(delays) if delays else None, "caller_exit": caller.returncode,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--whisper", choices=("on", "off", "useful"), default="on")
    ap.add_argument("--rate", type=float, default=0.2, help="calls per second")
    ap.add_argument("--output", type=Path)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        res = run(a.calls, a.whisper, a.rate, Path(d))
    print(json.dumps(res, indent=1))
    if a.output is not None:
        old = json.loads(a.output.read_text()) if a.output.exists() else []
        a.output.write_text(json.dumps([*old, {**res, "machine": machine_info()}], indent=1) + "\n")


if __name__ == "__main__":
    main()
