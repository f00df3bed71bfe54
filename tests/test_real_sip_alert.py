"""A registration brute force raises the shipped alert AgiRouterSipAttack in a real Prometheus (issue #20).

The whole chain, nothing simulated: a real Asterisk 22 refuses 1,000 REGISTERs (SIPp, wrong password, its
own loopback address), reports them as AMI security events, the real router (`agi-router serve`) counts
them in agi_router_sip_security_events_total, a real Prometheus (Debian's package) scrapes it every second
and evaluates monitoring/prometheus/rules/agi-router.rules.yml as shipped (referenced, not copied: `for: 2m`
unchanged). Before the attack the alert is inactive; it is pending within seconds of the attack and firing
2 minutes later, with severity critical, and no other shipped alert fires meanwhile.
(The counting alone: tests/test_real_sip_edge.py; the rule's promtool unit tests: tests/test_monitoring.py.)

Needs AGI_ROUTER_ASTERISK=/path/to/asterisk, SIPp and prometheus; skipped (visibly) otherwise. ~3 minutes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest

from tests.asterisk_harness import free_port
from tests.test_real_callers_path import Shipped, _ship, _wait_ready

BINARY = os.environ.get("AGI_ROUTER_ASTERISK", "")
ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "loadtest" / "scenarios"
RULES = ROOT / "monitoring" / "prometheus" / "rules" / "agi-router.rules.yml"
ALERT = "AgiRouterSipAttack"
pytestmark = [
    pytest.mark.asterisk,
    pytest.mark.timeout(420),
    pytest.mark.skipif(not BINARY, reason="needs a real Asterisk 22: set AGI_ROUTER_ASTERISK=/path/to/asterisk"),
    pytest.mark.skipif(shutil.which("sipp") is None, reason="needs SIPp on PATH (Debian package sip-tester)"),
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="needs prometheus (Debian package prometheus)"),
]


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory, whisper_dir: Path) -> Iterator[Shipped]:
    yield from _ship(tmp_path_factory.mktemp("sip-alert"), whisper_dir, rtp=32800)


class Prometheus:
    def __init__(self, port: int, log: Path) -> None:
        self.port, self.log = port, log

    def get(self, path: str, **params: str) -> dict[str, object]:
        url = f"http://127.0.0.1:{self.port}{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=3) as r:
            doc: dict[str, object] = json.loads(r.read())
        assert doc.get("status") == "success", doc
        return doc

    def query(self, expr: str) -> list[dict[str, object]]:
        return self.get("/api/v1/query", query=expr)["data"]["result"]  # type: ignore[index,no-any-return]

    def alerts(self) -> list[dict[str, object]]:
        return self.get("/api/v1/alerts")["data"]["alerts"]  # type: ignore[index,no-any-return]

    def rules(self) -> list[dict[str, object]]:
        groups = self.get("/api/v1/rules")["data"]["groups"]  # type: ignore[index]
        return [r for g in groups for r in g["rules"]]  # type: ignore[attr-defined]


@contextmanager
def _prometheus(tmp: Path, target: str) -> Iterator[Prometheus]:
    """A real Prometheus scraping ``target`` every second (job agi-router, as AgiRouterDown expects) and
    evaluating the shipped rules file every second."""
    port = free_port()
    cfg = tmp / "prometheus.yml"
    cfg.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: [{json.dumps(str(RULES))}]\n"
        f"scrape_configs:\n  - job_name: agi-router\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    log = tmp / "prometheus.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        prom = Prometheus(port, log)
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, "prometheus exited: " + log.read_text()[-2000:]
            assert time.monotonic() < deadline, "prometheus not ready: " + log.read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.2)
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        assert proc.returncode is not None


def _ts(rfc3339: str) -> float:
    """Prometheus's activeAt (nanoseconds, Z) -> epoch seconds."""
    m = re.fullmatch(r"(.+?T[\d:]+)(?:\.(\d+))?(Z|[+-][\d:]+)", rfc3339)
    assert m, rfc3339
    frac = (m.group(2) or "0")[:6]
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.fromisoformat(f"{m.group(1)}.{frac.ljust(6, '0')}{zone}").timestamp()


def _ours(alerts: list[dict[str, object]]) -> dict[str, object] | None:
    found = [a for a in alerts if a["labels"]["alertname"] == ALERT]  # type: ignore[index]
    assert len(found) <= 1, found
    return found[0] if found else None


def test_a_brute_force_raises_the_shipped_sip_attack_alert(shipped: Shipped, tmp_path: Path) -> None:
    _wait_ready(shipped)
    instance = f"127.0.0.1:{shipped.metrics_port}"
    with _prometheus(tmp_path, instance) as prom:
        # control: the router is scraped, every shipped rule is loaded and healthy, ours evaluated inactive
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline, (prom.query('up{job="agi-router"}'), prom.rules())
            time.sleep(0.5)
            up = prom.query('up{job="agi-router"}')
            rules = prom.rules()
            ours = [r for r in rules if r.get("name") == ALERT]
            if up and up[0]["value"][1] == "1" and ours and ours[0].get("lastEvaluation", "").startswith("20"):  # type: ignore[index,union-attr]
                scraped_at = time.time()
                break
        time.sleep(3)  # a few more scrapes and evaluations
        rules = prom.rules()
        assert all(r["health"] == "ok" for r in rules), [r for r in rules if r["health"] != "ok"]
        ours = [r for r in rules if r.get("name") == ALERT]
        assert len(ours) == 1 and ours[0]["state"] == "inactive" and ours[0]["duration"] == 120, ours
        assert _ours(prom.alerts()) is None
        before = [a for a in prom.alerts() if a["state"] == "firing"]

        # the attack: 1,000 wrong-password REGISTERs at 200/s from 127.0.0.2
        attack_start = time.time()
        r = subprocess.run(
            ["sipp", "-sf", str(SCENARIOS / "brute-force-register.xml"), "-s", "agent1", "-au", "agent1", "-ap",
             "change-me-agent1", "-m", "1000", "-r", "200", "-l", "200", "-i", "127.0.0.2", "-p", str(free_port()),
             "-nostdin", "-timeout", "60s", "-trace_stat", "-stf", str(tmp_path / "stat.csv"),
             f"127.0.0.1:{shipped.ast.sip_port}"],
            cwd=tmp_path, capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        attack_end = time.time()
        assert r.returncode == 0, r.stdout[-1500:] + r.stderr[-800:]
        stat = (tmp_path / "stat.csv").read_text().splitlines()
        head, last = stat[0].split(";"), stat[-1].split(";")
        assert last[head.index("SuccessfulCall(C)")] == "1000" and last[head.index("FailedCall(C)")] == "0"

        # pending, then firing once `for: 2m` has run
        seen_pending = seen_firing = None
        alert: dict[str, object] | None = None
        deadline = attack_end + 200
        while time.time() < deadline:
            alerts = prom.alerts()
            alert = _ours(alerts)
            now = time.time()
            if alert is not None and seen_pending is None:
                seen_pending = now
            if alert is not None and alert["state"] == "firing":
                seen_firing = now
                break
            time.sleep(0.25)
        assert seen_pending is not None, f"{ALERT} never went pending: {prom.rules()}"
        assert alert is not None and seen_firing is not None, f"{ALERT} never fired: {alert}"
        active_at = _ts(str(alert["activeAt"]))
        # Prometheus's own time of the transition to firing: the first sample of its ALERTS series
        series = prom.query(f'ALERTS{{alertname="{ALERT}",alertstate="firing"}}[5m]')
        assert len(series) == 1, series
        fired_at = float(series[0]["values"][0][0])  # type: ignore[index]
        print(
            f"\nattack {attack_end - attack_start:.1f} s (control scrape {attack_start - scraped_at:.1f} s before); "
            f"after its end: pending {active_at - attack_end:+.1f} s (polled {seen_pending - attack_end:+.1f} s), "
            f"firing {fired_at - attack_end:+.1f} s (polled {seen_firing - attack_end:+.1f} s); "
            f"for {fired_at - active_at:.1f} s; value {float(str(alert['value'])):.2f}/s"
        )
        assert alert["labels"] == {"alertname": ALERT, "instance": instance, "severity": "critical"}, alert
        assert float(str(alert["value"])) > 1
        assert active_at - attack_end < 15
        assert fired_at - attack_end < 180 and seen_firing - attack_end < 185
        assert fired_at - active_at >= 120 - 0.001  # `for: 2m` as shipped (ALERTS samples are in ms, activeAt in ns)

        # nothing else fires: the alert is about the attack, not a broken rig
        alerts = prom.alerts()
        others = {str(a["labels"]["alertname"]): str(a["state"]) for a in alerts}  # type: ignore[index]
        others.pop(ALERT)
        print(f"other alerts: {others or 'none'}; firing before the attack: {before or 'none'}")
        assert not before
        assert "firing" not in others.values(), others
