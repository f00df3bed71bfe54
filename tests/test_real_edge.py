"""The Kamailio SIP edge (edge/kamailio.cfg, issue #20 item 3) in front of a real Asterisk 22.

Kamailio listens on 127.0.0.1:<free port> and relays to Asterisk on 127.0.0.1:<another>; SIPp plays the
internet from distinct loopback addresses (127.0.0.2 scanner, 127.0.0.3 legitimate callers, 127.0.0.4 a
password guesser, 127.0.0.8 an agent). Asterisk runs the project's configuration (tests/asterisk_harness.py)
with two test-only additions in its temporary copy: calls to 3646 from callers are answered by a plain
context (no router), and an agent "agent9" with a known password and ``support_path = yes``.

Skipped, with the reason, without AGI_ROUTER_ASTERISK, ``kamailio`` (Debian package kamailio) or ``sipp``
(sip-tester) on PATH. No root needed (no media, no raw sockets; 127.0.0.x are ordinary loopback addresses).
Every Kamailio and SIPp runs in its own process group; at the end every group is checked empty and
Asterisk stopped.

    AGI_ROUTER_ASTERISK=/opt/ast22/sbin/asterisk .venv/bin/python -m pytest -m asterisk tests/test_real_edge.py
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from tests.asterisk_harness import AMI, ROOT, AsteriskInstance, free_port, start, write_config

BINARY = os.environ.get("AGI_ROUTER_ASTERISK", "")
KAMAILIO = shutil.which("kamailio")
SIPP = shutil.which("sipp")
EDGE_CFG = ROOT / "edge" / "kamailio.cfg"
SCENARIOS = ROOT / "loadtest" / "scenarios"
pytestmark = [
    pytest.mark.asterisk,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not BINARY, reason="needs a real Asterisk 22: set AGI_ROUTER_ASTERISK=/path/to/asterisk"),
    pytest.mark.skipif(KAMAILIO is None, reason="needs kamailio on PATH (Debian package kamailio)"),
    pytest.mark.skipif(SIPP is None, reason="needs SIPp on PATH (Debian package sip-tester)"),
]

HOTLINE = "3646"
AGENT = "agent9"  # matches the edge's default AUTH_USERS_RE; not an endpoint of the shipped pjsip.conf
SCANNER_IP, CALLER_IP, GUESSER_IP, AGENT_IP = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.8"

# appended to the installed (temporary) pjsip.conf: self-contained, so it does not depend on the shipped
# templates or passwords
TEST_PJSIP = """
; --- appended by tests/test_real_edge.py: an agent that registers through the edge (Path) ---
[{agent}]
type = endpoint
context = agents
disallow = all
allow = ulaw
direct_media = no
rtp_symmetric = yes
force_rport = yes
rewrite_contact = no
auth = {agent}-auth
aors = {agent}
[{agent}-auth]
type = auth
auth_type = userpass
username = {agent}
password = {password}
[{agent}]
type = aor
max_contacts = 1
remove_existing = yes
qualify_frequency = 30
support_path = yes
"""
# callers' 3646 answered without the router: the edge is under test, not the routing
SHIPPED_3646 = "exten => 3646,1,Goto(hotline,3646,1)"
TEST_DIALPLAN = """
; --- appended by tests/test_real_edge.py ---
[edge-test]
exten => 3646,1,Answer()
 same => n,Wait(120)
 same => n,Hangup()
"""


# every process group started here (Kamailio, SIPp): checked empty when the module's Asterisk stops
STARTED_GROUPS: list[int] = []


# --- process groups -------------------------------------------------------------------------------


def group_pids(pgid: int) -> list[int]:
    """Live processes of process group ``pgid`` (zombies excluded)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(d.name))
    return out


def group_cpu_seconds(pgid: int) -> float:
    """utime + stime of the live processes of a group (/proc/<pid>/stat), in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in group_pids(pgid):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / tick


def stop_group(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the process group of ``proc`` (started with start_new_session), SIGKILL what is left."""
    pgid = proc.pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            proc.poll()
            if not group_pids(pgid):
                break
            time.sleep(0.05)
        else:
            continue
        break
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


# --- Asterisk -------------------------------------------------------------------------------------


@dataclass
class Pbx:
    ast: AsteriskInstance
    ami: AMI
    agent_password: str


def start_pbx(root: Path) -> Pbx:
    binary = Path(BINARY)
    if not binary.exists():
        pytest.fail(f"AGI_ROUTER_ASTERISK={BINARY} does not exist")
    # no router: an AGI address nobody listens on (the edge test's calls never reach the hotline context)
    ast = write_config(binary, root, agi_url=f"agi://127.0.0.1:{free_port()}/3646", ami_port=free_port(),
                       sip_port=free_port())  # fmt: skip
    etc = root / "etc"
    ext = (etc / "extensions.conf").read_text()
    assert SHIPPED_3646 in ext, "asterisk/extensions.conf's [from-callers] 3646 entry changed: update the edge test"
    (etc / "extensions.conf").write_text(ext.replace(SHIPPED_3646, "exten => 3646,1,Goto(edge-test,3646,1)")
                                         + TEST_DIALPLAN)  # fmt: skip
    password = "edge-" + secrets.token_hex(8)
    with (etc / "pjsip.conf").open("a") as f:
        f.write(TEST_PJSIP.format(agent=AGENT, password=password))
    start(ast)
    return Pbx(ast, AMI(ast.ami_port), password)


# --- Kamailio -------------------------------------------------------------------------------------


@dataclass
class Edge:
    proc: subprocess.Popen[bytes]
    port: int
    run: Path
    lines: list[tuple[float, str]] = field(default_factory=list)  # (time.monotonic(), stderr line)
    reader: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ctl(self) -> str:
        return f"unix:{self.run / 'ctl'}"

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.lines.append((time.monotonic(), raw.decode(errors="replace").rstrip()))

    def bans(self) -> list[tuple[float, str, str]]:
        """(when, ip, reason) of every EDGE-BAN log line so far."""
        out = []
        for t, line in list(self.lines):
            m = re.search(r"EDGE-BAN ip=(\S+) reason=(\S+)", line)
            if m:
                out.append((t, m[1], m[2]))
        return out

    def wait_ban(self, ip: str, timeout: float) -> tuple[float, str] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, who, reason in self.bans():
                if who == ip:
                    return t, reason
            time.sleep(0.02)
        return None

    def stats(self) -> dict[str, int]:
        """Kamailio's counters (kamcmd stats.get_statistics all): {"core:rcv_requests": n, ...}."""
        out = subprocess.run(["kamcmd", "-s", self.ctl, "stats.get_statistics", "all"], capture_output=True,
                             text=True, timeout=10, check=True).stdout  # fmt: skip
        return {m[1]: int(m[2]) for m in re.finditer(r"([\w.:-]+) = (\d+)", out)}

    def cpu_seconds(self) -> float:
        return group_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        stop_group(self.proc)
        if self.reader is not None:
            self.reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        (self.run / "kamailio.log").write_text("\n".join(f"{t:.3f} {line}" for t, line in self.lines) + "\n")
        assert not group_pids(self.proc.pid), "a kamailio process survived"


def start_edge(root: Path, asterisk_port: int, **defines: object) -> Edge:
    assert KAMAILIO is not None
    run = root / f"kamailio-{time.monotonic_ns()}"
    run.mkdir(parents=True)
    port = free_port()
    args = [KAMAILIO, "-DD", "-E", "-f", str(EDGE_CFG), "-Y", str(run), "-P", str(run / "kamailio.pid"),
            "-m", "64", "-M", "8",
            "-A", f"LISTEN=udp:127.0.0.1:{port}", "-A", f'ASTERISK="127.0.0.1:{asterisk_port}"',
            "-A", f'CTL_SOCKET="unix:{run / "ctl"}"']  # fmt: skip
    if os.environ.get("EDGE_TEST_LOG_LEVEL"):  # e.g. 3: Kamailio's debug log in the test's output
        defines.setdefault("LOG_LEVEL", os.environ["EDGE_TEST_LOG_LEVEL"])
    for k, v in defines.items():
        args += ["-A", f"{k}={v}"]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    STARTED_GROUPS.append(proc.pid)
    edge = Edge(proc, port, run)
    edge.reader = threading.Thread(target=edge._read, daemon=True)
    edge.reader.start()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            time.sleep(0.2)
            raise RuntimeError("kamailio exited:\n" + "\n".join(line for _, line in edge.lines[-30:]))
        if options(("127.0.0.1", port), "127.0.0.254", timeout=0.3) == 200:
            return edge
    edge.stop()
    raise RuntimeError("kamailio did not answer OPTIONS in time")


def options_message(dest: tuple[str, int], source_ip: str, port: int, tag: str, ua: str) -> str:
    return (
        f"OPTIONS sip:{dest[0]}:{dest[1]} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {source_ip}:{port};rport;branch=z9hG4bK{tag}\r\n"
        f"From: <sip:probe@{source_ip}>;tag={tag}\r\nTo: <sip:{dest[0]}:{dest[1]}>\r\n"
        f"Call-ID: {tag}@{source_ip}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nUser-Agent: {ua}\r\n"
        "Content-Length: 0\r\n\r\n"
    )


def options(dest: tuple[str, int], source_ip: str, ua: str = "edge-test probe", timeout: float = 1.0) -> int | None:
    """One OPTIONS from ``source_ip``: the reply's status code, None without a reply."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source_ip, 0))
        s.settimeout(timeout)
        port = s.getsockname()[1]
        msg = options_message(dest, source_ip, port, secrets.token_hex(4), ua)
        s.sendto(msg.encode(), dest)
        try:
            data = s.recv(65536)
        except TimeoutError:
            return None
        return int(data.split(b" ", 2)[1])


# --- SIPp -----------------------------------------------------------------------------------------


@dataclass
class Sipp:
    proc: subprocess.Popen[bytes]
    work: Path
    started: float

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            stop_group(self.proc)

    def stop(self) -> None:
        stop_group(self.proc)

    def messages(self) -> list[tuple[float, str, str]]:
        """(unix time, "sent"|"received", first line) of each message in -trace_msg's log."""
        out = []
        for log in self.work.glob("*_messages.log"):
            text = log.read_text(errors="replace")
            for block in text.split("----------------------------------------------- ")[1:]:
                head, _, rest = block.partition("\n")
                kind = "sent" if "message sent" in rest[:80] else "received"
                body = rest.split("\n\n", 1)[1] if "\n\n" in rest else ""
                try:
                    when = datetime.strptime(head.strip(), "%Y-%m-%d %H:%M:%S.%f").timestamp()
                except ValueError:
                    when = 0.0
                out.append((when, kind, body.strip().split("\n", 1)[0].strip()))
        return out

    def setup_times_ms(self) -> list[float]:
        """INVITE sent -> its 200 OK received, per call (from -trace_msg's log, microsecond timestamps)."""
        invites: dict[str, float] = {}
        answers: dict[str, float] = {}
        for log in self.work.glob("*_messages.log"):
            for block in log.read_text(errors="replace").split("----------------------------------------------- ")[1:]:
                head, _, rest = block.partition("\n")
                call_id = re.search(r"^Call-ID: *(\S+)", rest, re.M)
                if not call_id or not re.search(r"^CSeq: *\d+ INVITE", rest, re.M):
                    continue
                when = datetime.strptime(head.strip(), "%Y-%m-%d %H:%M:%S.%f").timestamp()
                if "message sent" in rest[:80] and "\nINVITE " in rest:
                    invites.setdefault(call_id[1], when)
                elif "message received" in rest[:80] and "\nSIP/2.0 200 " in rest:
                    answers.setdefault(call_id[1], when)
        return [(answers[c] - invites[c]) * 1000 for c in answers if c in invites]

    def final_stats(self) -> dict[str, str]:
        """The last row of -trace_stat's CSV (cumulative counters: SuccessfulCall(C), FailedCall(C), ...)."""
        for f in self.work.glob("*_.csv"):
            rows = [r for r in f.read_text(errors="replace").splitlines() if r.strip()]
            if len(rows) >= 2:
                return dict(zip(rows[0].split(";"), rows[-1].split(";"), strict=False))
        return {}

    def rtts_ms(self) -> list[float]:
        """Per-call INVITE -> 200 set-up times (-trace_rtt), ms."""
        out = []
        for f in self.work.glob("*_rtt.csv"):
            for row in f.read_text(errors="replace").splitlines()[1:]:
                parts = row.split(";")
                if len(parts) >= 2:
                    try:
                        out.append(float(parts[1]))
                    except ValueError:
                        pass
        return out


def sipp(scenario: Path, target: str, ip: str, work: Path, *args: str, port: int = 0) -> Sipp:
    assert SIPP is not None
    work.mkdir(parents=True, exist_ok=True)
    cmd = [SIPP, "-sf", str(scenario), "-i", ip, "-p", str(port or free_port()), "-mp", str(free_port()), "-nostdin",
           "-trace_err", *args, *([target] if target else [])]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    STARTED_GROUPS.append(proc.pid)
    return Sipp(proc, work, time.monotonic())


def legit_callers(edge_or_ast: str, work: Path, calls: int, rate: float, ip: str = CALLER_IP) -> Sipp:
    return sipp(SCENARIOS / "caller-no-media.xml", edge_or_ast, ip, work, "-r", str(rate), "-m", str(calls),
                "-l", "200", "-d", "1000", "-timeout", "120s", "-trace_stat", "-fd", "1", "-trace_msg")  # fmt: skip


def options_flood(dest: tuple[str, int], source_ip: str, rate: float, seconds: float) -> int:
    """Plain OPTIONS at ``rate``/s from ``source_ip`` (no scanner signature: only pike can stop it); the
    number of replies received."""
    replies = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source_ip, 0))
        s.setblocking(False)
        port = s.getsockname()[1]
        start_t = time.monotonic()
        n = 0
        while (now := time.monotonic()) < start_t + seconds:
            while n < (now - start_t) * rate:
                msg = options_message(dest, source_ip, port, f"{n}x{secrets.token_hex(3)}", "Linphone/5.2")
                s.sendto(msg.encode(), dest)
                n += 1
            try:
                while s.recv(65536):
                    replies += 1
            except BlockingIOError:
                pass
            time.sleep(0.002)
    return replies


def scanner(target: str, work: Path, calls: int, rate: float, ua: str = "Asterisk PBX 18.2.0", ip: str = SCANNER_IP,
            trace: bool = True) -> Sipp:  # fmt: skip
    """The scanner scenario: 3 requests per call (OPTIONS, REGISTER with made-up credentials, INVITE 0033...)."""
    extra = ["-trace_msg"] if trace else []
    return sipp(SCENARIOS / "scanner.xml", target, ip, work, "-nr", "-s", "agent1", "-key", "target", "0033123456789",
                "-key", "ua", ua, "-r", str(rate), "-m", str(calls), "-l", "2000", "-timeout", "60s",
                "-trace_stat", "-fd", "1", *extra)  # fmt: skip


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pbx]:
    p = start_pbx(tmp_path_factory.mktemp("edge-asterisk"))
    assert p.ast.proc is not None
    ast_pid = p.ast.proc.pid
    try:
        yield p
    finally:
        p.ami.close()
        p.ast.stop()
    assert p.ast.proc is None and not Path(f"/proc/{ast_pid}").exists(), "asterisk survived"
    survivors = {pgid: group_pids(pgid) for pgid in STARTED_GROUPS if group_pids(pgid)}
    assert not survivors, f"kamailio/sipp processes survived: {survivors}"


@pytest.fixture
def edge_factory(pbx: Pbx, tmp_path: Path) -> Iterator[list[Edge]]:
    edges: list[Edge] = []
    yield edges
    for e in edges:
        e.stop()


def new_edge(edges: list[Edge], pbx: Pbx, root: Path, **defines: object) -> Edge:
    e = start_edge(root, pbx.ast.sip_port, **defines)
    edges.append(e)
    return e


# --- tests ----------------------------------------------------------------------------------------


def test_scanner_flood_is_banned_while_callers_get_through(pbx: Pbx, edge_factory: list[Edge], tmp_path: Path) -> None:
    edge = new_edge(edge_factory, pbx, tmp_path)
    callers = legit_callers(edge.address, tmp_path / "callers", calls=100, rate=4)
    procs = [callers]
    try:
        time.sleep(3)
        # ~200 requests/s: 67 "calls" of OPTIONS + REGISTER (wrong credentials) + INVITE to a non-hotline number
        flood = scanner(edge.address, tmp_path / "scanner", calls=670, rate=67)
        procs.append(flood)
        ban = edge.wait_ban(SCANNER_IP, timeout=10)
        assert ban is not None, "the scanner was not banned within 10 s"
        time_to_ban = ban[0] - flood.started
        # banned: silence for the scanner's address, service for everybody else
        assert options(("127.0.0.1", edge.port), SCANNER_IP) is None
        assert options(("127.0.0.1", edge.port), "127.0.0.5") == 200
        flood.wait(60)
        callers.wait(120)  # (its exit status counts the calls that failed: the verdict is below)
    finally:
        for p in procs:
            p.stop()
    stats = callers.final_stats()
    ok, failed = int(stats.get("SuccessfulCall(C)", 0)), int(stats.get("FailedCall(C)", 0))
    msgs = flood.messages()
    sent = sorted(m[0] for m in msgs if m[1] == "sent")
    replies = sorted(m[0] for m in msgs if m[1] == "received")
    setup = sorted(callers.setup_times_ms())
    print(f"\ntime to ban {time_to_ban:.2f} s (reason {ban[1]}); legit calls {ok} ok / {failed} failed, set-up "
          f"median {setup[len(setup) // 2]:.1f} ms; scanner: {len(sent)} requests, {len(replies)} replies")  # fmt: skip
    assert time_to_ban < 5.0, time_to_ban
    assert ok + failed == 100 and ok >= 99, stats
    # it went on flooding, in vain: no reply later than the ban (+ replies already on their way)
    assert len(sent) > 1500, len(sent)
    assert replies and replies[-1] < sent[0] + time_to_ban + 0.5, (replies[-1], sent[0], time_to_ban)


def test_options_flood_is_banned_by_pike(pbx: Pbx, edge_factory: list[Edge], tmp_path: Path) -> None:
    edge = new_edge(edge_factory, pbx, tmp_path)
    started = time.monotonic()
    replies = options_flood(("127.0.0.1", edge.port), "127.0.0.10", rate=200, seconds=3)
    ban = edge.wait_ban("127.0.0.10", timeout=1)
    assert ban is not None and ban[1] == "pike", edge.bans()
    print(f"\npike: banned after {ban[0] - started:.2f} s, {replies} replies to 600 OPTIONS")
    assert ban[0] - started < 3.0
    assert replies < 200
    assert options(("127.0.0.1", edge.port), "127.0.0.10") is None
    assert options(("127.0.0.1", edge.port), "127.0.0.11") == 200


def test_register_brute_force_finds_nothing_and_is_banned(pbx: Pbx, edge_factory: list[Edge], tmp_path: Path) -> None:
    # pike and the REGISTER rate limit out of the way: the failed-authentication counter alone must ban
    edge = new_edge(edge_factory, pbx, tmp_path, PIKE_DENSITY=100000, REGISTER_LIMIT=100000, AUTH_FAIL_MAX=10)
    brute = sipp(SCENARIOS / "brute-force-register.xml", edge.address, GUESSER_IP, tmp_path / "brute", "-nr",
                 "-s", "agent1", "-au", "agent1", "-ap", "guess-" + secrets.token_hex(6), "-r", "100", "-m", "1000",
                 "-l", "200", "-timeout", "90s", "-trace_msg", "-trace_stat", "-fd", "1")  # fmt: skip
    try:
        brute.wait(120)
    finally:
        brute.stop()
    msgs = brute.messages()
    sent_registers = [m for m in msgs if m[1] == "sent" and m[2].startswith("REGISTER")]
    statuses = [m[2] for m in msgs if m[1] == "received"]
    ban = edge.wait_ban(GUESSER_IP, timeout=1)
    print(f"{len(sent_registers)} REGISTERs sent, replies {len(statuses)}, ban {ban}")
    assert len(sent_registers) >= 1000
    assert not any(" 200 " in s + " " for s in statuses), "a guess got 200 OK"
    assert ban is not None and ban[1] == "authfail", edge.bans()
    # one reply per REGISTER until the ban (a challenge, then the failure): ~2 x AUTH_FAIL_MAX, in flight excepted
    assert len(statuses) <= 2 * 10 + 20, len(statuses)
    assert options(("127.0.0.1", edge.port), GUESSER_IP) is None


@pytest.mark.parametrize("ua", ["friendly-scanner", "sipvicious", "sipcli/v1.8", "VaxSIPUserAgent/3.1", "iWar",
                                "sipsak 0.9.6", "SIVuS", "sip-scan"])  # fmt: skip
def test_scanner_user_agent_is_dropped(pbx: Pbx, edge_factory: list[Edge], tmp_path: Path, ua: str) -> None:
    edge = new_edge(edge_factory, pbx, tmp_path)
    dest = ("127.0.0.1", edge.port)
    assert options(dest, "127.0.0.6", ua=ua) is None
    ban = edge.wait_ban("127.0.0.6", timeout=2)
    assert ban is not None and ban[1] == "ua"
    assert options(dest, "127.0.0.6") is None  # banned: even a plain User-Agent now gets nothing
    assert options(dest, "127.0.0.7") == 200
    # the SIPp scanner with that User-Agent: no reply at all, to any of its requests
    s = scanner(edge.address, tmp_path / "sipp", calls=5, rate=10, ua=ua, ip="127.0.0.9")
    s.wait(30)
    assert [m for m in s.messages() if m[1] == "received"] == []
    assert [m for m in s.messages() if m[1] == "sent"]


def test_agent_registers_through_the_edge_and_is_called_back_through_it(
    pbx: Pbx, edge_factory: list[Edge], tmp_path: Path
) -> None:
    edge = new_edge(edge_factory, pbx, tmp_path)
    port = free_port()
    work = tmp_path / "agent"
    work.mkdir()
    reg = subprocess.run(
        [str(SIPP), "-sf", str(SCENARIOS / "agent-register.xml"), "-s", AGENT, "-au", AGENT, "-ap", pbx.agent_password,
         "-i", AGENT_IP, "-p", str(port), "-m", "1", "-nostdin", "-timeout", "10s", "-trace_msg", edge.address],
        cwd=work, capture_output=True, text=True, timeout=30, start_new_session=True,
    )  # fmt: skip
    assert reg.returncode == 0, (reg.stderr[-800:], "\n".join(line for _, line in edge.lines[-20:]))
    contacts = pbx.ast.cli(f"pjsip show aor {AGENT}")
    assert f"sip:{AGENT}@" in contacts, contacts
    # the contact was stored with the edge's Path (Asterisk reaches the agent only through the edge)
    db = pbx.ast.cli("database show registrar/contact")
    assert f"127.0.0.1:{edge.port};lr;received=sip:{AGENT_IP}:{port}" in db, db
    # the agent's phone (loadtest's UAS) on the same address, then Asterisk calls it
    uas = sipp(SCENARIOS / "agent.xml", "", AGENT_IP, work / "uas", "-d", "500", "-trace_msg", port=port)
    try:
        time.sleep(0.5)
        pbx.ami.send({"Action": "Originate", "Channel": f"PJSIP/{AGENT}", "Application": "Wait", "Data": "1",
                      "Async": "true", "Timeout": "15000", "ActionID": "edge-originate"})  # fmt: skip
        resp = pbx.ami.wait(lambda m: m.get("Event") == "OriginateResponse", 30)
        assert resp.get("Response") == "Success", resp
        # the agent hangs up after -d 500 ms: its BYE follows the edge's Record-Route back to Asterisk
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            got = [m for m in uas.messages() if m[1] == "received" and m[2].startswith("SIP/2.0 200")]
            if got:
                break
            time.sleep(0.2)
    finally:
        uas.stop()
    log = "".join(p.read_text(errors="replace") for p in (work / "uas").glob("*_messages.log"))
    invite = next(b for b in log.split("----------------------------------------------- ") if "\nINVITE sip:" in b)
    assert f"Via: SIP/2.0/UDP 127.0.0.1:{edge.port}" in invite, invite  # came through the edge
    assert f"Record-Route: <sip:127.0.0.1:{edge.port};lr>" in invite, invite
    sent = [m[2] for m in uas.messages() if m[1] == "sent"]
    assert any(s.startswith("BYE") for s in sent), sent
    assert [m for m in uas.messages() if m[1] == "received" and m[2].startswith("SIP/2.0 200")], "no 200 to the BYE"
