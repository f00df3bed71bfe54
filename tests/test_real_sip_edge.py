"""The SIP edge `agi-router asterisk setup` installs, through a real Asterisk 22 (issue #20).

- loopback (the default): the generated accounts register (a wrong password does not), queue members come
  from the accounts; `agi-router asterisk agent add` + reload: the new agent registers and is a member;
- TLS on: Asterisk serves the generated certificate on the TLS transport (checked with openssl s_client),
  every account is SRTP-only, the configuration loads without an error line.
- a brute force of 1,000 REGISTERs (SIPp, its own loopback address) finds nothing, and the real router counts
  Asterisk's security events (agi_router_sip_security_events_total, which AgiRouterSipAttack watches).
(A real softphone over TLS + SRTP: tests/test_real_softphone.py; the banning edge: tests/test_real_edge.py.)

Needs AGI_ROUTER_ASTERISK=/path/to/asterisk and SIPp; skipped (visibly) otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agi_router.config import SipSettings
from tests.asterisk_harness import AsteriskInstance, free_port, sip_password, start, write_config
from tests.test_real_callers_path import Shipped, _ship, _wait_ready

BINARY = os.environ.get("AGI_ROUTER_ASTERISK", "")
ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "loadtest" / "scenarios"
pytestmark = [
    pytest.mark.asterisk,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not BINARY, reason="needs a real Asterisk 22: set AGI_ROUTER_ASTERISK=/path/to/asterisk"),
    pytest.mark.skipif(shutil.which("sipp") is None, reason="needs SIPp on PATH (Debian package sip-tester)"),
]


def _register(ast: AsteriskInstance, user: str, password: str, cwd: Path) -> bool:
    r = subprocess.run(
        ["sipp", "-sf", str(SCENARIOS / "agent-register.xml"), "-s", user, "-au", user, "-ap", password,
         "-i", "127.0.0.1", "-p", str(free_port()), "-m", "1", "-nostdin", "-timeout", "8s",
         f"127.0.0.1:{ast.sip_port}"],
        cwd=cwd, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return r.returncode == 0


def _members(ast: AsteriskInstance, queue: str) -> set[str]:
    return set(re.findall(r"\(PJSIP/(\w+)\)", ast.cli(f"queue show {queue}")))


def test_generated_accounts_register_and_an_added_agent_joins_its_queues(tmp_path: Path) -> None:
    var = tmp_path / "var"
    ast = write_config(Path(BINARY), tmp_path / "ast", agi_url="agi://127.0.0.1:1/3646", ami_port=free_port(),
                       sip_port=free_port(), router_data_dir=var)  # fmt: skip
    etc = ast.root / "etc"
    start(ast)
    try:
        assert _members(ast, "accueil") == {"agent1", "agent2", "agent3"}
        assert _members(ast, "risques_pro") == {"agent3"}
        assert _register(ast, "agent1", sip_password(etc, "agent1"), tmp_path)
        assert not _register(ast, "agent2", "change-me-agent2", tmp_path)  # the old shipped password is gone
        assert not _register(ast, "agent2", sip_password(etc, "agent1"), tmp_path)  # nor another agent's
        assert "agent1/sip:" in ast.cli("pjsip show contacts")
        cfg = tmp_path / "router.toml"
        cfg.write_text(f'data_dir = "{var}"\n')
        r = subprocess.run(
            [sys.executable, "-m", "agi_router", "asterisk", "agent", "add", "agent4", "--queue", "droits",
             "--queue", "accueil:5", "--etc", str(etc)],
            env={**os.environ, "AGI_ROUTER_CONFIG": str(cfg)}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        password = re.search(r"agent agent4: password (\S+)", r.stdout).group(1)  # type: ignore[union-attr]
        ast.cli("module reload res_pjsip.so")
        ast.cli("queue reload members")
        deadline = time.monotonic() + 10
        while "agent4" not in _members(ast, "droits") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _members(ast, "droits") == {"agent2", "agent3", "agent4"}
        assert _register(ast, "agent4", password, tmp_path)
        assert not _register(ast, "agent4", password[:-1] + ("x" if password[-1] != "x" else "y"), tmp_path)
    finally:
        ast.stop()


def test_tls_transport_serves_the_generated_certificate_and_accounts_are_srtp_only(tmp_path: Path) -> None:
    tls_port = free_port()
    var = tmp_path / "var"
    ast = write_config(Path(BINARY), tmp_path / "ast", agi_url="agi://127.0.0.1:1/3646", ami_port=free_port(),
                       sip_port=free_port(), router_data_dir=var,
                       sip=SipSettings(tls="on", tls_port=tls_port))  # fmt: skip
    start(ast)
    try:
        transports = ast.cli("pjsip show transports")
        assert re.search(rf"transport-tls\s+tls\s+\S+\s+\S+\s+127\.0\.0\.1:{tls_port}", transports), transports
        for name in ("agent1", "softphone"):
            shown = ast.cli(f"pjsip show endpoint {name}")
            assert re.search(r"media_encryption\s+:\s+sdes", shown), shown[-2000:]
            assert re.search(r"transport\s+:\s+transport-tls", shown)
        s_client = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{tls_port}", "-servername", "localhost"],
            input="", capture_output=True, text=True, timeout=20,
        )
        served = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", s_client.stdout, re.S)
        assert served, s_client.stdout[-1500:] + s_client.stderr[-500:]
        assert served.group(0).strip() == (var / "sip" / "tls" / "cert.pem").read_text().strip()
        assert re.search(r"Protocol\s*:\s*TLSv1\.2", s_client.stdout), s_client.stdout[-800:]
    finally:
        ast.stop()
    bad = [
        ln for ln in ast.log.read_text().splitlines()
        if re.search(r"\] (ERROR|WARNING)\[\d+\] (res_pjsip/|res_pjsip\.c|res_srtp|res_pjsip_sdp_rtp)", ln)
        or ("agi-router-" in ln and re.search(r"\] (ERROR|WARNING)", ln))
    ]  # fmt: skip
    assert not bad, "\n".join(bad)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory, whisper_dir: Path) -> Iterator[Shipped]:
    yield from _ship(tmp_path_factory.mktemp("sip-edge"), whisper_dir, rtp=32600)


def _security_events(s: Shipped) -> dict[str, float]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{s.metrics_port}/metrics", timeout=3) as r:
        text = r.read().decode()
    pattern = r'^agi_router_sip_security_events_total\{event="(\w+)",service="(\w+)"\} (\S+)$'
    return {f"{m.group(1)}/{m.group(2)}": float(m.group(3)) for m in re.finditer(pattern, text, re.M)}


def test_a_brute_force_finds_nothing_and_the_router_counts_it(shipped: Shipped, tmp_path: Path) -> None:
    _wait_ready(shipped)
    etc = shipped.ast.root / "etc"
    before = _security_events(shipped)
    t0 = time.monotonic()
    r = subprocess.run(
        ["sipp", "-sf", str(SCENARIOS / "brute-force-register.xml"), "-s", "agent1", "-au", "agent1", "-ap",
         "change-me-agent1", "-m", "1000",
         "-r", "200", "-l", "200", "-i", "127.0.0.2", "-p", str(free_port()), "-nostdin", "-timeout", "60s",
         "-trace_stat", "-stf", str(tmp_path / "stat.csv"), f"127.0.0.1:{shipped.ast.sip_port}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    took = time.monotonic() - t0
    # every guess refused: no 200 OK (it would fail the scenario), none lost
    assert r.returncode == 0, r.stdout[-1500:] + r.stderr[-800:]
    stat = (tmp_path / "stat.csv").read_text().splitlines()
    head, last = stat[0].split(";"), stat[-1].split(";")
    assert last[head.index("SuccessfulCall(C)")] == "1000" and last[head.index("FailedCall(C)")] == "0"
    deadline = time.monotonic() + 10
    counted = 0.0
    while counted < 1000:
        assert time.monotonic() < deadline, (counted, _security_events(shipped))
        time.sleep(0.2)
        counted = _security_events(shipped).get("failed_auth/pjsip", 0) - before.get("failed_auth/pjsip", 0)
    print(f"1000 guesses in {took:.1f} s, all refused; the router counted {counted:.0f} failed authentications")
    # the real agent is not locked out (Asterisk has no ban; the edge bans, by source address)
    assert _register(shipped.ast, "agent1", sip_password(etc, "agent1"), tmp_path)
