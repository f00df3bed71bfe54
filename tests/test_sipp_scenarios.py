"""The SIPp scenarios of ``loadtest/scenarios`` in the real SIPp (Debian ``sip-tester`` 3.6.1), without Asterisk.

* every scenario loads in SIPp (an XML or scenario error is fatal there: exit 255);
* a speaking caller (``caller-speaks.xml``) calls an agent (``agent.xml``, SDP pointed at a socket of this
  test): the call is set up, the agent answers after its ring, and the caller's sentence (µ-law, 20 ms
  packets) and its DTMF digits (RFC 4733, payload type 96) arrive as RTP;
* an agent's phone (``agent-register.xml``) registers with digest authentication against a registrar
  written here (RFC 2617 MD5, as res_pjsip checks it) with the credentials of ``asterisk/pjsip.conf``.

Skipped, with the reason, without sipp on PATH; the DTMF part needs a raw socket (root or CAP_NET_RAW).
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
import socket
import subprocess
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from agi_router.media.g711 import ulaw_encode
from loadtest.dtmf import rfc4733_pcap

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "loadtest" / "scenarios"
SIPP = shutil.which("sipp")
pytestmark = [
    pytest.mark.skipif(SIPP is None, reason="needs SIPp on PATH (Debian package sip-tester)"),
    pytest.mark.timeout(120),
]
ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _load(scenario: Path, folder: Path) -> subprocess.CompletedProcess[str]:
    """Run ``scenario`` for 1 s against a port where nothing answers: SIPp loads it, starts, times out."""
    (folder / "speech.ulaw").write_bytes(b"\xff" * 160)
    rfc4733_pcap("*71", folder / "correct.pcap")  # agent-context.xml's correction code (loadtest/dtmf.py)
    (folder / "callers.csv").write_text("SEQUENTIAL\n0612345678;0;0;;;0\n")
    args = [SIPP, "-sf", str(scenario), "-inf", "callers.csv", "-i", "127.0.0.1", "-p", str(_free_udp_port()),
            "-m", "1", "-timeout", "1s", "-timeout_error", "-nostdin", f"127.0.0.1:{_free_udp_port()}",
            "-key", "ua", "test", "-key", "target", "0033123456789"]  # scanner.xml's -key values  # fmt: skip
    return subprocess.run(args, cwd=folder, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("scenario", sorted(p.name for p in SCENARIOS.glob("*.xml")))
def test_every_scenario_loads_in_sipp(scenario: str, tmp_path: Path) -> None:
    r = _load(SCENARIOS / scenario, tmp_path)
    assert "Unable to load" not in r.stderr and "Unknown" not in r.stderr, r.stderr[-1500:]
    # it ran: loaded, started, stopped at -timeout (or, for scenarios with their own receive timeouts, at one)
    assert " timed out after '" in r.stderr or "receive timeout on message" in r.stderr, r.stderr[-1500:]


def test_a_broken_scenario_is_caught(tmp_path: Path) -> None:
    broken = tmp_path / "broken.xml"
    broken.write_text((SCENARIOS / "agent.xml").read_text().replace('<scenario name="3646 agent">', "<scenario><x/>"))
    r = _load(broken, tmp_path)
    assert "Unknown element 'x'" in r.stderr and "timed out" not in r.stderr


class _RtpSink:
    """Counts RTP packets by payload type, and the RFC 4733 events that end (E bit)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.types: Counter[int] = Counter()
        self.digits: list[int] = []
        self._seen: set[tuple[int, int]] = set()  # (ssrc, timestamp) of events already counted
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(2048)
            except TimeoutError:
                continue
            if len(data) < 12 or data[0] >> 6 != 2:
                continue
            pt = data[1] & 0x7F
            self.types[pt] += 1
            if pt == 96 and len(data) >= 16 and data[13] & 0x80:
                key = (int.from_bytes(data[8:12], "big"), int.from_bytes(data[4:8], "big"))
                if key not in self._seen:  # the end packet is sent three times
                    self._seen.add(key)
                    self.digits.append(data[12])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def _stat(folder: Path, prefix: str) -> dict[str, str]:
    files = folder.glob(f"{prefix}_*_.csv")
    rows = [r for p in files for r in csv.DictReader(p.read_text().splitlines(), delimiter=";")]
    assert rows, f"no {prefix} statistics written"
    return rows[-1]


@pytest.mark.skipif(not ROOT_USER, reason="SIPp sends DTMF (play_dtmf) through a raw socket: needs root")
def test_a_speaking_caller_reaches_an_answering_agent_with_audio_and_dtmf(tmp_path: Path) -> None:
    t = np.arange(8000) / 8000  # one second of a 440 Hz tone: 50 packets of 20 ms
    (tmp_path / "speech.ulaw").write_bytes(ulaw_encode((8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)))
    # number; ms before speaking; ms of speech; digits at the first menu; at the second; ms held at the end
    (tmp_path / "callers.csv").write_text("SEQUENTIAL\n0612345678;200;1500;3;1;1500\n0698765432;200;1500;;;500\n")
    sink = _RtpSink()
    agent_xml = (SCENARIOS / "agent.xml").read_text()
    agent_xml = agent_xml.replace("m=audio [media_port]", f"m=audio {sink.port}")
    agent_xml = agent_xml.replace("c=IN IP[media_ip_type] [media_ip]", "c=IN IP4 127.0.0.1")
    assert str(sink.port) in agent_xml, "agent.xml's SDP changed: update this test"
    (tmp_path / "agent-test.xml").write_text(agent_xml)
    agent_port, caller_port = _free_udp_port(), _free_udp_port()
    try:
        agent = subprocess.Popen(
            [SIPP, "-sf", "agent-test.xml", "-i", "127.0.0.1", "-p", str(agent_port), "-mp", str(_free_udp_port()),
             "-d", "10000", "-m", "2", "-nostdin", "-timeout", "40s", "-trace_stat"],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        caller = subprocess.run(
            [SIPP, "-sf", str(SCENARIOS / "caller-speaks.xml"), "-inf", "callers.csv", "-i", "127.0.0.1", "-p",
             str(caller_port), "-mp", str(_free_udp_port()), "-r", "2", "-m", "2", "-nostdin", "-timeout", "40s",
             "-trace_stat", "-trace_rtt", "-rtt_freq", "1", f"127.0.0.1:{agent_port}"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        agent.wait(30)
    finally:
        sink.close()
    stat = _stat(tmp_path, "caller-speaks")
    assert caller.returncode == 0, caller.stderr[-1500:]
    assert (stat["SuccessfulCall(C)"], stat["FailedCall(C)"]) == ("2", "0")
    # call set-up timed with rtd: the agent rings 2 s before answering
    assert re.fullmatch(r"00:00:0[2-4]:\d+", stat["ResponseTime1(C)"]), stat["ResponseTime1(C)"]
    assert list((tmp_path).glob("caller-speaks_*_rtt.csv")), "no -trace_rtt file"
    assert sink.types[0] == 100, sink.types  # two callers x one second of µ-law
    assert sink.digits == [3, 1], sink.digits  # the first caller's two menu digits, in order; none from the second
    agent_stat = _stat(tmp_path, "agent-test")
    assert agent_stat["SuccessfulCall(C)"] == "2", agent_stat


def _digest_registrar(port_box: list[int], users: dict[str, str], log: list[str], stop: threading.Event) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    port_box.append(int(sock.getsockname()[1]))
    nonce = "5f3a9c"
    while not stop.is_set():
        try:
            data, peer = sock.recvfrom(4096)
        except TimeoutError:
            continue
        text = data.decode()
        head = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in text.split("\r\n")[1:] if ":" in ln)}
        echo = "".join(f"{h}: {head[h.lower()]}\r\n" for h in ("Via", "From", "To", "Call-ID", "CSeq"))
        auth = head.get("authorization", "")
        if not auth:
            status = f'401 Unauthorized\r\nWWW-Authenticate: Digest realm="asterisk",nonce="{nonce}",algorithm=MD5'
        else:
            f = dict(re.findall(r'(\w+)="?([^",]*)"?', auth))
            user = f.get("username", "")
            ha1 = hashlib.md5(f"{user}:asterisk:{users.get(user, '')}".encode()).hexdigest()
            ha2 = hashlib.md5(f"REGISTER:{f.get('uri', '')}".encode()).hexdigest()
            ok = f.get("response") == hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
            log.append(f"{user}:{'ok' if ok else 'bad'}")
            status = "200 OK" if ok else "403 Forbidden"
        sock.sendto(f"SIP/2.0 {status}\r\n{echo}Content-Length: 0\r\n\r\n".encode(), peer)
    sock.close()


def test_an_agent_phone_registers_with_the_credentials_setup_generates(tmp_path: Path) -> None:
    from agi_router.asterisk_setup import setup_asterisk
    from agi_router.config import AMISettings, Settings

    (tmp_path / "etc").mkdir()
    setup_asterisk(Settings(data_dir=tmp_path / "var", ami=AMISettings(secret="x" * 16)), tmp_path / "etc", None)
    conf = (tmp_path / "etc" / "agi-router-pjsip.conf").read_text()
    users = dict(re.findall(r"^username = (agent\d)\s*\npassword = (\S+)", conf, flags=re.M))
    assert set(users) >= {"agent1", "agent2"}, "agents missing from the generated agi-router-pjsip.conf"
    port: list[int] = []
    log: list[str] = []
    stop = threading.Event()
    th = threading.Thread(target=_digest_registrar, args=(port, users, log, stop), daemon=True)
    th.start()
    while not port:
        pass
    try:
        for user, password in [("agent1", users["agent1"]), ("agent2", "wrong-password")]:
            r = subprocess.run(
                [SIPP, "-sf", str(SCENARIOS / "agent-register.xml"), "-s", user, "-au", user, "-ap", password,
                 "-i", "127.0.0.1", "-p", str(_free_udp_port()), "-m", "1", "-nostdin", "-timeout", "10s",
                 f"127.0.0.1:{port[0]}"],
                cwd=tmp_path, capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert (r.returncode == 0) == (password == users["agent1"]), (user, r.returncode, r.stderr[-800:])
    finally:
        stop.set()
        th.join(2)
    assert log == ["agent1:ok", "agent2:bad"]
