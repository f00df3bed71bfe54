"""/metrics and /healthz: metrics appear and change as scripted calls flow through the real router
(FastAGI in, SQLite directory, caller memory), never carry a caller, and the endpoint resists bad
requests."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agi_router.app import Router, build_router
from agi_router.callflow.capture import SpeechRound
from agi_router.callflow.flow import CallResult
from agi_router.config import load_settings
from agi_router.directory.sqlite import import_csv
from agi_router.metrics import LATENCY_BUCKETS, MetricsServer, RouterMetrics
from agi_router.policy.config import default_policy_path
from agi_router.policy.model import AccountFacts, Action, Decision, MotiveFacts, Segment
from tests.fakeasterisk import FakeChannel, run_call

ACTIVE = "0612345678"
NO_ACCOUNT = "0698765432"


async def http_get(host: str, port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(snap: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return snap.get((name, frozenset(labels.items())), 0.0)


@dataclass
class Live:
    router: Router
    http: MetricsServer
    agi_port: int

    async def scrape(self) -> tuple[str, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
        status, headers, body = await http_get(*self.http.address, "/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = body.decode()
        return text, samples(text)

    async def call(self, callerid: str, uniqueid: str, *args: str, **kw: object) -> FakeChannel:
        ch = FakeChannel(callerid=callerid, uniqueid=uniqueid, args=list(args), **kw)  # type: ignore[arg-type]
        return await run_call("127.0.0.1", self.agi_port, ch)


@contextlib.asynccontextmanager
async def live_router(tmp_path: Path) -> AsyncIterator[Live]:
    """The router as `agi-router serve` builds it (bundled policy without opening hours, SQLite
    directory with one active account, in-process memory, no AMI), FastAGI and /metrics on free ports."""
    policy = tmp_path / "policy.toml"
    text = default_policy_path().read_text().replace("[hours]\nenabled = true", "[hours]\nenabled = false")
    policy.write_text(text)
    cfg = tmp_path / "router.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "var"}"\npolicy_file = "{policy}"\n'
        "[agi]\nport = 0\n[ami]\nenabled = false\n[metrics]\nport = 0\n"
    )
    settings = load_settings(cfg)
    router = build_router(settings)
    csv = tmp_path / "accounts.csv"
    csv.write_text(f"number,last_login\n{ACTIVE},{datetime.now(UTC).date().isoformat()}\n")
    import_csv(csv, settings.path(settings.directory.sqlite_path), router.flow.pseudonymizer)
    await router.server.start()
    http = MetricsServer(router.metrics or RouterMetrics(), "127.0.0.1", 0, health=router.health)
    await http.start()
    try:
        yield Live(router, http, router.server.sockets[0][1])
    finally:
        await http.close()
        await router.close()


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    async with live_router(tmp_path) as rig:
        yield rig


async def test_metrics_follow_the_2024_sequence_and_errors(live: Live) -> None:
    text, before = await live.scrape()
    assert value(before, "agi_router_calls_total", result="decided") == 0
    assert value(before, "agi_router_build_info", version="0.1.0") == 1
    label = live.router.policy.current.label
    assert value(before, "agi_router_policy_info", version=label, catalogue=live.router.catalogue.version) == 1

    # same caller, same simple motive, three times: deflect, repeat hang-up, priority agent
    actions = []
    for n in range(3):
        ch = await live.call(ACTIVE, f"17639.{n}", "attestation_droits")
        actions.append(ch.variables["ROUTER_ACTION"])
        await live.router.flow.drain()
    assert actions == ["deflect", "hangup", "priority"]
    # a caller with no account, a DTMF menu that gets no digit (-> human), and a garbage AGI header
    await live.call(NO_ACCOUNT, "17639.3", "carte_vitale_perdue")
    await live.call(NO_ACCOUNT, "17639.4", dtmf=["", "", ""])
    _r, w = await asyncio.open_connection("127.0.0.1", live.agi_port)
    w.write(b"this is not agi\n\n")
    await w.drain()
    w.close()
    await asyncio.sleep(0.1)

    text, after = await live.scrape()
    assert value(after, "agi_router_calls_total", result="decided") == 5
    assert value(after, "agi_router_repeat_hangups_total") == 1
    assert value(after, "agi_router_priority_promotions_total") == 1
    deflected = {"action": "deflect", "queue": "", "segment": "account_active", "motive": "attestation_droits"}
    assert value(after, "agi_router_decisions_total", **deflected) == 1
    assert value(after, "agi_router_policy_rules_total", rule="repeat.hangup") == 1
    assert value(after, "agi_router_decisions_total", action="queue", queue="accueil", segment="no_account",
                 motive="none") == 1  # fmt: skip
    assert value(after, "agi_router_motive_captures_total", method="variable") == 4
    assert value(after, "agi_router_motive_captures_total", method="dtmf") == 1
    assert value(after, "agi_router_decision_seconds_count") == 5
    assert value(after, "agi_router_decision_seconds_bucket", le="0.1") == 5  # the budget is a bucket boundary
    assert value(after, "agi_router_directory_lookup_seconds_count", backend="sqlite") == 5
    assert value(after, "agi_router_state_store_seconds_count", backend="memory", op="history") == 4
    assert value(after, "agi_router_state_store_seconds_count", backend="memory", op="record") == 4
    assert value(after, "agi_router_agi_sessions_total") == 5
    assert value(after, "agi_router_agi_sessions_active") == 0
    assert value(after, "agi_router_agi_errors_total", kind="bad_header") == 1
    # privacy: no number, no pseudonym, no call id in any label
    pseudonyms = {live.router.flow.pseudonymizer.of_e164(n) for n in ("+33612345678", "+33698765432")}
    for needle in ("612345678", "698765432", "17639.", *pseudonyms):
        assert needle not in text


async def test_fallback_and_dependency_errors_are_counted(live: Live) -> None:
    class Broken:
        async def lookup(self, e164: str | None, pseudonym: str) -> AccountFacts:
            from agi_router.exceptions import DirectoryError

            raise DirectoryError("down")

        async def close(self) -> None:
            pass

    live.router.flow.directory.inner = Broken()  # type: ignore[attr-defined]
    ch = await live.call(ACTIVE, "1.1", "attestation_droits")
    assert ch.variables["ROUTER_ACTION"] == "queue"  # unknown account status: never deflected

    class Faulty:  # a bug (not a StateStoreError): an internal fault mid-call
        async def history(self, *a: object) -> tuple[()]:
            raise RuntimeError("bug")

        async def close(self) -> None:
            pass

    live.router.flow.memory.inner = Faulty()  # type: ignore[attr-defined]
    ch = await live.call(ACTIVE, "1.2", "attestation_droits")
    assert ch.variables["ROUTER_ACTION"] == "human"
    _t, m = await live.scrape()
    assert value(m, "agi_router_directory_errors_total", backend="sqlite") == 2
    assert value(m, "agi_router_call_errors_total", source="directory") >= 1
    assert value(m, "agi_router_calls_total", result="fallback") == 1
    assert value(m, "agi_router_fallbacks_total", reason="internal_error") == 1

    # a metrics source that breaks costs its own lines, not the scrape
    live.router.metrics.sources.policy = None  # type: ignore[union-attr]
    live.router.metrics.sources.server = object()  # type: ignore[union-attr,assignment]
    text, m = await live.scrape()
    live.router.metrics.sources.server = live.router.server  # type: ignore[union-attr]
    assert "agi_router_agi_sessions_active" not in text and value(m, "agi_router_calls_total", result="fallback") == 1


async def test_healthz_and_http_edge_cases(live: Live) -> None:
    host, port = live.http.address
    status, headers, body = await http_get(host, port, "/healthz")
    assert status == 200 and headers["Content-Type"] == "application/json"
    state = json.loads(body)
    assert state["status"] == "ok" and state["policy"] == live.router.policy.current.label
    assert (await http_get(host, port, "/nope"))[0] == 404
    assert (await http_get(host, port, "/metrics", "POST"))[0] == 405
    status, headers, body = await http_get(host, port, "/metrics", "HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 1000
    r, w = await asyncio.open_connection(host, port)
    w.write(b"\xff\xfe garbage\r\n\r\n")
    assert (await r.read()).startswith(b"HTTP/1.1 400")
    w.close()
    # a client that sends half a request and stalls does not block the next scrape
    _r2, w2 = await asyncio.open_connection(host, port)
    w2.write(b"GET /metr")
    await w2.drain()
    assert (await http_get(host, port, "/metrics"))[0] == 200
    w2.close()

    assert (await http_get(host, port, "/readyz"))[0] == 200  # nothing degraded: ready
    healthy = live.http.health
    live.http.health = lambda: {**healthy(), "status": "degraded", "ami": "down"}
    assert (await http_get(host, port, "/healthz"))[0] == 200  # alive: calls still get a route
    status, _h, body = await http_get(host, port, "/readyz")
    assert status == 503 and json.loads(body)["ami"] == "down"  # not ready: a probe takes it out

    def broken() -> dict[str, object]:
        raise RuntimeError("probe bug")

    live.http.health = broken
    status, _h, body = await http_get(host, port, "/healthz")
    assert status == 503 and b"probe bug" in body


def _decision(action: Action, rule: str, reasons: tuple[str, ...] = ()) -> Decision:
    return Decision(
        action=action,
        queue="droits" if action is not Action.DEFLECT else None,
        priority=0,
        rule=rule,
        reasons=("segment.account_active", *reasons, rule),
        policy_version="p@1",
        segment=Segment.ACTIVE,
        motive_id="attestation_droits",
    )


def test_observe_call_counts_speech_rounds_reasons_and_latencies() -> None:
    m = RouterMetrics()
    r = CallResult("c1", "caller-pseudonym", decision=_decision(Action.QUEUE, "queue.skill",
                   ("deflect.skipped_confidence", "safeguard.fragile_segment", "callback.declined")))  # fmt: skip
    r.motive = MotiveFacts("attestation_droits", 0.42, "speech")
    r.decision_latency_s = 0.0031
    r.speech_to_route_s = 0.0072
    r.voice_to_route_s = 0.62
    r.speech_rounds = [
        SpeechRound("no_match", 0.1, 0.21, 0.52),
        SpeechRound("recognised", 0.42, 0.08, 0.55, barged_in=True, jitter_s=0.003),
    ]
    m.observe_call(r)
    dtmf = CallResult("c2", "x", decision=_decision(Action.QUEUE, "queue.skill"), motive=MotiveFacts("a", 1, "dtmf"))
    dtmf.speech_rounds = [SpeechRound("no_input"), SpeechRound("no_input")]
    m.observe_call(dtmf)
    m.observe_call(CallResult("c3", "x", fallback_reason="decision_budget"))
    m.observe_call(CallResult("c4", "x", hung_up=True))

    def get(name: str, **labels: str) -> float:
        v = m.registry.get_sample_value(name, labels)
        return 0.0 if v is None else v

    assert get("agi_router_speech_rounds_total", outcome="no_match") == 1
    assert get("agi_router_speech_rounds_total", outcome="no_input") == 2
    assert get("agi_router_dtmf_fallbacks_total") == 1
    assert get("agi_router_recognition_seconds_count") == 2
    assert get("agi_router_recognition_seconds_bucket", le="0.1") == 1
    assert get("agi_router_end_of_speech_delay_seconds_sum") == pytest.approx(1.07)
    assert get("agi_router_rtp_jitter_seconds_count") == 1
    assert get("agi_router_motive_confidence_bucket", le="0.5") == 1
    assert get("agi_router_speech_to_route_seconds_bucket", le="0.0075") == 1
    assert get("agi_router_voice_to_route_seconds_bucket", le="0.6") == 0
    assert get("agi_router_voice_to_route_seconds_bucket", le="0.7") == 1
    assert get("agi_router_decision_seconds_bucket", le="0.004") == 1
    assert get("agi_router_decision_seconds_bucket", le="0.003") == 0
    assert get("agi_router_deflections_skipped_total", reason="confidence") == 1
    assert get("agi_router_safeguard_triggers_total", safeguard="fragile_segment") == 1
    assert get("agi_router_callback_offers_total", answer="declined") == 1
    assert get("agi_router_calls_total", result="fallback") == 1
    assert get("agi_router_calls_total", result="hung_up") == 1
    assert get("agi_router_deadline_hits_total", budget="decision") == 1
    assert get("agi_router_fallbacks_total", reason="decision_budget") == 1


def test_latency_buckets_are_fine_below_5ms_and_hit_the_budget() -> None:
    below = [b for b in LATENCY_BUCKETS if b <= 0.005]
    assert len(below) >= 6 and 0.1 in LATENCY_BUCKETS
    assert list(LATENCY_BUCKETS) == sorted(LATENCY_BUCKETS)
