"""The caller's context reaches the agent, and the agent's correction reaches the router (issue #19), through a
real Asterisk 22 with SIPp agents answering.

The product as shipped (`agi-router serve` + `agi-router asterisk setup`, tests/test_real_callers_path.py's
fixture) with the whisper on for every call. A SIPp caller (RFC 4733 DTMF) chooses "droits / attestation de
droits"; agent2 (loadtest/scenarios/agent-context.xml) answers, checks the X-Router-* headers of its INVITE,
hears the whisper, types *7 then 1 (RFC 4733); the caller is moved to remboursements, where agent1's INVITE
says "transferred from droits". Both agents' received RTP and the caller's are captured on loopback
(tcpdump) to show that the whisper reached the agent and not the caller. Skipped, with the reason, without
AGI_ROUTER_ASTERISK, sipp, tcpdump or root (SIPp's DTMF and tcpdump need raw sockets).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agi_router.media.g711 import ulaw_decode
from loadtest.dtmf import rfc4733_pcap
from tests.asterisk_harness import AsteriskInstance, free_port, sip_password
from tests.pcap import read_pcap, rtp_payloads
from tests.test_real_callers_path import BINARY, Shipped, _ship, _wait_ready

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "loadtest" / "scenarios"
pytestmark = [
    pytest.mark.asterisk,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not BINARY, reason="needs a real Asterisk 22: set AGI_ROUTER_ASTERISK=/path/to/asterisk"),
    pytest.mark.skipif(shutil.which("sipp") is None, reason="needs SIPp on PATH (Debian package sip-tester)"),
    pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump (Debian package tcpdump)"),
    pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() != 0, reason="SIPp DTMF and tcpdump need root"),
]


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory, whisper_dir: Path) -> Iterator[Shipped]:
    # (the first line lands in the fixture's [speech] table: the DTMF menu only, so the call is quick and
    # deterministic; the context does not depend on how the motive was captured)
    extra = 'enabled = false\n[handoff]\nwhisper = "on"\n'
    yield from _ship(tmp_path_factory.mktemp("handoff"), whisper_dir, extra, rtp=32000)


def _register(agent: str, port: int, ast: AsteriskInstance, cwd: Path) -> None:
    password, sip_port = sip_password(ast.root / "etc", agent), ast.sip_port
    reg = subprocess.run(
        ["sipp", "-sf", str(SCENARIOS / "agent-register.xml"), "-s", agent, "-au", agent, "-ap", password,
         "-i", "127.0.0.1", "-p", str(port), "-m", "1", "-nostdin", "-timeout", "10s", f"127.0.0.1:{sip_port}"],
        cwd=cwd, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert reg.returncode == 0, reg.stderr[-500:]


def _agent(name: str, port: int, media: int, lines: str, cwd: Path) -> subprocess.Popen[bytes]:
    work = cwd / name
    work.mkdir()
    rfc4733_pcap("*71", work / "correct.pcap")  # the correction code the scenario replays (field0 = 1)
    (work / "agent.csv").write_text("SEQUENTIAL\n" + (lines + "\n") * 20)
    return subprocess.Popen(
        ["sipp", "-sf", str(SCENARIOS / "agent-context.xml"), "-inf", "agent.csv", "-i", "127.0.0.1",
         "-p", str(port), "-mp", str(media), "-trace_logs", "-trace_err", "-nostdin"],
        cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _invites(cwd: Path) -> list[dict[str, str]]:
    out = []
    for log in cwd.glob("*_logs.log"):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("invite "):
                out.append(dict(re.findall(r"(\w+)=(\S*)", line.split(" label=")[0])))
    return out


def _rtp_to(pcap: Path, port: int) -> list[tuple[float, bytes]]:
    """(capture time, µ-law payload) of the PCMU packets sent to ``port``."""
    return [(t, payload) for _seq, t, payload in rtp_payloads(read_pcap(pcap), None, port)]


def _voiced_s(packets: list[tuple[float, bytes]], start: float, end: float) -> float:
    """Seconds of audio louder than -40 dBFS among the packets captured in [start, end)."""
    total = 0.0
    for t, payload in packets:
        if start <= t < end:
            pcm = ulaw_decode(payload).astype(np.float64)
            if np.sqrt(np.mean(pcm**2)) > 32768 * 0.01:
                total += len(payload) / 8000
    return total


def _whisper_s(pbx: Shipped, prompts: list[str]) -> float:
    total = 0.0
    for p in prompts:
        with wave.open(str(pbx.var / "sounds" / "fr" / f"{p}.wav")) as w:
            total += w.getnframes() / w.getframerate()
    return total


def _get(url: str, token: str | None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_the_agent_gets_the_context_and_corrects_the_route(pbx: Shipped, tmp_path: Path) -> None:
    _wait_ready(pbx)
    sip = pbx.ast.sip_port
    a1, a2 = free_port(), free_port()
    m1, m2, mc = 33000, 33100, 33200
    _register("agent1", a1, pbx.ast, tmp_path)
    _register("agent2", a2, pbx.ast, tmp_path)
    # agent2 corrects (skill 1 = remboursements) 3 s after answering; agent1 talks 2 s then hangs up
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(_agent("agent2", a2, m2, "1;3000;20000", tmp_path))
        procs.append(_agent("agent1", a1, m1, "0;2000;2000", tmp_path))
        pcap = tmp_path / "rtp.pcap"
        procs.append(subprocess.Popen(
            ["tcpdump", "-i", "lo", "-U", "-s", "0", "-w", str(pcap), f"udp and (dst port {m1} or dst port {m2} or "
             f"dst port {mc})"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))  # fmt: skip
        # Asterisk qualifies a new contact at once, before the UAS was listening: wait for its next OPTIONS
        deadline = time.monotonic() + 60
        while "Not in use" not in pbx.ast.cli("queue show droits") or "Not in use" not in pbx.ast.cli(
            "queue show remboursements"
        ):
            assert time.monotonic() < deadline, pbx.ast.cli("queue show droits")
            for _ in pbx.ami.messages(0.5):
                pass
        for _ in pbx.ami.messages(1.0):  # the router's queue model hears the same (AMI)
            pass
        start = len(pbx.ami.events)
        csv = tmp_path / "callers.csv"
        csv.write_text("SEQUENTIAL\n0699999999;3;4;40000\n")  # droits, then 4: attestation de droits
        caller = subprocess.Popen(
            ["sipp", "-sf", str(SCENARIOS / "caller-3646.xml"), "-inf", str(csv), "-i", "127.0.0.1", "-p",
             str(free_port()), "-mp", str(mc), "-m", "1", "-l", "1", "-nostdin", "-timeout", "90s", "-timeout_error",
             "-trace_err", f"127.0.0.1:{sip}"],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(caller)
        deadline = time.monotonic() + 100
        while caller.poll() is None and time.monotonic() < deadline:
            for _ in pbx.ami.messages(0.5):
                pass
        assert caller.returncode == 0, tmp_path / "caller-3646_errors.log"
        for _ in pbx.ami.messages(2.0):
            pass
    finally:
        for p in procs:  # nothing of the test is left running, whatever failed
            if p.poll() is None:
                p.terminate()
                p.wait(10)
    events = pbx.ami.events[start:]
    route = next(e for e in events if e.get("UserEvent") == "RouterRoute")
    ref = route["Ref"]
    assert (route["Action"], route["Queue"], route["Motive"]) == ("queue", "droits", "attestation_droits"), route
    assert re.fullmatch(r"[a-z2-7]{16}", ref)

    # the headers each agent's INVITE carried (the scenario fails a call that lacks one)
    first, second = _invites(tmp_path / "agent2"), _invites(tmp_path / "agent1")
    dtmf = [(e.get("Channel"), e.get("Digit"), e.get("Direction")) for e in events if e.get("Event") == "DTMFEnd"]
    assert len(first) == 1 and len(second) == 1, (first, second, dtmf)
    assert first[0] == {
        "call": ref, "queue": "droits", "motive": "attestation_droits", "rule": "queue.skill",
        "segment": "no_account", "prio": "0", "calls": "1", "method": "dtmf", "from": "", "flags": "",
    }  # fmt: skip
    assert second[0]["call"] == ref and second[0]["queue"] == "remboursements" and second[0]["from"] == "droits"
    transfer = next(e for e in events if e.get("UserEvent") == "RouterTransfer")
    assert (transfer["Ref"], transfer["Queue"], transfer["From"]) == (ref, "remboursements", "droits")

    # the CTI view: token needed, never the number; the correction recorded against the call
    url = f"http://127.0.0.1:{pbx.metrics_port}/calls/{ref}"
    token = (pbx.var / "api.token").read_text().strip()
    assert _get(url, None)[0] == 401 and _get(url, "x" * 64)[0] == 401
    assert _get(f"http://127.0.0.1:{pbx.metrics_port}/calls/{'a' * 16}", token)[0] == 404
    status, body = _get(url, token)
    assert status == 200, body
    ctx = json.loads(body)
    assert (ctx["queue"], ctx["transferred_from"], ctx["motive"]) == ("remboursements", "droits", "attestation_droits")
    assert [(c["from_queue"], c["to_queue"], c["agent"]) for c in ctx["corrections"]] == [
        ("droits", "remboursements", "PJSIP/agent2")
    ]
    assert "0699999999" not in body and "33699999999" not in body and "transcript" not in ctx
    with urllib.request.urlopen(f"http://127.0.0.1:{pbx.metrics_port}/metrics", timeout=3) as r:
        metrics = r.read().decode()
    assert (
        'agi_router_agent_corrections_total{from_queue="droits",method="dtmf",to_queue="remboursements"} 1.0' in metrics
    )
    assert 'agi_router_agent_answered_total{method="dtmf",queue="droits"} 1.0' in metrics
    assert "agi_router_calls_api_refused_total 2.0" in metrics  # the two requests without the right token
    audit = (pbx.var / "audit" / "decisions.jsonl").read_text()
    corrections = [json.loads(x) for x in audit.splitlines() if '"event": "correction"' in x]
    assert [(c["from_queue"], c["to_queue"]) for c in corrections if c["ref"] == ref] == [("droits", "remboursements")]

    # the whisper: agent2's leg carried it between its answer and the bridge; the caller's did not
    up = next(
        float(e["Timestamp"])
        for e in events
        if e.get("Event") == "Newstate" and e.get("Channel", "").startswith("PJSIP/agent2")
        and e.get("ChannelStateDesc") == "Up"
    )  # fmt: skip
    bridged = next(
        float(e["Timestamp"])
        for e in events
        if e.get("Event") == "BridgeEnter" and e.get("Channel", "").startswith("PJSIP/sipp")
        and float(e["Timestamp"]) > up
    )  # fmt: skip
    whisper = _whisper_s(pbx, ["router/whisper/attestation_droits"])
    packets = _rtp_to(pcap, m2)
    heard_agent = _voiced_s(packets, up, bridged)
    heard_caller = _voiced_s(_rtp_to(pcap, mc), up, bridged)
    print(f"whisper {whisper:.2f} s: agent heard {heard_agent:.2f} s, caller {heard_caller:.2f} s; "
          f"answer -> bridge {bridged - up:.3f} s")  # fmt: skip
    assert heard_agent >= 0.7 * whisper
    assert heard_caller == 0.0


async def test_a_callback_carries_the_context_to_the_agent(tmp_path: Path) -> None:
    """The placer's Originate (real AMI) carries the context of the call that asked for the callback: the
    agent who takes it gets the headers and hears "Rappel." before the bridge."""
    import asyncio

    from agi_router.ami.client import AMIClient, AMIConfig
    from agi_router.audit import AuditLog
    from agi_router.callbacks.placer import CallbackPlacer, PlacerConfig
    from agi_router.callbacks.store import CallbackStore
    from agi_router.callflow.flow import CallResult
    from agi_router.handoff import AgentEvents, Handoff, InMemoryContextStore
    from agi_router.metrics import RouterMetrics
    from agi_router.motives.catalogue import Catalogue
    from agi_router.policy.model import Action, Decision, MotiveFacts, QueueSnapshot, Segment
    from agi_router.prompts import build_prompts
    from tests.asterisk_harness import AMI_SECRET, start, write_config
    from tests.conftest import bundled_policy_always_open, eventually

    cat = Catalogue.load()
    ami_port, sip = free_port(), free_port()
    ast = write_config(
        Path(BINARY), tmp_path / "ast", agi_url="agi://127.0.0.1:1/3646", ami_port=ami_port, sip_port=sip
    )
    ext = ast.root / "etc" / "extensions.conf"
    ext.write_text(ext.read_text() + "\n[test-callee-hold]\nexten => _[+0-9].,1,Answer()\n same => n,Wait(20)\n")
    whisper = ["router/whisper/flag-callback", "router/whisper/attestation_droits"]
    build_prompts(cat, ast.root / "data" / "sounds" / "fr", only=whisper)
    await asyncio.to_thread(start, ast)
    ami = AMIClient(AMIConfig(port=ami_port, secret=AMI_SECRET))
    store = CallbackStore(tmp_path / "cb.sqlite3", b"k" * 32)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        port = free_port()
        _register("agent2", port, ast, tmp_path)
        procs.append(_agent("agent2", port, 33300, "0;1500;2000", tmp_path))
        deadline = time.monotonic() + 60
        while "Not in use" not in ast.cli("queue show droits"):
            assert time.monotonic() < deadline, ast.cli("queue show droits")
            await asyncio.sleep(0.5)
        await ami.start()
        assert await ami.wait_connected(10), ami.last_error
        # the call that asked for the callback: routed while the queue was saturated, the caller said 1
        handoff, contexts = Handoff(cat, b"h" * 32), InMemoryContextStore()
        decision = Decision(Action.CALLBACK, "droits", 5, "saturation.callback", (), "p", Segment.NO_ACCOUNT,
                            "attestation_droits")  # fmt: skip
        result = CallResult("1799000000.5", "c-x", motive=MotiveFacts("attestation_droits", 1.0, "dtmf"))
        ctx = handoff.context(result, decision, bundled_policy_always_open())
        assert ctx is not None and "callback" in ctx.flags
        await contexts.put(ctx, 60)
        events = AgentEvents(handoff, contexts, RouterMetrics(), AuditLog(tmp_path / "a.jsonl"), lambda: 60.0)
        placer = CallbackPlacer(
            store, ami, lambda q: QueueSnapshot(q, available_agents=1), lambda now: True,
            PlacerConfig(ring_timeout_s=10), context_variables=events.callback_variables,
        )  # fmt: skip
        ast.cli("dialplan set global CALLBACK_DIAL_PREFIX Local/")
        ast.cli("dialplan set global CALLBACK_DIAL_SUFFIX @test-callee-hold")
        now = time.time()
        store.add(call_id=result.call_id, caller="c-x", number="+33612345678", queue="droits", motive="", now=now)
        assert await placer.run_once() == 1
        assert await eventually(lambda: bool(_invites(tmp_path / "agent2")), 20)
        invite = _invites(tmp_path / "agent2")[0]
        assert (invite["call"], invite["queue"], invite["motive"], invite["flags"]) == (
            ctx.ref, "droits", "attestation_droits", "callback",
        )  # fmt: skip

        def played() -> bool:  # the whisper, on the agent's channel (Asterisk's verbose log)
            text = ast.log.read_text(errors="replace")
            at = text.find("Playing 'router/whisper/flag-callback")
            return at >= 0 and "<PJSIP/agent2-" in text[max(0, at - 60) : at]

        assert await eventually(played, 10), ast.log.read_text(errors="replace")[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(10)
        await ami.close()
        store.close()
        ast.stop()
