"""End to end against a real Asterisk 22: dialplan + FastAGI + the router, calls placed over AMI.

Skipped, with the reason shown, unless AGI_ROUTER_ASTERISK names an asterisk binary, e.g.
``AGI_ROUTER_ASTERISK=/opt/ast22/sbin/asterisk scripts/bootstrap.sh test -m asterisk``.
With AGI_ROUTER_RECORD_TRACES=1 the AGI conversations are saved to tests/fixtures/agi/ (the
traces test_recorded_traces.py replays in CI).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from agi_router.agi.server import AGIServer, AGIServerConfig
from agi_router.agi.session import AGISession
from agi_router.ami.client import AMIClient, AMIConfig
from agi_router.callflow.capture import ChainedCapture, DTMFMenuCapture, DTMFMenuConfig, HintCapture
from agi_router.callflow.flow import CallFlow, CallResult, PolicyHolder
from agi_router.callflow.legs import LegRegistry
from agi_router.callflow.speech import Recognition, SpeechCapture, SpeechConfig
from agi_router.media.rtp import PortPool
from agi_router.motives.catalogue import Catalogue
from agi_router.policy.model import AccountFacts
from agi_router.privacy import Pseudonymizer
from agi_router.state.memory import InMemoryCallerMemory
from tests.asterisk_harness import AMI, AMI_SECRET, ROOT, AsteriskInstance, free_port, start, write_config
from tests.audio import have_tts, read_wav, speak, speech_bounds_ms, write_wav
from tests.conftest import bundled_policy_always_open, eventually
from tests.doubles import StubDirectory

BINARY = os.environ.get("AGI_ROUTER_ASTERISK", "")
pytestmark = [
    pytest.mark.asterisk,
    pytest.mark.skipif(not BINARY, reason="needs a real Asterisk 22: set AGI_ROUTER_ASTERISK=/path/to/asterisk"),
]
TRACES = ROOT / "tests" / "fixtures" / "agi"


class RecordingProxy:
    """A TCP relay between Asterisk and the router that keeps both directions line by line."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.sessions: list[list[str]] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _relay(self, a_reader: asyncio.StreamReader, a_writer: asyncio.StreamWriter) -> None:
        lines: list[str] = []
        self.sessions.append(lines)
        r_reader, r_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, tag: str) -> None:
            while raw := await src.readline():
                lines.append(tag + raw.decode(errors="replace").rstrip("\n"))
                dst.write(raw)
                await dst.drain()
            dst.close()

        await asyncio.gather(pipe(a_reader, r_writer, "A> "), pipe(r_reader, a_writer, "R> "), return_exceptions=True)

    def save(self, name: str) -> None:
        if os.environ.get("AGI_ROUTER_RECORD_TRACES") != "1":
            return
        TRACES.mkdir(parents=True, exist_ok=True)
        for i, lines in enumerate(self.sessions):
            (TRACES / f"{name}-{i + 1}.trace").write_text("\n".join(lines) + "\n")

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


@dataclass
class Stack:
    ast: AsteriskInstance
    ami: AMI
    results: list[CallResult]
    proxy: RecordingProxy
    router_port: int

    async def call(self, number: str, timeout: float = 20.0, **variables: str) -> dict[str, str]:
        """Originate Local/<number>@hotline-test; return the RouterRoute UserEvent of that call."""
        action_id = f"orig-{number}-{len(self.ami.events)}"
        fields = {
            "Action": "Originate",
            "Channel": f"Local/{number}@hotline-test",
            "Context": "test-caller",
            "Exten": "s",
            "Priority": "1",
            "Async": "true",
            "ActionID": action_id,
            "Timeout": "10000",
        }
        msg = "".join(f"Variable: {k}={v}\r\n" for k, v in variables.items())

        def run() -> dict[str, str]:
            head = "".join(f"{k}: {v}\r\n" for k, v in fields.items())
            self.ami.sock.sendall((head + msg + "\r\n").encode())
            return self.ami.wait(
                lambda m: (
                    m.get("Event") == "UserEvent"
                    and m.get("UserEvent") == "RouterRoute"
                    and m.get("AGIStatus") is not None
                ),
                timeout,
            )

        return await asyncio.to_thread(run)


@pytest.fixture(scope="module")
def asterisk_binary() -> Path:
    p = Path(BINARY)
    if not p.exists():
        pytest.fail(f"AGI_ROUTER_ASTERISK={BINARY} does not exist")
    return p


@pytest.fixture
async def stack(asterisk_binary: Path, tmp_path: Path) -> AsyncIterator[Stack]:
    catalogue = Catalogue.load()
    policy = bundled_policy_always_open()
    results: list[CallResult] = []
    directory = StubDirectory({"+33612345678": AccountFacts(True, True, date.today())})
    flow = CallFlow(
        policy=PolicyHolder(policy),
        directory=directory,
        memory=InMemoryCallerMemory(),
        pseudonymizer=Pseudonymizer(b"real-asterisk-test-key"),
        capture=ChainedCapture(
            [HintCapture(), DTMFMenuCapture(catalogue, DTMFMenuConfig(attempts=2, timeout_ms=4000))]
        ),
        on_result=results.append,
    )

    async def close_at_once(session: AGISession) -> None:
        return None  # a router that "crashes": closes without writing anything

    server = AGIServer({"3646": flow, "crash": close_at_once}, AGIServerConfig(port=0))
    await server.start()
    router_port = server.sockets[0][1]
    proxy = RecordingProxy(router_port)
    proxy_port = await proxy.start()
    ast = write_config(
        asterisk_binary,
        tmp_path / "ast",
        agi_url=f"agi://127.0.0.1:{proxy_port}/3646",
        ami_port=free_port(),
        sip_port=free_port(),
    )
    if shutil.which("espeak-ng") and shutil.which("sox"):
        from agi_router.prompts import build_prompts

        await asyncio.to_thread(build_prompts, catalogue, ast.root / "data" / "sounds" / "fr")
    await asyncio.to_thread(start, ast)
    ami = await asyncio.to_thread(AMI, ast.ami_port)
    try:
        yield Stack(ast, ami, results, proxy, router_port)
    finally:
        ami.close()
        await asyncio.to_thread(ast.stop)
        await proxy.close()
        await server.close(grace=1)


async def test_2024_sequence_on_real_asterisk(stack: Stack) -> None:
    motive = sorted(stack_policy_deflectable())[0]
    events = [await stack.call("0612345678", MOTIVE_HINT=motive) for _ in range(3)]
    assert [e["Action"] for e in events] == ["deflect", "hangup", "priority"]
    assert all(e["Done"] == "1" and e["AGIStatus"] == "SUCCESS" for e in events)
    assert events[2]["Prio"] == "10"
    stack.proxy.save("hint-sequence")


def stack_policy_deflectable() -> set[str]:
    from agi_router.policy.config import load_policy

    return set(load_policy().deflect_motives)


async def test_no_account_goes_to_the_skill_queue(stack: Stack) -> None:
    motive = sorted(stack_policy_deflectable())[0]
    e = await stack.call("0699999999", MOTIVE_HINT=motive)
    assert (e["Action"], e["Done"]) == ("queue", "1")
    assert e["Queue"] == Catalogue.load().queue_of(motive)


async def test_dtmf_menu_on_real_asterisk(stack: Stack) -> None:
    catalogue = Catalogue.load()
    m = next(m for m in catalogue if m.dtmf and len(m.dtmf) == 2 and m.dtmf[1] != "9")
    assert m.dtmf is not None
    e = await stack.call("0611111111", TEST_DTMF1=m.dtmf[0], TEST_DTMF2=m.dtmf[1], TEST_HOLD="6")
    assert (e["Motive"], e["Done"]) == (m.id, "1")
    stack.proxy.save("dtmf-menu")


async def test_caller_hangs_up_during_the_menu(stack: Stack) -> None:
    number = "0622222222"
    await asyncio.to_thread(
        stack.ami.send,
        {
            "Action": "Originate",
            "Channel": f"Local/{number}@hotline-test",
            "Context": "test-caller",
            "Exten": "s",
            "Priority": "1",
            "Async": "true",
            "Variable": "TEST_HANGUP_AFTER=1",
        },
    )
    for _ in range(100):
        if stack.results:
            break
        await asyncio.sleep(0.1)
    assert stack.results and stack.results[-1].hung_up
    assert stack.results[-1].decision is None
    stack.proxy.save("hangup-mid-menu")


async def test_router_down_leaves_the_caller_on_the_human_route(stack: Stack) -> None:
    dead = free_port()
    stack.ast.cli(f"dialplan set global ROUTER_AGI agi://127.0.0.1:{dead}/3646")
    e = await stack.call("0612345678", MOTIVE_HINT="attestation_droits")
    assert (e["AGIStatus"], e["Done"], e["Action"], e["Queue"]) == ("FAILURE", "0", "human", "accueil")


async def test_router_closing_early_is_not_mistaken_for_a_decision(stack: Stack) -> None:
    stack.ast.cli(f"dialplan set global ROUTER_AGI agi://127.0.0.1:{stack.router_port}/crash")
    e = await stack.call("0612345678", MOTIVE_HINT="attestation_droits")
    # Asterisk reports SUCCESS for a script that closed early: ROUTER_DONE is what tells them apart
    assert (e["AGIStatus"], e["Done"], e["Action"]) == ("SUCCESS", "0", "human")


def test_config_loads_without_errors(asterisk_binary: Path, tmp_path: Path) -> None:
    """The project's config files load into a stock Asterisk 22 without a single error line."""
    ast = write_config(
        asterisk_binary,
        tmp_path / "ast",
        agi_url="agi://127.0.0.1:4573/3646",
        ami_port=free_port(),
        sip_port=free_port(),
    )
    start(ast)
    try:
        assert "hotline" in ast.cli("dialplan show hotline")
        queues = ast.cli("queue show")
        for q in ("remboursements", "indemnites", "droits", "risques_pro", "maternite", "accueil"):
            assert q in queues
        assert "softphone" in ast.cli("pjsip show endpoints")
        assert "agi-router" in ast.cli("manager show users")
    finally:
        ast.stop()
    # Other modules complain about their own missing config files; ours must load cleanly.
    ours = ("extensions.conf", "queues.conf", "pjsip.conf", "manager.conf", "rtp.conf")
    modules = {"app_queue.c", "pbx_config.c", "manager.c", "res_rtp_asterisk.c", "chan_pjsip.c", "res_pjsip.c"}
    bad = []
    for ln in ast.log.read_text().splitlines():
        m = re.search(r"\] (?:ERROR|WARNING)\[\d+\] (\S+): (.*)", ln)
        if m and (any(f in ln for f in ours) or m.group(1) in modules or m.group(1).startswith("res_pjsip/")):
            bad.append(ln)
    assert not bad, "\n".join(bad)


# -- live audio: RTP from Asterisk's chan_rtp leg --------------------------------------------------


class RecordingRecognizer:
    """Stands in for Whisper here: this test is about the audio path, not the recogniser."""

    def __init__(self, motive: str) -> None:
        self.motive = motive
        self.heard: list[np.ndarray] = []

    async def recognize(self, pcm: np.ndarray) -> Recognition:
        self.heard.append(pcm)
        await asyncio.sleep(0.05)
        return Recognition(self.motive, 0.9, None, "(recorded)")


@dataclass
class SpeechStack:
    stack: Stack
    ami: AMIClient
    speech: SpeechCapture
    recognizer: RecordingRecognizer
    utterance: np.ndarray


@pytest.fixture
async def speech_stack(asterisk_binary: Path, tmp_path: Path) -> AsyncIterator[SpeechStack]:
    if not have_tts():
        pytest.skip("needs espeak-ng and sox")
    catalogue = Catalogue.load()
    policy = bundled_policy_always_open()
    results: list[CallResult] = []
    ami_port = free_port()
    ami = AMIClient(AMIConfig(port=ami_port, secret=AMI_SECRET, backoff_initial=0.2, backoff_max=1.0))
    legs = LegRegistry(ami)
    recognizer = RecordingRecognizer("attestation_droits")
    directory = StubDirectory({"+33612345678": AccountFacts(True, True, date.today())})
    ast_root = tmp_path / "ast"
    sounds = ast_root / "data" / "sounds" / "fr"
    from agi_router.prompts import build_prompts

    await asyncio.to_thread(build_prompts, catalogue, sounds)
    prompt = read_wav(sounds / "router" / "ask-motive.wav")
    utterance = speak("bonjour je voudrais une attestation de droits s'il vous plaît")
    write_wav(sounds / "test" / "utterance.wav", utterance)
    speech = SpeechCapture(legs, PortPool(31000, 31100), recognizer, SpeechConfig(), prompt=prompt)
    flow = CallFlow(
        policy=PolicyHolder(policy),
        directory=directory,
        memory=InMemoryCallerMemory(),
        pseudonymizer=Pseudonymizer(b"real-asterisk-test-key"),
        capture=ChainedCapture([HintCapture(), speech, DTMFMenuCapture(catalogue, DTMFMenuConfig(attempts=1))]),
        on_result=results.append,
    )
    server = AGIServer({"3646": flow}, AGIServerConfig(port=0))
    await server.start()
    proxy = RecordingProxy(server.sockets[0][1])
    proxy_port = await proxy.start()
    ast = write_config(
        asterisk_binary, ast_root, agi_url=f"agi://127.0.0.1:{proxy_port}/3646", ami_port=ami_port, sip_port=free_port()
    )
    await asyncio.to_thread(start, ast)
    await ami.start()
    assert await ami.wait_connected(10), ami.last_error
    test_ami = await asyncio.to_thread(AMI, ast.ami_port)
    try:
        yield SpeechStack(
            Stack(ast, test_ami, results, proxy, server.sockets[0][1]), ami, speech, recognizer, utterance
        )
    finally:
        test_ami.close()
        await ami.close()
        await asyncio.to_thread(ast.stop)
        await proxy.close()
        await server.close(grace=1)


async def test_live_audio_capture_on_real_asterisk(speech_stack: SpeechStack) -> None:
    s = speech_stack
    e = await s.stack.call("0612345678", timeout=30, TEST_PLAY="test/utterance", TEST_FIRST_WAIT="1.5", TEST_HOLD="6")
    assert (e["Done"], e["Motive"], e["Action"]) == ("1", "attestation_droits", "deflect")
    assert len(s.recognizer.heard) >= 1
    heard = s.recognizer.heard[-1]
    true_start, true_end = speech_bounds_ms(s.utterance)
    spoken_ms = true_end - true_start
    heard_ms = len(heard) / 8
    cfg = s.speech.config.endpointer
    assert spoken_ms - 100 <= heard_ms <= spoken_ms + cfg.pre_roll_ms + cfg.tail_ms + 200, (spoken_ms, heard_ms)
    outcome = s.speech.rounds[-1]
    assert outcome.barged_in  # the caller spoke 1.5 s into a ~4 s prompt
    assert outcome.stats["lost"] == 0 and outcome.stats["garbage"] == 0
    sent = int(str(outcome.stats["sent"]))
    assert s.speech.prompt is not None
    assert 0 < sent < len(s.speech.prompt) // 160  # the prompt started, and stopped at the caller's words
    r = s.stack.results[-1]
    assert r.motive is not None and r.motive.method == "speech"
    assert r.speech_to_route_s is not None and r.speech_to_route_s < 0.1, r.speech_to_route_s
    # the caller's wait: the hangover (the endpointer's) + what remains of recognition
    wait = r.voice_to_route_s
    assert wait is not None and cfg.hangover_ms / 1000 - 0.1 < wait < 2.0, wait
    print(
        f"speech->route {r.speech_to_route_s * 1000:.1f} ms, voice->route {wait * 1000:.0f} ms, "
        f"heard {heard_ms:.0f} ms of {spoken_ms:.0f} ms, "
        f"prompt frames sent {sent}, stats {outcome.stats}"
    )
    s.stack.proxy.save("speech-capture")
    # what Prometheus sees of this real call
    from agi_router.metrics import RouterMetrics

    m = RouterMetrics()
    m.sources.speech = s.speech
    m.observe_call(r)

    def get(name: str, **labels: str) -> float:
        return m.registry.get_sample_value(name, labels) or 0.0

    assert get("agi_router_speech_rounds_total", outcome="recognised") == 1
    assert get("agi_router_rtp_packets_total", direction="out") == sent
    assert get("agi_router_rtp_packets_total", direction="in") > 50 and get("agi_router_rtp_lost_packets_total") == 0
    assert get("agi_router_vad_voiced_frames_total") > 20
    assert 0.4 < get("agi_router_end_of_speech_delay_seconds_sum") < 1.0  # the 550 ms hangover + lag
    assert get("agi_router_speech_to_route_seconds_bucket", le="0.1") == 1
    assert get("agi_router_media_streams_active") == 0


async def test_callback_placed_through_real_originate(asterisk_binary: Path, tmp_path: Path) -> None:
    """The placer's Originate against a real Asterisk: the called-back number answers (test-callee),
    then the call enters callback-connect and its queue; an unreachable one fails and is retried."""
    from agi_router.callbacks.placer import CallbackPlacer, PlacerConfig
    from agi_router.callbacks.store import CallbackStore
    from agi_router.policy.model import QueueSnapshot

    ami_port = free_port()
    ast = write_config(
        asterisk_binary, tmp_path / "ast", agi_url="agi://127.0.0.1:1/3646", ami_port=ami_port, sip_port=free_port()
    )
    await asyncio.to_thread(start, ast)
    ami = AMIClient(AMIConfig(port=ami_port, secret=AMI_SECRET))
    store = CallbackStore(tmp_path / "cb.sqlite3", b"k" * 32)
    try:
        await ami.start()
        assert await ami.wait_connected(10), ami.last_error
        answered: list[str] = []
        allev: list[str] = []
        ami.on("*", lambda m: allev.append(f"{m.event}:{m.get('UserEvent', '')}"))
        ami.on(
            "UserEvent",
            lambda m: answered.append(m.get("Number", "")) if m.get("UserEvent") == "CalleeRinging" else None,
        )
        placer = CallbackPlacer(
            store,
            ami,
            lambda q: QueueSnapshot(q, available_agents=1),
            lambda now: True,
            PlacerConfig(ring_timeout_s=10, retry_s=60),
        )
        ast.cli("dialplan set global CALLBACK_DIAL_PREFIX Local/")
        ast.cli("dialplan set global CALLBACK_DIAL_SUFFIX @test-callee")
        ok = store.add(call_id="1", caller="c-a", number="+33612345678", queue="droits", motive="", now=time.time())
        assert await placer.run_once() == 1
        assert store.get(ok).status == "placed"  # type: ignore[union-attr]
        # AMI events travel through Stasis and may arrive after the Originate response
        assert await eventually(lambda: answered == ["+33612345678"], 3), [e for e in allev if e.startswith("User")]
        ast.cli("dialplan set global CALLBACK_DIAL_SUFFIX @no-such-context")
        ko = store.add(call_id="2", caller="c-b", number="+33622222222", queue="droits", motive="", now=time.time())
        assert await placer.run_once() == 1
        failed = store.get(ko)
        assert failed is not None and failed.status == "pending" and failed.attempts == 1 and failed.last_error
    finally:
        await ami.close()
        store.close()
        await asyncio.to_thread(ast.stop)


async def test_queue_events_and_call_outcome_on_real_asterisk(asterisk_binary: Path, tmp_path: Path) -> None:
    """A caller routed to a skill queue is answered by an agent: the queue model and the outcome record
    follow it from the real AMI events (QueueCallerJoin, AgentConnect, Hangup)."""
    from agi_router.queues.model import QueueModel
    from agi_router.queues.outcomes import CallOutcome, OutcomeTracker

    policy = bundled_policy_always_open()
    ami_port = free_port()
    ami = AMIClient(AMIConfig(port=ami_port, secret=AMI_SECRET))
    model = QueueModel()
    model.attach(ami)
    outcomes: list[CallOutcome] = []
    tracker = OutcomeTracker(outcomes.append)
    tracker.attach(ami)
    joined: list[str] = []
    ami.on("QueueCallerJoin", lambda m: joined.append(m.get("Queue", "")))
    qev: list[str] = []
    ami.on("*", lambda m: qev.append(str(dict(m))) if "Member" in (m.event or "") else None)
    flow = CallFlow(
        policy=PolicyHolder(policy),
        directory=StubDirectory(),
        memory=InMemoryCallerMemory(),
        pseudonymizer=Pseudonymizer(b"real-asterisk-test-key"),
        capture=HintCapture(),
        queue_state=model.snapshot,
        on_result=tracker.on_result,
    )
    server = AGIServer({"3646": flow}, AGIServerConfig(port=0))
    await server.start()
    ast = write_config(
        asterisk_binary,
        tmp_path / "ast",
        agi_url=f"agi://127.0.0.1:{server.sockets[0][1]}/3646",
        ami_port=ami_port,
        sip_port=free_port(),
    )
    await asyncio.to_thread(start, ast)
    try:
        await ami.start()
        assert await ami.wait_connected(10), ami.last_error
        # the router's AMI user may not manage members (no "agent" write right): the CLI adds one
        ast.cli("queue add member Local/agent9@test-agent to droits")
        assert await eventually(lambda: model.synced)
        # the member arrives by a QueueMemberAdded event (events trail the CLI): wait until the model has it,
        # or the router would rightly find nobody to answer and dissuade
        assert await eventually(lambda: model.snapshot("droits").available_agents == 1, 5), qev
        await ami.action(
            "Originate",
            [
                ("Channel", "Local/0699999999@hotline-test"),
                ("Application", "Wait"),
                ("Data", "20"),
                ("Variable", "MOTIVE_HINT=carte_vitale_perte"),
                ("Async", "true"),
            ],
        )
        assert await eventually(lambda: bool(outcomes), 20)
        (o,) = outcomes
        assert (o.action, o.queue, o.outcome) == ("queue", "droits", "answered"), o
        assert joined == ["droits"] and o.wait_s is not None and o.wait_s >= 0
        assert model.snapshot("droits").waiting == 0 and model.snapshot("droits").fresh
    finally:
        await ami.close()
        await asyncio.to_thread(ast.stop)
        await server.close(grace=1)


async def test_queue_priority_is_honoured_by_app_queue(asterisk_binary: Path, tmp_path: Path) -> None:
    """route-queue turns ROUTER_PRIO into QUEUE_PRIO: a priority caller who joins after a normal one is
    answered first when the (single, busy) agent frees up."""
    ami_port = free_port()
    ast = write_config(
        asterisk_binary, tmp_path / "ast", agi_url="agi://127.0.0.1:1/3646", ami_port=ami_port, sip_port=free_port()
    )
    await asyncio.to_thread(start, ast)
    ami = AMIClient(AMIConfig(port=ami_port, secret=AMI_SECRET))
    order: list[str] = []
    ami.on("AgentConnect", lambda m: order.append(m.get("CallerIDNum", "")))
    try:
        await ami.start()
        assert await ami.wait_connected(10), ami.last_error
        ast.cli("queue add member Local/agent9@test-agent to droits")

        async def caller(number: str, prio: int) -> None:
            await ami.action(
                "Originate",
                [
                    ("Channel", "Local/s@route-queue"),
                    ("Application", "Wait"),
                    ("Data", "30"),
                    ("CallerID", f"<{number}>"),
                    ("Variable", "ROUTER_QUEUE=droits"),
                    ("Variable", f"ROUTER_PRIO={prio}"),
                    ("Async", "true"),
                ],
            )

        await caller("1000", 0)  # takes the agent for 2 s
        assert await eventually(lambda: order == ["1000"], 5), order
        await caller("2000", 0)  # waits
        await asyncio.sleep(0.3)
        await caller("3000", 10)  # joins later, with priority
        # the agent is free again after its 2 s call and the queue's wrap-up time (10 s in queues.conf)
        assert await eventually(lambda: len(order) >= 2, 20), order
        assert order[:2] == ["1000", "3000"]  # 3000 joined after 2000 but had priority
    finally:
        await ami.close()
        await asyncio.to_thread(ast.stop)
