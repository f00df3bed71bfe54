"""A SIPp load smoke through a real Asterisk 22 with agents answering (issue #11).

The product as shipped (`agi-router serve` + `agi-router asterisk setup`, tests/test_real_callers_path.py's
fixture), the population directory imported, `python -m loadtest.sipp prepare` then `run`: SIPp agents
register as PJSIP/agent1..2 and answer queue calls (ring, talk, hang up); SIPp callers speak (rtp_stream),
type DTMF (RFC 4733) or stay silent. Skipped, with the reason, without AGI_ROUTER_ASTERISK, sipp or root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_real_callers_path import BINARY, Shipped, _wait_ready
from tests.test_real_callers_path import shipped as shipped  # the module-scoped fixture

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.asterisk,
    pytest.mark.timeout(400),
    pytest.mark.skipif(not BINARY, reason="needs a real Asterisk 22: set AGI_ROUTER_ASTERISK=/path/to/asterisk"),
    pytest.mark.skipif(shutil.which("sipp") is None, reason="needs SIPp on PATH (Debian package sip-tester)"),
    pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() != 0, reason="SIPp DTMF needs a raw socket: root"),
]


def test_sipp_callers_and_agents_through_the_real_pbx(shipped: Shipped, tmp_path: Path) -> None:
    _wait_ready(shipped)
    env = {**os.environ, "AGI_ROUTER_CONFIG": str(shipped.var.parent / "router.toml")}
    prep = subprocess.run([sys.executable, "-m", "loadtest.sipp", "prepare", str(tmp_path), "--calls", "8"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert prep.returncode == 0, prep.stderr
    imp = subprocess.run([sys.executable, "-m", "agi_router", "directory", "import", str(tmp_path / "directory.csv")],
                         env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert imp.returncode == 0, imp.stderr
    start = len(shipped.ami.events)
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadtest.sipp", "run", str(tmp_path), "--asterisk", f"127.0.0.1:{shipped.ast.sip_port}",
         "--rate", "1", "--calls", "8", "--agents", "2", "--handling-s", "4", "--timeout-s", "150",
         "--report", str(tmp_path / "report")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        for _ in shipped.ami.messages(1.0):  # the test's AMI client reads only when asked: keep reading
            pass
    out, err = proc.communicate(timeout=30)
    for _ in shipped.ami.messages(3.0):
        pass
    r = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    print(r.stdout, r.stderr[-2000:])
    events = shipped.ami.events[start:]
    routes = [e for e in events if e.get("UserEvent") == "RouterRoute"]
    connects = [e for e in events if e.get("Event") == "AgentConnect"]
    print(f"{len(routes)} routed, {len(connects)} answered by an agent; rules {[e.get('Rule') for e in routes]}")
    kinds = [line.split(";")[6] for line in (tmp_path / "callers.csv").read_text().splitlines()[1:9]]
    stay = sum(k != "hangup" for k in kinds)  # who hangs up during the welcome is not routed: the dialplan stops
    assert len(routes) == stay and all(e.get("Done") == "1" for e in routes), kinds
    assert connects, "no queue call was answered by a SIPp agent"
    # the same report as the router-only driver, from AMI, the router's /metrics and SIPp's statistics
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    print(f"report: {summary['reasons']}, {summary['speech_to_route_ms']}, rules {summary['rules']}")
    assert r.returncode == (0 if summary["passed"] else 1), r.stdout + r.stderr[-2000:]
    assert [x for x in summary["reasons"] if not x.startswith("p99 ")] == []  # latency: reported, not asserted
    assert summary["calls"] == 8 and summary["failed"] == {}, summary
    said = summary["understood"]  # speaking callers routed on what they said (their voices are stable ones)
    print(f"understood: {said}, caller's last word -> route: {summary['last_word_to_route_ms']}")
    assert said["callers"] >= 1 and said["understood"] >= 1, said
    assert summary["last_word_to_route_ms"]["n"] >= said["understood"]  # the router's histogram saw them
    assert sum(n for rule, n in summary["rules"].items() if rule != "-") == len(routes)
    assert summary["rss_mb"]["last"] > 50 and summary["fds"]["last"] > 5  # the router's own process figures
    for png in ("calls", "concurrent", "failures", "recognizer", "process", "outcomes"):
        assert (tmp_path / "report" / f"{png}.png").stat().st_size > 5000, png


def test_a_load_run_killed_leaves_no_sipp_behind(shipped: Shipped, tmp_path: Path) -> None:
    """The runner killed with SIGKILL mid-run (an operator's kill -9, a CI timeout): its SIPp agents and callers
    die with it (each asked the kernel for SIGKILL when its parent goes). Before, the agents ran with SIPp's -bg
    (daemons) and were only stopped by a `pkill -f agent.xml` at the end: a killed run left them answering
    calls on the host (found when a benchmark was stopped)."""
    import signal

    _wait_ready(shipped)
    env = {**os.environ, "AGI_ROUTER_CONFIG": str(shipped.var.parent / "router.toml")}
    prep = subprocess.run([sys.executable, "-m", "loadtest.sipp", "prepare", str(tmp_path), "--calls", "6"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert prep.returncode == 0, prep.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadtest.sipp", "run", str(tmp_path), "--asterisk", f"127.0.0.1:{shipped.ast.sip_port}",
         "--rate", "1", "--calls", "6", "--agents", "2", "--timeout-s", "120"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def ours() -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(proc.pid), "sipp"], capture_output=True, text=True).stdout
        return [int(x) for x in out.split()]

    deadline = time.monotonic() + 60
    while len(ours()) < 3 and time.monotonic() < deadline:  # 2 agents + at least one caller instance
        for _ in shipped.ami.messages(0.3):
            pass
    children = ours()
    assert len(children) >= 3, "the run did not start its SIPp agents and callers"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in children):
        time.sleep(0.05)
    left = [p for p in children if Path(f"/proc/{p}").exists() and "Z" not in Path(f"/proc/{p}/stat").read_text()]
    assert not left, f"SIPp processes survived their runner: {left}"
