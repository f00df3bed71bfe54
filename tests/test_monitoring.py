"""The monitoring bundle (monitoring/): Prometheus config and rules pass promtool (syntax and alert unit
tests), every metric a dashboard query or a rule names is one the router exports, the committed
dashboard is what its generator writes, and a real Prometheus scraping a real router sees the calls."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from agi_router.agi.server import AGIServer
from agi_router.ami.client import AMIClient, AMIConfig
from agi_router.ami.protocol import Message
from agi_router.callbacks.placer import CallbackPlacer
from agi_router.callbacks.store import CallbackStore
from agi_router.callflow.capture import SpeechRound
from agi_router.callflow.flow import CallResult, PolicyHolder
from agi_router.callflow.legs import LegRegistry
from agi_router.callflow.speech import Recognition, SpeechCapture
from agi_router.media.rtp import PortPool
from agi_router.metrics import RouterMetrics, TimedDirectory, TimedMemory, TimedSms
from agi_router.policy.model import Action, Decision, MotiveFacts, Segment
from agi_router.queues.model import QueueModel
from agi_router.sms import NoSms
from agi_router.state.memory import InMemoryCallerMemory
from tests.conftest import bundled_policy_always_open
from tests.doubles import StubDirectory
from tests.test_metrics import Live

ROOT = Path(__file__).resolve().parent.parent
MON = ROOT / "monitoring"
PROMETHEUS_YML = MON / "prometheus" / "prometheus.yml"
RULES = MON / "prometheus" / "rules" / "agi-router.rules.yml"
RULE_TESTS = MON / "prometheus" / "tests" / "agi-router.test.yml"
DASHBOARD = MON / "grafana" / "dashboards" / "agi-router.json"

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus; scripts/test-debs.txt)"
)
needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="prometheus not installed (Debian package prometheus)"
)
METRIC = re.compile(r"\bagi_router_[a-z0-9_]+\b")
RECORDED = re.compile(r"\bagi_router:[a-z0-9_:]+\b")


@needs_promtool
def test_promtool_checks_config_and_rules() -> None:
    for args in (["check", "config", str(PROMETHEUS_YML)], ["check", "rules", str(RULES)]):
        r = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr


@needs_promtool
def test_alert_rules_fire_when_they_should() -> None:
    r = subprocess.run(["promtool", "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


class _Recognizer:
    """The pipeline's shape: the engine, with its load gauge, is ``.recognizer``."""

    def __init__(self) -> None:
        from agi_router.speech.capacity import RecognizerLoad

        self.recognizer = type("Engine", (), {"load": RecognizerLoad(2)})()

    async def recognize(self, pcm: np.ndarray) -> Recognition:
        return Recognition(None)


@pytest.fixture
def full_metrics(tmp_path: Path) -> Iterator[RouterMetrics]:
    """A metrics registry wired to every kind of source, with every labelled family populated once."""
    m = RouterMetrics()
    m.node_info.labels("node-a").set(1)  # what serve does with [node] name
    ami = AMIClient(AMIConfig())
    queues = QueueModel()
    queues.load_status([Message([("Event", "QueueParams"), ("Queue", "droits")])])
    store = CallbackStore(tmp_path / "cb.sqlite3", b"k" * 32)
    m.sources.server = AGIServer({})
    m.sources.server.errors["bad_header"] += 1
    m.sources.ami = ami
    m.sources.queues = queues
    m.sources.placer = CallbackPlacer(store, ami, queues.snapshot, lambda now: True)
    m.sources.callback_store = store
    m.sources.speech = SpeechCapture(LegRegistry(ami), PortPool(32000, 32010), _Recognizer())
    m.sources.policy = PolicyHolder(bundled_policy_always_open())
    TimedDirectory(StubDirectory(), m, "sqlite")._errors.inc()
    TimedMemory(InMemoryCallerMemory(), m, "memory")._h[1].inc()
    TimedSms(NoSms(), m)._sent.inc()
    m.agent_answered.labels("droits", "speech").inc()
    m.agent_corrections.labels("droits", "indemnites", "speech").inc()
    m.sip_security_events.labels("failed_auth", "pjsip").inc()
    decision = Decision(
        action=Action.DEFLECT,
        queue=None,
        priority=0,
        rule="deflect.simple",
        reasons=("safeguard.x", "deflect.skipped_account", "callback.accepted"),
        policy_version="p",
        segment=Segment.ACTIVE,
        motive_id="attestation_droits",
    )
    r = CallResult("c", "p", decision=decision, motive=MotiveFacts("attestation_droits", 0.9, "dtmf"))
    r.fallback_reason, r.errors = "deadline", ["directory: down"]
    r.decision_latency_s = r.speech_to_route_s = 0.01
    r.speech_rounds = [SpeechRound("recognised", 0.9, 0.1, 0.5, True, 0.002)]
    r.cohorts = ("dtmf_fallback",)
    m.observe_call(r)
    spoken = MotiveFacts("attestation_droits", 0.9, "speech", level="deflectable")
    m.observe_call(CallResult("c2", "p", decision=decision, motive=spoken))
    yield m
    store.close()


def exported(m: RouterMetrics) -> set[str]:
    return {s.name for fam in m.registry.collect() for s in fam.samples}


def rule_exprs() -> list[str]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule["expr"] for group in doc["groups"] for rule in group["rules"]]


def dashboard_exprs(doc: dict[str, object]) -> list[str]:
    panels = doc["panels"]
    assert isinstance(panels, list)
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def test_every_queried_metric_is_exported(full_metrics: RouterMetrics) -> None:
    names = exported(full_metrics)
    recorded = {r["record"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "record" in r}
    dash = json.loads(DASHBOARD.read_text())
    exprs = {"rules": rule_exprs(), "dashboard": dashboard_exprs(dash)}
    for where, texts in exprs.items():
        for expr in texts:
            missing = set(METRIC.findall(expr)) - names
            assert not missing, f"{where}: {expr!r} names metrics the router does not export: {missing}"
            unknown = set(RECORDED.findall(expr)) - recorded
            assert not unknown, f"{where}: {expr!r} names recording rules that do not exist: {unknown}"
    used = {n for texts in exprs.values() for e in texts for n in METRIC.findall(e)}
    # and the other way round: the families ops need are on the dashboard
    for family in (
        "agi_router_decisions_total",
        "agi_router_decision_seconds_bucket",
        "agi_router_ami_up",
        "agi_router_queue_callers_waiting",
        "agi_router_callbacks_pending",
        "agi_router_rtp_packets_total",
        "agi_router_speech_rounds_total",
        "agi_router_safeguard_triggers_total",
        "agi_router_cohort_decisions_total",
        "agi_router_sip_security_events_total",
    ):
        assert family in used, family


def test_no_metric_has_a_per_caller_label(full_metrics: RouterMetrics) -> None:
    allowed = {
        "result",
        "action",
        "queue",
        "segment",
        "motive",
        "rule",
        "reason",
        "safeguard",
        "budget",
        "source",
        "answer",
        "method",
        "level",
        "outcome",
        "backend",
        "op",
        "version",
        "kind",
        "direction",
        "arm",
        "cohort",
        "catalogue",
        "from_queue",  # an agent's correction: queue names, a closed set
        "to_queue",
        "event",  # an Asterisk security event's kind (sip/security.py): a closed set
        "service",  # pjsip | ami | other
        "node",  # the PBX node's name from the settings ([node] name): one per router
        "le",
    }
    for fam in full_metrics.registry.collect():
        assert fam.name.startswith("agi_router_"), fam.name
        for s in fam.samples:
            assert set(s.labels) <= allowed, (s.name, s.labels)
        if fam.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in fam.samples), fam.name
        # latencies of the router's own work: fine buckets down to 0.5 ms (the jitter and the caller's wait,
        # hundreds of ms, have their own)
        coarse = ("agi_router_rtp_jitter_seconds", "agi_router_voice_to_route_seconds")
        if fam.type == "histogram" and fam.name not in coarse:
            bounds = {float(s.labels["le"]) for s in fam.samples if "le" in s.labels}
            assert (0.1 in bounds and len({b for b in bounds if b <= 0.005}) >= 6) or "seconds" not in fam.name, (
                fam.name
            )


def test_dashboard_is_generated_and_has_the_rows_ops_need() -> None:
    sys.path.insert(0, str(MON / "grafana"))
    try:
        import dashboard  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    assert DASHBOARD.read_text() == dashboard.render(), "run: python monitoring/grafana/dashboard.py"
    doc = json.loads(DASHBOARD.read_text())
    rows = [p["title"] for p in doc["panels"] if p["type"] == "row"]
    assert rows == ["Traffic", "Decisions", "Latency", "Speech", "Queues", "SIP edge", "PBX nodes", "Callbacks",
                    "Health"]  # fmt: skip
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for p in doc["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "prometheus" and p["targets"], p["title"]
            g = p["gridPos"]
            assert g["x"] + g["w"] <= 24
    ds = yaml.safe_load((MON / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds["datasources"][0]["uid"] == "prometheus"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _get_json(port: int, path: str) -> dict[str, object]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    result: dict[str, object] = json.loads(raw.partition(b"\r\n\r\n")[2])
    return result


@needs_prometheus
async def test_a_real_prometheus_scrapes_the_router(tmp_path: Path) -> None:
    """prometheus (Debian's 2.42) scrapes a running router every second, loads our rules, and sees the
    calls the router handled."""
    from tests.test_metrics import ACTIVE, live_router

    async with live_router(tmp_path) as rig:
        await _scraped_by_prometheus(rig, tmp_path, ACTIVE)


async def _scraped_by_prometheus(rig: Live, tmp_path: Path, caller: str) -> None:
    prom_port = _free_port()
    host, mport = rig.http.address
    cfg = tmp_path / "prometheus.yml"
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES.read_text())
    cfg.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: [{rules}]\n"
        f"scrape_configs:\n  - job_name: agi-router\n    static_configs: [{{targets: ['{host}:{mport}']}}]\n"
    )
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(  # noqa: ASYNC220 - the real Prometheus server, a separate process
        [
            "prometheus",
            f"--config.file={cfg}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        for n in range(3):
            await rig.call(caller, f"p.{n}", "attestation_droits")
            await rig.router.flow.drain()
        q = urllib.parse.quote('sum(agi_router_calls_total{result="decided"})')
        value = None
        for _ in range(150):
            await asyncio.sleep(0.1)
            try:
                data = await _get_json(prom_port, f"/api/v1/query?query={q}")
            except (OSError, json.JSONDecodeError):
                continue
            res = data.get("data", {}).get("result", [])  # type: ignore[attr-defined]
            if res:
                value = float(res[0]["value"][1])
                if value == 3:
                    break
        assert value == 3, f"Prometheus saw {value}: " + (tmp_path / "prometheus.log").read_text()[-2000:]
        q = urllib.parse.quote('agi_router_policy_rules_total{rule="repeat.priority"}')
        data = await _get_json(prom_port, f"/api/v1/query?query={q}")
        assert float(data["data"]["result"][0]["value"][1]) == 1  # type: ignore[index]
        rules_doc = await _get_json(prom_port, "/api/v1/rules")
        loaded = [r for g in rules_doc["data"]["groups"] for r in g["rules"]]  # type: ignore[index]
        assert len(loaded) == len(rule_exprs()) and all(r["health"] != "err" for r in loaded)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
