"""The caller's path out of the box, through a real Asterisk 22 (issue #9).

Installed the way the README says: `agi-router asterisk setup` wrote Asterisk's configuration, the AMI
secret and the prompts; the router runs as `agi-router serve` (a real process) on its embedded defaults
but for free ports and the shared model directory; nothing is set by hand (no AMI secret anywhere in the
router's settings). Calls are Local channels whose caller side plays audio (test-caller context).
Judged from what the PBX does: AMI events with Asterisk's own timestamps.

Skipped, with the reason shown, unless AGI_ROUTER_ASTERISK names an asterisk binary.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from agi_router.config import SipSettings
from agi_router.policy.config import default_policy_path
from tests.asterisk_harness import AMI, AsteriskInstance, free_port, start, stop_router, write_config
from tests.audio import have_tts, speak, write_wav

BINARY = os.environ.get("AGI_ROUTER_ASTERISK", "")
pytestmark = [
    pytest.mark.asterisk,
    pytest.mark.skipif(not BINARY, reason="needs a real Asterisk 22: set AGI_ROUTER_ASTERISK=/path/to/asterisk"),
    pytest.mark.skipif(not have_tts(), reason="needs espeak-ng and sox"),
]


@dataclass
class Shipped:
    ast: AsteriskInstance
    ami: AMI
    var: Path
    proc: subprocess.Popen[bytes]
    metrics_port: int

    def originate(self, number: str, **variables: str) -> str:
        action_id = f"orig-{number}-{time.monotonic_ns()}"
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
        head = "".join(f"{k}: {v}\r\n" for k, v in fields.items())
        extra = "".join(f"Variable: {k}={v}\r\n" for k, v in variables.items())
        self.ami.sock.sendall((head + extra + "\r\n").encode())
        return action_id

    def route(self, timeout: float) -> dict[str, str]:
        """The next RouterRoute UserEvent (the dialplan's record of the route taken)."""
        return self.ami.wait(lambda m: m.get("UserEvent") == "RouterRoute" and "AGIStatus" in m, timeout)

    def health(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=2) as r:
            return r.read().decode()


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory, whisper_dir: Path) -> Iterator[Shipped]:
    yield from _ship(tmp_path_factory.mktemp("shipped"), whisper_dir)


@pytest.fixture(scope="module")
def confirming(tmp_path_factory: pytest.TempPathFactory, whisper_dir: Path) -> Iterator[Shipped]:
    """The same, with thresholds that send every recognised motive to the confirmation question (whatever
    Whisper makes of synthetic speech, the question is asked)."""
    extra = "[understanding]\nmotive_confidence = 1.0\nqueue_confidence = 1.0\nconfirm_confidence = 0.0\n"
    yield from _ship(tmp_path_factory.mktemp("confirming"), whisper_dir, extra)


@pytest.fixture(scope="module")
def safeguarded(tmp_path_factory: pytest.TempPathFactory, whisper_dir: Path) -> Iterator[Shipped]:
    """The same, on the bundled policy-3646-safeguarded.toml."""
    policy = default_policy_path().parent / "policy-3646-safeguarded.toml"
    yield from _ship(tmp_path_factory.mktemp("safeguarded"), whisper_dir, policy_file=policy, rtp=31800)


def _ship(
    root: Path,
    whisper_dir: Path,
    extra: str = "",
    policy_file: Path | None = None,
    rtp: int | None = None,
    sip: SipSettings | None = None,
    rtp_ports: int = 100,
) -> Iterator[Shipped]:
    binary = Path(BINARY)
    if not binary.exists():
        pytest.fail(f"AGI_ROUTER_ASTERISK={BINARY} does not exist")
    var = root / "var"
    agi_port, ami_port, metrics_port = free_port(), free_port(), free_port()
    rtp = rtp or (31600 if extra else 31400)
    cfg = root / "router.toml"
    # the bundled policy with its opening hours off (the tests run at any hour)
    policy = root / "policy.toml"
    text = (policy_file or default_policy_path()).read_text()
    policy.write_text(text.replace("[hours]\nenabled = true", "[hours]\nenabled = false"))
    assert policy.read_text() != text
    # otherwise only what a second service on this machine forces: free ports, the already-joined model
    cfg.write_text(
        f'data_dir = "{var}"\npolicy_file = "{policy}"\n'
        f"[agi]\nport = {agi_port}\n[ami]\nport = {ami_port}\n[metrics]\nport = {metrics_port}\n"
        f'[speech]\nmodel_dir = "{whisper_dir}"\nrtp_port_start = {rtp}\nrtp_port_end = {rtp + rtp_ports}\n' + extra
    )
    env = {**os.environ, "AGI_ROUTER_CONFIG": str(cfg)}
    for k in ("AGI_ROUTER_AMI_SECRET", "AGI_ROUTER_PSEUDONYM_KEY"):
        env.pop(k, None)
    # the README's order: the router's first start creates its secret; setup gives it to Asterisk
    # its log goes to a file: a pipe nobody reads fills after ~80 calls' log lines (64 KiB) and then blocks the
    # router's event loop on its next log line (found with 100 SIPp calls, benchmarks/bench_handoff_sipp.py)
    with (root / "router.log").open("wb") as router_log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agi_router", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=router_log
        )
    deadline = time.monotonic() + 60
    while not (var / "ami.secret").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    ast = write_config(
        binary,
        root / "ast",
        agi_url=f"agi://127.0.0.1:{agi_port}/3646",
        ami_port=ami_port,
        sip_port=free_port(),
        router_data_dir=var,
        sip=sip,
    )
    setup = subprocess.run(
        [sys.executable, "-m", "agi_router", "asterisk", "setup", "--sounds", str(ast.root / "data" / "sounds" / "fr")],
        env=env,
        capture_output=True,
    )
    assert setup.returncode == 0, setup.stderr.decode()
    start(ast)
    ami = AMI(ami_port, secret=(var / "ami.secret").read_text().strip())
    try:
        yield Shipped(ast, ami, var, proc, metrics_port)
    finally:
        ami.close()
        ast.stop()
        stop_router(proc)


def _wait_ready(s: Shipped, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert s.proc.poll() is None, "the router exited"
        try:
            if '"ok"' in s.health():
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"the router never logged in to Asterisk's AMI: {s.health()}")


def _ts(m: dict[str, str]) -> float:
    return float(m["Timestamp"])


def test_live_audio_starts_out_of_the_box(shipped: Shipped) -> None:
    """The router logs in with the secret setup gave Asterisk; a caller who speaks is heard on a
    capture leg; the router's decision reaches the dialplan."""
    _wait_ready(shipped)
    write_wav(
        shipped.ast.root / "data" / "sounds" / "fr" / "test" / "motive.wav",
        np.concatenate([speak("je voudrais commander une nouvelle carte vitale"), np.zeros(8000, np.int16)]),
    )
    # the caller speaks, then presses 0 (a person) 2.5 s later if still asked: whatever Whisper made of
    # synthetic speech, the call ends routed by the router
    shipped.originate("0612000001", TEST_FIRST_WAIT="1", TEST_PLAY="test/motive", TEST_DTMF2="0", TEST_HOLD="40")
    route = shipped.route(60)
    legs = [m for m in shipped.ami.events if m.get("Variable") == "UNICASTRTP_LOCAL_PORT"]
    assert legs and legs[0]["Channel"].startswith("UnicastRTP/127.0.0.1:314"), "no capture leg: live audio off"
    assert (route["Done"], route["AGIStatus"]) == ("1", "SUCCESS"), route
    print(f"spoken motive call: rule {route['Rule']}, motive {route.get('Motive')!r}")


def test_no_agent_logged_in_is_not_saturation(shipped: Shipped) -> None:
    """No agent is logged in anywhere here (the queue members are unregistered softphones): a skill-queue
    caller is sent to the reception queue, with no dissuasion and no callback offer."""
    _wait_ready(shipped)
    shipped.originate("0612000002", MOTIVE_HINT="carte_vitale_vol", TEST_HOLD="6")
    route = shipped.route(20)
    # action "queue" (not "dissuade"): route-queue, no saturation message; the router offers callbacks
    # only on dissuasion, so none was offered
    assert (route["Action"], route["Queue"], route["Rule"]) == ("queue", "accueil", "queue.unstaffed"), route


def _silent_call(s: Shipped, number: str, hold_s: int) -> tuple[dict[str, str], list[dict[str, str]]]:
    """A caller who never says a word: the dialplan's route and the two capture legs' hang-ups."""
    _wait_ready(s)
    start_at = len(s.ami.events)
    s.originate(number, TEST_HOLD=str(hold_s))
    route = s.route(hold_s + 10)
    events = s.ami.events[start_at:]
    leg_hangups = [m for m in events if m.get("Event") == "Hangup" and m.get("Channel", "").startswith("UnicastRTP/")]
    assert len(leg_hangups) == 2, [m.get("Channel") for m in leg_hangups]
    return route, leg_hangups


def test_a_silent_caller_is_in_a_queue_within_40_s(shipped: Shipped) -> None:
    """No input at all: ask-motive, re-prompt, the short menu twice, then a person: the dialplan has the
    human route < 40 s after the first round gave up (first leg's hang-up), Asterisk's timestamps."""
    route, leg_hangups = _silent_call(shipped, "0612000003", hold_s=70)
    waited = _ts(route) - _ts(leg_hangups[0])
    print(f"silent caller: human route {waited:.1f} s after the first round ended")
    assert (route["Done"], route["Rule"], route["Queue"]) == ("1", "motive.none", "accueil"), route
    assert waited < 40.0


def test_safeguarded_policy_a_silent_caller_reaches_a_person_after_two_tries(safeguarded: Shipped) -> None:
    """policy-3646-safeguarded.toml (person_after_failed_captures = 2): no input twice, then a person at once,
    without the DTMF menu; the rule says why (audit trail and dialplan)."""
    s = safeguarded
    route, leg_hangups = _silent_call(s, "0612000005", hold_s=60)
    waited = _ts(route) - _ts(leg_hangups[-1])
    print(f"safeguarded silent caller: human route {waited:.2f} s after the second round ended")
    assert (route["Done"], route["Rule"], route["Queue"]) == ("1", "safeguard.failed_capture", "accueil"), route
    assert waited < 2.0  # no menu was played in between
    rec = _audit(s, route["Uniqueid"])
    assert rec["motive"]["failed_captures"] == 2 and "capture_failed" in rec["cohorts"]  # type: ignore[index,operator]


def test_router_killed_mid_capture_leaves_at_most_the_lease_of_silence(shipped: Shipped) -> None:
    """SIGKILL of `agi-router serve` while the caller talks on the capture leg: the leg's lease
    (TIMEOUT(absolute), renewed over AMI) runs out, Dial returns, the AGI socket is closed, and the
    dialplan takes the human route. Runs last: it kills the module's router."""
    _wait_ready(shipped)
    talk = "alors voilà c'est compliqué je vous explique mon histoire depuis le début " * 2
    long_talk = np.concatenate([speak(talk)] * 4)
    write_wav(shipped.ast.root / "data" / "sounds" / "fr" / "test" / "long.wav", long_talk)
    start_at = len(shipped.ami.events)
    shipped.originate("0612000004", TEST_FIRST_WAIT="0.5", TEST_PLAY="test/long", TEST_HOLD="30")
    shipped.ami.wait(lambda m: m.get("Variable") == "UNICASTRTP_LOCAL_PORT", 30)
    time.sleep(2.2)  # the caller is talking, several renewals done
    killed_at = time.time()
    shipped.proc.send_signal(signal.SIGKILL)
    route = shipped.route(30)

    def is_leg_end(m: dict[str, str]) -> bool:
        return m.get("Event") == "Hangup" and m.get("Channel", "").startswith("UnicastRTP/")

    # the leg's Hangup and the caller's UserEvent come from two channels' threads: AMI may deliver them in
    # either order (85 µs apart here), so the leg's end may still be on its way
    if not any(is_leg_end(m) for m in shipped.ami.events[start_at:]):
        shipped.ami.wait(is_leg_end, 5)
    leg_end = [m for m in shipped.ami.events[start_at:] if is_leg_end(m)][-1]
    dead_air, to_route = _ts(leg_end) - killed_at, _ts(route) - killed_at
    print(f"router killed: leg ended {dead_air:.2f} s later, human route {to_route:.2f} s later")
    assert (route["Done"], route["AGIStatus"]) == ("0", "SUCCESS"), route  # -> route-human
    assert dead_air <= 2.3 and to_route <= 2.5


def _audit(s: Shipped, uniqueid: str, timeout: float = 5.0) -> dict[str, object]:
    import json

    path = s.var / "audit" / "decisions.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            for line in path.read_text().splitlines():
                rec = json.loads(line)
                if rec.get("call_id") == uniqueid:
                    return dict(rec)
        time.sleep(0.1)
    raise AssertionError(f"no audit record for {uniqueid}")


@pytest.mark.parametrize("answer", ["dtmf", "speech"])
def test_confirmation_question_through_the_real_pbx(confirming: Shipped, answer: str) -> None:
    """An unsure motive: the router streams "Vous appelez pour X ?" on a second capture leg; the caller
    answers 1 (RFC 4733 through Asterisk, seen by AMI) or says "oui" (barge-in, Whisper, the yes lexicon);
    the route is the motive confirmed, with its level in the audit trail."""
    s = confirming
    _wait_ready(s)
    sounds = s.ast.root / "data" / "sounds" / "fr" / "test"
    write_wav(
        sounds / "motive2.wav",
        np.concatenate([speak("je voudrais commander une nouvelle carte vitale"), np.zeros(4000, np.int16)]),
    )
    write_wav(
        sounds / "oui.wav", np.concatenate([np.zeros(1600, np.int16), speak("oui", "fr+m3"), np.zeros(8000, np.int16)])
    )
    start_at = len(s.ami.events)
    reply = {"TEST_DTMF2": "1"} if answer == "dtmf" else {"TEST_PLAY2": "test/oui"}
    s.originate(
        "0612000010" if answer == "dtmf" else "0612000011",
        TEST_FIRST_WAIT="1",
        TEST_PLAY="test/motive2",
        TEST_HOLD="30",
        **reply,
    )
    route = s.route(60)
    events = s.ami.events[start_at:]
    legs = [m for m in events if m.get("Event") == "Hangup" and m.get("Channel", "").startswith("UnicastRTP/")]
    rec = _audit(s, route["Uniqueid"])
    motive = rec["motive"]
    assert isinstance(motive, dict)
    print(f"confirmation by {answer}: motive {motive}, route {route.get('Rule')}, legs {len(legs)}")
    if motive.get("level") != "confirmed":
        pytest.skip(f"Whisper did not hear a catalogue motive in the synthetic sentence: {motive}")
    assert len(legs) == 2  # the motive round, then the question's round
    assert route["Done"] == "1" and route["Motive"] == motive["id"] and motive["confidence"] == 1.0
    ups = [m for m in events if m.get("Variable") == "UNICASTRTP_LOCAL_PORT"]
    assert len(ups) == 2
    turnaround = _ts(ups[1]) - _ts(legs[0])  # first round over -> the question's leg is up
    after = _ts(route) - _ts(legs[1])  # the answer's round over -> the route in the dialplan
    second_turn = _ts(route) - _ts(legs[0])
    print(
        f"  question leg up {turnaround * 1000:.0f} ms after the first round; route {after * 1000:.0f} ms after "
        f"the answer's round; the whole second turn {second_turn:.2f} s"
    )
    assert turnaround < 1.0 and after < 1.0
