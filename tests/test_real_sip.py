"""Real SIP calls into a real Asterisk 22: SIPp dials 3646, the dialplan asks the router over FastAGI.

Skipped, with the reason shown, unless AGI_ROUTER_ASTERISK names an asterisk binary and ``sipp`` (SIPp 3.6.1,
Debian package sip-tester) is on PATH, e.g.
``AGI_ROUTER_ASTERISK=/opt/ast22/sbin/asterisk .venv/bin/python -m pytest tests/test_real_sip.py``.
The caller is loadtest/scenarios/caller-3646.xml (the load test's scenario) with a one-line injection file;
its DTMF (RFC 4733, <exec play_dtmf>) goes out through a raw socket, so these tests need root or CAP_NET_RAW.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from agi_router.callflow.flow import CallResult
from agi_router.policy.model import Action, Segment
from agi_router.privacy import Pseudonymizer
from tests import test_real_asterisk as real
from tests.asterisk_harness import ROOT, free_port
from tests.test_real_asterisk import Stack

BINARY = os.environ.get("AGI_ROUTER_ASTERISK", "")
SIPP = shutil.which("sipp")
SCENARIO = ROOT / "loadtest" / "scenarios" / "caller-3646.xml"
pytestmark = [
    pytest.mark.asterisk,
    # a deflection plays ~25 s of generated prompts before Asterisk hangs up
    pytest.mark.timeout(120),
    pytest.mark.skipif(not BINARY, reason="needs a real Asterisk 22: set AGI_ROUTER_ASTERISK=/path/to/asterisk"),
    pytest.mark.skipif(not SIPP, reason="needs SIPp on PATH (Debian/Ubuntu package sip-tester)"),
    pytest.mark.skipif(
        hasattr(os, "geteuid") and os.geteuid() != 0 and os.environ.get("AGI_ROUTER_SIPP_RAW") != "1",
        reason="SIPp sends DTMF through a raw socket: run as root (or setcap cap_net_raw sipp; AGI_ROUTER_SIPP_RAW=1)",
    ),
]
# the stack fixture's pseudonymisation key (tests/test_real_asterisk.py)
PSEUDONYMS = Pseudonymizer(b"real-asterisk-test-key")
# the router + Asterisk stack of tests/test_real_asterisk.py (fixtures, re-exported for this module)
asterisk_binary = real.asterisk_binary
stack = real.stack


@dataclass
class SipCall:
    returncode: int
    seconds: float
    messages: str  # SIPp's -trace_msg log: every SIP message sent and received
    errors: str  # SIPp's -trace_err log
    events: list[dict[str, str]]  # AMI events seen while the call lasted

    @property
    def route(self) -> dict[str, str]:
        found = [e for e in self.events if e.get("Event") == "UserEvent" and e.get("UserEvent") == "RouterRoute"]
        assert len(found) == 1, f"expected one RouterRoute event, got {found}"
        return found[0]

    @property
    def asterisk_hung_up(self) -> bool:
        """Asterisk sent the BYE (SIPp's message log heads each entry 'UDP message sent/received ...')."""
        return "BYE sip:" in self._received() and "BYE sip:" not in self._sent()

    @property
    def caller_hung_up(self) -> bool:
        return "BYE sip:" in self._sent() and "BYE sip:" not in self._received()

    def _sent(self) -> str:
        return "\n".join(b for b in self._split() if "message sent" in b[:120])

    def _received(self) -> str:
        return "\n".join(b for b in self._split() if "message received" in b[:120])

    def _split(self) -> list[str]:
        return self.messages.split("----------------------------------------------- ")


async def sip_call(
    stack: Stack, tmp_path: Path, caller: str, dtmf: str = "", *, hold_ms: int = 60000, timeout: float = 90.0
) -> SipCall:
    """One SIPp call from ``caller`` typing ``dtmf`` (at most two digits, one per menu level)."""
    assert SIPP is not None and len(dtmf) <= 2
    work = tmp_path / f"sipp-{caller}-{time.monotonic_ns()}"
    work.mkdir()
    csv = work / "callers.csv"
    csv.write_text(f"SEQUENTIAL\n{caller};{dtmf[:1]};{dtmf[1:2]};{hold_ms}\n")
    cmd = [
        SIPP,
        "-sf", str(SCENARIO),
        "-inf", str(csv),
        "-i", "127.0.0.1",
        "-p", str(free_port()),
        "-mp", str(free_port()),
        "-m", "1",
        "-l", "1",
        "-nostdin",
        "-timeout", f"{int(timeout)}s",
        "-timeout_error",
        "-trace_err", "-error_file", str(work / "errors.log"),
        "-trace_msg", "-message_file", str(work / "messages.log"),
        f"127.0.0.1:{stack.ast.sip_port}",
    ]  # fmt: skip
    done = False

    def collect() -> list[dict[str, str]]:
        """AMI events until the SIP channel hangs up (the reader also keeps Asterisk's AMI queue drained)."""
        seen: list[dict[str, str]] = []
        for m in stack.ami.messages(timeout + 5):
            seen.append(m)
            if m.get("Event") == "Hangup" and m.get("Channel", "").startswith("PJSIP/sipp-"):
                break
            if done and m.get("Event") is None:
                break
        return seen

    events_task = asyncio.create_task(asyncio.to_thread(collect))
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=work, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL
    )
    returncode = await proc.wait()
    seconds = time.monotonic() - started
    done = True
    if returncode != 0:  # no Hangup may ever come: nudge the collector out with a reply of our own
        stack.ami.send({"Action": "Ping"})
    events = await events_task

    def read(name: str) -> str:
        p = work / name
        return p.read_text(errors="replace") if p.exists() else ""

    return SipCall(returncode, seconds, read("messages.log"), read("errors.log"), events)


def result_of(stack: Stack) -> CallResult:
    assert len(stack.results) == 1, stack.results
    return stack.results[0]


async def test_sip_caller_with_an_account_is_deflected_by_dtmf(stack: Stack, tmp_path: Path) -> None:
    # 3 (droits) then 1: carte_vitale_commande, a simple motive the 2024 policy deflects for active accounts
    call = await sip_call(stack, tmp_path, "0612345678", "31")
    assert call.returncode == 0, call.errors
    e = call.route
    assert (e["AGIStatus"], e["Done"], e["Action"], e["Motive"]) == ("SUCCESS", "1", "deflect", "carte_vitale_commande")
    assert e["Rule"] == "deflect.simple"
    assert call.asterisk_hung_up  # the dialplan played the message and hung up
    # the RFC 4733 events reached Asterisk as two digits on the caller's channel
    digits = [e.get("Digit") for e in call.events if e.get("Event") == "DTMFEnd" and e.get("Direction") == "Received"]
    assert digits == ["3", "1"]
    r = result_of(stack)
    assert r.caller == PSEUDONYMS.of_e164("+33612345678")  # the From user reached the router
    assert r.decision is not None and r.decision.segment is Segment.ACTIVE
    assert r.motive is not None and (r.motive.motive_id, r.motive.method) == ("carte_vitale_commande", "dtmf")


async def test_sip_caller_without_input_reaches_a_person(stack: Stack, tmp_path: Path) -> None:
    call = await sip_call(stack, tmp_path, "0612345678", "")
    assert call.returncode == 0, call.errors
    e = call.route
    assert (e["AGIStatus"], e["Done"], e["Action"], e["Queue"], e["Rule"]) == (
        "SUCCESS",
        "1",
        "queue",
        "accueil",
        "motive.none",
    )
    # nobody is logged in to accueil: queue-unavailable message, then Asterisk hangs up
    assert call.asterisk_hung_up
    r = result_of(stack)
    assert r.caller == PSEUDONYMS.of_e164("+33612345678")
    assert r.decision is not None and r.decision.segment is Segment.ACTIVE


async def test_unknown_sip_caller_goes_to_the_skill_queue(stack: Stack, tmp_path: Path) -> None:
    # 3 then 4: attestation_droits, deflectable, but this caller has no account: the droits queue
    call = await sip_call(stack, tmp_path, "0699999999", "34")
    assert call.returncode == 0, call.errors
    e = call.route
    assert (e["Done"], e["Action"], e["Queue"], e["Motive"], e["Rule"]) == (
        "1",
        "queue",
        "droits",
        "attestation_droits",
        "queue.skill",
    )
    assert call.asterisk_hung_up
    r = result_of(stack)
    assert r.caller == PSEUDONYMS.of_e164("+33699999999")
    assert r.decision is not None and r.decision.segment is Segment.NO_ACCOUNT
    assert r.decision.action is Action.QUEUE


async def test_sip_caller_hanging_up_during_the_menu(stack: Stack, tmp_path: Path) -> None:
    call = await sip_call(stack, tmp_path, "0612345678", "", hold_ms=500)
    assert call.returncode == 0, call.errors
    assert call.caller_hung_up
    assert not [e for e in call.events if e.get("UserEvent") == "RouterRoute"]  # the dialplan stops at once
    for _ in range(50):
        if stack.results:
            break
        await asyncio.sleep(0.1)
    r = result_of(stack)
    assert r.hung_up and r.decision is None
    assert r.caller == PSEUDONYMS.of_e164("+33612345678")
