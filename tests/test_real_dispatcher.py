"""The national line on two PBX nodes (issue #22): the Kamailio dispatcher (edge/dispatcher.cfg) in front of two
real Asterisk 22 nodes, one ``agi-router serve`` per node (each with its own AMI to its own node, its own AMI
secret and router list from ``asterisk setup``), one shared redis-server (caller memory, callbacks), the shipped
2024 policy with opening hours off.

* 100 SIPp calls at 5 calls/s to the dispatcher are spread over both nodes, every one answered and routed by
  a router (the ``RouterRoute`` user event of each node's dialplan, ``Done: 1``);
* the 2024 repeat rules across nodes: two router-ended calls of one caller on node A, the third on node B gets
  the priority agent (node choice forced with ``kamcmd dispatcher.set_state``);
* an agent registers through the dispatcher on its home node (AGENT_HOMES), not on the other;
* node A's Asterisk is killed (SIGKILL) in the middle of a 100-call burst: the dispatcher's detection is timed
  (its DS-DOWN / DS-TIMEOUT log line), every call placed after detection succeeds, the calls lost are only
  calls placed before it; node A restarted is re-admitted (DS-UP) and receives calls again.

Calls carry their motive in an ``X-Motive-Hint`` header, copied to MOTIVE_HINT by a test-only line in each
node's temporary dialplan (no speech needed, live audio off so routers start in seconds). The rig (``National``)
is reused by benchmarks/bench_dispatcher.py. Skipped, with the reason, without AGI_ROUTER_ASTERISK, kamailio,
sipp or redis-server. Every process started here is stopped and checked gone.

    AGI_ROUTER_ASTERISK=/opt/ast22/sbin/asterisk .venv/bin/python -m pytest -m asterisk tests/test_real_dispatcher.py
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from agi_router.policy.config import default_policy_path
from tests.asterisk_harness import (
    AMI,
    ROOT,
    AsteriskInstance,
    free_port,
    router_healthy,
    sip_password,
    start,
    stop_router,
    write_config,
)
from tests.test_real_edge import Edge, Sipp, group_pids, options, sipp

BINARY = os.environ.get("AGI_ROUTER_ASTERISK", "")
KAMAILIO = shutil.which("kamailio")
SIPP = shutil.which("sipp")
REDIS = shutil.which("redis-server")
DS_CFG = ROOT / "edge" / "dispatcher.cfg"
CALLER_XML = ROOT / "tests" / "fixtures" / "sipp" / "dispatcher-caller.xml"
REGISTER_XML = ROOT / "loadtest" / "scenarios" / "agent-register.xml"
pytestmark = [
    pytest.mark.asterisk,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not BINARY, reason="needs a real Asterisk 22: set AGI_ROUTER_ASTERISK=/path/to/asterisk"),
    pytest.mark.skipif(KAMAILIO is None, reason="needs kamailio on PATH (Debian package kamailio)"),
    pytest.mark.skipif(SIPP is None, reason="needs SIPp on PATH (Debian package sip-tester)"),
    pytest.mark.skipif(REDIS is None, reason="needs redis-server on PATH"),
]

CALLER_IP = "127.0.0.3"  # the callers (the dispatcher trusts only the nodes' own addresses)
AGENT_IP = "127.0.0.8"
ACTIVE = "0611000001"  # an active online account, in both routers' directory
SIMPLE = "releve_remboursements"  # a simple motive: deflected for active account holders
MOTIVE = "carte_vitale_perdue"
PSEUDONYM_KEY = "shared-key-of-this-deployment-0123456789"
SHIPPED_3646 = "exten => 3646,1,Goto(hotline,3646,1)"
HINTED_3646 = (
    "exten => 3646,1,Set(MOTIVE_HINT=${PJSIP_HEADER(read,X-Motive-Hint)})  ; test only: the caller's motive\n"
    " same => n,Goto(hotline,3646,1)"
)
HOME_OF_AGENT1 = 1  # agent1 is homed on node B (index 1)


# --- AMI events, read in the background ---------------------------------------------------------


class Events:
    """Every AMI message of one node's connection, read by a thread until the socket closes."""

    def __init__(self, ami: AMI) -> None:
        self.ami = ami
        self.items: list[tuple[float, dict[str, str]]] = []  # (time.monotonic(), message)
        self.closed = False
        ami.sock.settimeout(0.5)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        buf = self.ami.buf
        while not self.closed:
            try:
                data = self.ami.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            buf += data
            while b"\r\n\r\n" in buf:
                raw, buf = buf.split(b"\r\n\r\n", 1)
                msg: dict[str, str] = {}
                for line in raw.decode(errors="replace").split("\r\n"):
                    k, _, v = line.partition(": ")
                    msg.setdefault(k, v)
                self.items.append((time.monotonic(), msg))
        self.closed = True

    def routes(self, since: float = 0.0) -> list[dict[str, str]]:
        return [m for t, m in list(self.items) if t >= since and m.get("UserEvent") == "RouterRoute"]

    def close(self) -> None:
        self.closed = True
        try:
            self.ami.sock.close()
        except OSError:
            pass
        self.thread.join(5)


# --- the rig ------------------------------------------------------------------------------------


@dataclass
class Node:
    name: str
    ast: AsteriskInstance
    var: Path
    config: Path
    agi_port: int
    metrics_port: int
    router: subprocess.Popen[bytes] | None = None
    events: Events | None = None

    @property
    def uri(self) -> str:
        return f"sip:127.0.0.1:{self.ast.sip_port}"

    @property
    def secret(self) -> str:
        return (self.var / "ami.secret").read_text().strip()

    def connect_ami(self) -> None:
        if self.events is not None:
            self.events.close()
        self.events = Events(AMI(self.ast.ami_port, secret=self.secret))


@dataclass
class National:
    root: Path
    nodes: list[Node]
    dispatcher: Edge
    redis: subprocess.Popen[bytes] | None
    env: dict[str, str]
    sipps: list[Sipp] = field(default_factory=list)
    metrics_port: int = 0  # the dispatcher's Prometheus endpoint (METRICS_LISTEN)

    def node_up(self, uri: str) -> float | None:
        """kamailio_ds_node_up{node=uri} from the dispatcher's /metrics (None: not set yet)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=3) as r:
            text = r.read().decode()
        m = re.search(rf'^kamailio_ds_node_up\{{node="{re.escape(uri)}"\}} (\S+)', text, re.M)
        return float(m.group(1)) if m else None

    @property
    def ctl(self) -> str:
        return self.dispatcher.ctl

    def kamcmd(self, *args: str) -> str:
        return subprocess.run(["kamcmd", "-s", self.ctl, *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout  # fmt: skip

    def set_state(self, i: int, state: str) -> None:
        """``a`` active, ``d`` disabled (neither used nor probed) for node i, through the control socket."""
        self.kamcmd("dispatcher.set_state", state, "1", self.nodes[i].uri)

    def log_times(self, pattern: str, since: float = 0.0) -> list[float]:
        rx = re.compile(pattern)
        return [t for t, line in list(self.dispatcher.lines) if t >= since and rx.search(line)]

    def wait_log(self, pattern: str, since: float, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hits = self.log_times(pattern, since)
            if hits:
                return hits[0]
            time.sleep(0.02)
        return None

    def calls(self, work: Path, callers: list[tuple[str, str]], rate: float, hold_ms: int = 4000) -> Sipp:
        """SIPp callers (number, motive) at ``rate``/s through the dispatcher; each call lasts until the node
        hangs up or ``hold_ms`` (the scenario's wait for the node's BYE)."""
        work.mkdir(parents=True, exist_ok=True)
        inf = work / "callers.csv"
        inf.write_text("SEQUENTIAL\n" + "".join(f"{n};{m};\n" for n, m in callers))
        s = sipp(CALLER_XML, self.dispatcher.address, CALLER_IP, work, "-inf", str(inf), "-r", str(rate),
                 "-m", str(len(callers)), "-l", "500", "-timeout", f"{int(len(callers) / rate) + 120}s",
                 "-trace_stat", "-fd", "1", "-trace_msg")  # fmt: skip
        self.sipps.append(s)
        return s

    def kill_node(self, i: int) -> None:
        ast = self.nodes[i].ast
        assert ast.proc is not None
        ast.proc.kill()
        ast.proc.wait(10)
        ast.proc = None

    def restart_node(self, i: int) -> None:
        start(self.nodes[i].ast, timeout=60)
        self.nodes[i].connect_ami()

    def stop(self) -> None:
        for s in self.sipps:
            s.stop()
        if self.dispatcher is not None:
            self.dispatcher.stop()
        for n in self.nodes:
            if n.events is not None:
                n.events.close()
            if n.router is not None:
                stop_router(n.router)
            n.ast.stop()
        if self.redis is not None:
            self.redis.terminate()
            self.redis.wait(10)


def call_outcomes(work: Path) -> list[tuple[float, bool]]:
    """Per call, from SIPp's -trace_msg log: (unix time its INVITE was sent, whether it succeeded: answered
    200, then its end acknowledged — a 200 to the caller's BYE, or the node's BYE answered)."""
    calls: dict[str, dict[str, float]] = {}
    for log in work.glob("*_messages.log"):
        for block in log.read_text(errors="replace").split("----------------------------------------------- ")[1:]:
            head, _, rest = block.partition("\n")
            cid = re.search(r"^Call-ID: *(\S+)", rest, re.M)
            cseq = re.search(r"^CSeq: *\d+ (\w+)", rest, re.M)
            if not cid or not cseq:
                continue
            c = calls.setdefault(cid[1], {})
            when = datetime.strptime(head.strip(), "%Y-%m-%d %H:%M:%S.%f").timestamp()
            sent = "message sent" in rest[:80]
            body = rest.split("\n\n", 1)[1] if "\n\n" in rest else rest
            first = body.strip().split("\n", 1)[0]
            if sent and first.startswith("INVITE "):
                c.setdefault("invite", when)
            elif not sent and first.startswith("SIP/2.0 200") and cseq[1] == "INVITE":
                c["answered"] = 1.0
            elif first.startswith("SIP/2.0 200") and cseq[1] == "BYE":  # ours acknowledged, or theirs answered
                c["ended"] = 1.0
    return sorted((c["invite"], bool(c.get("answered") and c.get("ended"))) for c in calls.values() if "invite" in c)


def start_redis(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    assert REDIS is not None
    port = free_port()
    proc = subprocess.Popen([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def start_dispatcher(root: Path, nodes: list[Node], homes: dict[str, int], **defines: object) -> Edge:
    assert KAMAILIO is not None
    run = root / f"dispatcher-{time.monotonic_ns()}"
    (run / "homes").mkdir(parents=True)
    (run / "dispatcher.list").write_text(
        "".join(f"1 {n.uri} 0 0 rweight={100 // len(nodes)};node={n.name}\n" for n in nodes)
    )
    # the agents' home nodes: a db_text table (edge/README.md)
    (run / "homes" / "version").write_text("table_name(string) table_version(int)\nagent_homes:2\n")
    (run / "homes" / "agent_homes").write_text(
        "key_name(string) key_type(int) value_type(int) key_value(string) expires(int)\n"
        + "".join(f"{a}:0:0:{nodes[i].uri.replace(':', chr(92) + ':')}:0\n" for a, i in homes.items())
    )
    port = free_port()
    args = [KAMAILIO, "-DD", "-E", "-f", str(DS_CFG), "-Y", str(run), "-P", str(run / "kamailio.pid"),
            "-m", "64", "-M", "8", "-A", f"LISTEN=udp:127.0.0.1:{port}",
            "-A", f'DS_LIST="{run / "dispatcher.list"}"', "-A", f'AGENT_HOMES="text://{run / "homes"}"',
            "-A", f'CTL_SOCKET="unix:{run / "ctl"}"', "-A", "CHILDREN=2"]  # fmt: skip
    for k, v in defines.items():
        args += ["-A", f"{k}={v}"]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    ds = Edge(proc, port, run)
    ds.reader = threading.Thread(target=ds._read, daemon=True)
    ds.reader.start()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            time.sleep(0.2)
            raise RuntimeError("kamailio exited:\n" + "\n".join(line for _, line in ds.lines[-30:]))
        if options(("127.0.0.1", port), "127.0.0.254", timeout=0.3) == 200:
            return ds
    ds.stop()
    raise RuntimeError("the dispatcher did not answer OPTIONS in time")


def start_national(root: Path, redis_url: str | None = None, **defines: object) -> National:
    """Two nodes (Asterisk + its router), a shared Redis (started here unless ``redis_url``), the dispatcher."""
    if not Path(BINARY).exists():
        pytest.fail(f"AGI_ROUTER_ASTERISK={BINARY} does not exist")
    root.mkdir(parents=True, exist_ok=True)
    redis = None
    if redis_url is None:
        redis, redis_url = start_redis(root)
    policy = root / "policy.toml"
    policy.write_text(default_policy_path().read_text().replace("[hours]\nenabled = true", "[hours]\nenabled = false"))
    env = {**os.environ, "AGI_ROUTER_PSEUDONYM_KEY": PSEUDONYM_KEY}
    env.pop("AGI_ROUTER_AMI_SECRET", None)
    directory = root / "directory.csv"
    directory.write_text(f"number,last_login,flags\n{ACTIVE},{date.today() - timedelta(days=20)},\n")
    nodes: list[Node] = []
    national = National(root, nodes, None, redis, env)  # type: ignore[arg-type]
    try:
        for i, name in enumerate(("a", "b")):
            var, agi_port, metrics_port, ami_port = root / f"router-{name}", free_port(), free_port(), free_port()
            var.mkdir()
            if nodes:  # one line, one set of SIP accounts: every node knows every agent (agents are homed)
                (var / "sip").mkdir()
                shutil.copy2(nodes[0].var / "sip" / "accounts.json", var / "sip" / "accounts.json")
            cfg = root / f"router-{name}.toml"
            sip_port = free_port()
            rtp = 10000 + 10000 * i  # each node its own RTP range (both on this host)
            cfg.write_text(
                f'data_dir = "{var}"\npolicy_file = "{policy}"\n[agi]\nport = {agi_port}\n[ami]\nport = {ami_port}\n'
                f'[metrics]\nport = {metrics_port}\n[speech]\nenabled = false\n[state]\nbackend = "redis"\n'
                f'redis_url = "{redis_url}"\n[node]\nname = "{name}"\nsip_port = {sip_port}\n'
                f"rtp_start = {rtp}\nrtp_end = {rtp + 9998}\n"
            )
            # the node as a user installs it: `asterisk setup` run with this node's router settings (its [node]
            # addresses, its own AMI secret, its own router list), nothing patched afterwards
            ast = write_config(Path(BINARY), root / f"ast-{name}", agi_url=f"agi://127.0.0.1:{agi_port}/3646",
                               ami_port=ami_port, sip_port=sip_port, router_data_dir=var,
                               node_settings=cfg)  # fmt: skip
            ext = ast.root / "etc" / "extensions.conf"
            text = ext.read_text()
            assert SHIPPED_3646 in text, "asterisk/extensions.conf's 3646 entry changed: update this test"
            ext.write_text(text.replace(SHIPPED_3646, HINTED_3646))
            node = Node(name, ast, var, cfg, agi_port, metrics_port)
            nodes.append(node)
            renv = {**env, "AGI_ROUTER_CONFIG": str(cfg)}
            imp = subprocess.run([sys.executable, "-m", "agi_router", "directory", "import", str(directory)],
                                 env=renv, capture_output=True, text=True, timeout=60)  # fmt: skip
            assert imp.returncode == 0, imp.stderr
            sounds = ast.root / "data" / "sounds" / "fr"
            if i == 0:
                cmd = [sys.executable, "-m", "agi_router", "asterisk", "setup", "--sounds", str(sounds)]
                setup = subprocess.run(cmd, env=renv, capture_output=True, text=True, timeout=300)
                assert setup.returncode == 0, setup.stderr
            else:  # the same prompts (built once)
                shutil.copytree(nodes[0].ast.root / "data" / "sounds" / "fr", sounds, dirs_exist_ok=True)
            node.router = subprocess.Popen([sys.executable, "-m", "agi_router", "serve"], env=renv,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            start(ast, timeout=60)
            node.connect_ami()
        national.metrics_port = free_port()
        defines.setdefault("METRICS_LISTEN", f"tcp:127.0.0.1:{national.metrics_port}")
        national.dispatcher = start_dispatcher(root, nodes, {"agent1": HOME_OF_AGENT1}, **defines)
        deadline = time.monotonic() + 90
        while not all(router_healthy(n.metrics_port) for n in nodes):
            assert all(n.router is not None and n.router.poll() is None for n in nodes), "a router exited"
            assert time.monotonic() < deadline, "a router did not start"
            time.sleep(0.3)
        return national
    except BaseException:
        if national.dispatcher is not None:
            national.dispatcher.stop()
            national.dispatcher = None  # type: ignore[assignment]
        for n in nodes:
            if n.events is not None:
                n.events.close()
            if n.router is not None:
                stop_router(n.router)
            n.ast.stop()
        if redis is not None:
            redis.terminate()
            redis.wait(10)
        raise


@pytest.fixture(scope="module")
def national(tmp_path_factory: pytest.TempPathFactory, redis_server: str) -> Iterator[National]:
    rig = start_national(tmp_path_factory.mktemp("national"), redis_url=redis_server)
    pids = [n.router.pid for n in rig.nodes if n.router is not None]
    groups = [rig.dispatcher.proc.pid]
    try:
        yield rig
    finally:
        groups += [s.proc.pid for s in rig.sipps]
        rig.stop()
    alive = [p for p in pids if Path(f"/proc/{p}").exists() and "Z" not in Path(f"/proc/{p}/stat").read_text()[-60:]]
    assert not alive, f"routers survived: {alive}"
    assert all(n.ast.proc is None for n in rig.nodes), "an asterisk survived"
    assert not [g for g in groups if group_pids(g)], "kamailio/sipp processes survived"


def _numbers(prefix: str, n: int) -> list[tuple[str, str]]:
    return [(f"{prefix}{k:05d}", MOTIVE) for k in range(n)]


# --- tests --------------------------------------------------------------------------------------


def test_calls_are_spread_over_both_nodes_and_all_routed(national: National, tmp_path: Path) -> None:
    since = time.monotonic()
    s = national.calls(tmp_path / "spread", _numbers("07221", 100), rate=5)
    s.wait(200)
    time.sleep(2)
    stats = s.final_stats()
    ok, failed = int(stats.get("SuccessfulCall(C)", 0)), int(stats.get("FailedCall(C)", 0))
    routes = [n.events.routes(since) if n.events else [] for n in national.nodes]
    print(f"\n100 calls at 5/s: {ok} ok / {failed} failed; routed by node: {[len(r) for r in routes]}")
    assert ok == 100 and failed == 0, stats
    assert sum(len(r) for r in routes) == 100
    assert all(r["Done"] == "1" for rs in routes for r in rs), "a call was not decided by a router"
    assert min(len(r) for r in routes) >= 30, [len(r) for r in routes]  # rweight 50/50


def test_repeat_rules_hold_across_nodes_and_agents_register_on_their_home(national: National, tmp_path: Path) -> None:
    a, b = national.nodes
    assert a.events is not None and b.events is not None
    try:
        national.set_state(1, "d")  # calls 1 and 2 on node A
        rules = []
        for k in range(2):
            since = time.monotonic()
            s = national.calls(tmp_path / f"repeat{k}", [(ACTIVE, SIMPLE)], rate=1)
            assert s.wait(60) == 0, f"call {k + 1} failed"
            time.sleep(0.5)
            (r,) = a.events.routes(since)
            assert b.events.routes(since) == []
            rules.append(r["Rule"])
        national.set_state(1, "a")
        national.set_state(0, "d")  # call 3 on node B
        since = time.monotonic()
        s = national.calls(tmp_path / "repeat2", [(ACTIVE, SIMPLE)], rate=1)
        assert s.wait(60) == 0, "call 3 failed"
        time.sleep(0.5)
        (third,) = b.events.routes(since)
        assert a.events.routes(since) == []
    finally:
        national.set_state(0, "a")
        national.set_state(1, "a")
    print(f"\nrepeat rules: node A {rules}, then node B {third['Rule']} ({third['Action']}, prio {third['Prio']})")
    assert rules[0].startswith("deflect") and rules[1] == "repeat.hangup", rules
    assert third["Rule"] == "repeat.priority" and third["Action"] == "priority", third

    # an agent registers through the dispatcher: on its home node (B) only, with the dispatcher's Path
    assert SIPP is not None
    password = sip_password(a.ast.root / "etc", "agent1")
    assert password == sip_password(b.ast.root / "etc", "agent1")  # one set of accounts on every node
    work = tmp_path / "agent"
    work.mkdir()
    reg = subprocess.run(
        [SIPP, "-sf", str(REGISTER_XML), "-s", "agent1", "-au", "agent1", "-ap", password, "-i", AGENT_IP,
         "-p", str(free_port()), "-m", "1", "-nostdin", "-timeout", "15s", national.dispatcher.address],
        cwd=work, capture_output=True, text=True, timeout=30, start_new_session=True,
    )  # fmt: skip
    assert reg.returncode == 0, reg.stderr[-800:]
    home, other = national.nodes[HOME_OF_AGENT1], national.nodes[1 - HOME_OF_AGENT1]
    db = home.ast.cli("database show registrar/contact")
    assert f"127.0.0.1:{national.dispatcher.port};lr;received=sip:{AGENT_IP}:" in db, db
    assert "agent1" not in other.ast.cli("database show registrar/contact")


def test_node_killed_mid_burst_then_rejoins(national: National, tmp_path: Path) -> None:
    a, b = national.nodes
    # 100 calls at 5/s; node A killed after ~8 s (~40 calls placed)
    s = national.calls(tmp_path / "burst", _numbers("07331", 100), rate=5)
    time.sleep(8)
    kill_mono, kill_wall = time.monotonic(), time.time()
    national.kill_node(0)
    node_a = re.escape(a.uri)
    detected = national.wait_log(rf"DS-(DOWN|TIMEOUT) node={node_a}\b", kill_mono, 15)
    assert detected is not None, "the dispatcher did not see node A die within 15 s"
    probe_down = national.wait_log(rf"DS-DOWN node={node_a}\b", kill_mono, 15)
    s.wait(300)
    detection_s = detected - kill_mono
    detected_wall = kill_wall + detection_s
    outcomes = call_outcomes(s.work)
    after = [ok for t, ok in outcomes if t > detected_wall]
    lost = [t for t, ok in outcomes if not ok]
    routes_b = [r for r in b.events.routes(kill_mono)] if b.events else []
    print(f"\nnode A killed after {sum(t < kill_wall for t, _ in outcomes)} calls: detected in {detection_s:.2f} s "
          f"(probe DS-DOWN in {None if probe_down is None else round(probe_down - kill_mono, 2)} s); "
          f"{len(outcomes)} calls, {len(lost)} lost (placed {[round(t - kill_wall, 2) for t in lost]} s from the "
          f"kill), {len(after)} placed after detection: {after.count(False)} failed; node B routed "
          f"{len(routes_b)} after the kill")  # fmt: skip
    assert len(outcomes) == 100
    assert detection_s < 5.0, detection_s
    assert after and all(after), "a call placed after detection failed"
    assert all(t <= detected_wall for t in lost), "a call placed after detection was lost"
    assert all(r["Done"] == "1" for r in routes_b)
    assert national.node_up(a.uri) == 0.0  # ops see it: the gauge AgiRouterPbxNodeDown reads (either path)

    # node A restarted: re-admitted by the probes, then it takes calls again
    restart_mono = time.monotonic()
    national.restart_node(0)
    booted = time.monotonic()
    up = national.wait_log(rf"DS-UP node={node_a}\b", restart_mono, 30)
    assert up is not None, "node A was not re-admitted within 30 s"
    assert national.node_up(a.uri) == 1.0
    print(f"node A restarted: booted in {booted - restart_mono:.2f} s, re-admitted {up - restart_mono:.2f} s after "
          f"the restart ({up - booted:+.2f} s from fully booted)")  # fmt: skip
    since = time.monotonic()
    s2 = national.calls(tmp_path / "rejoin", _numbers("07441", 20), rate=5)
    s2.wait(120)
    time.sleep(2)
    stats = s2.final_stats()
    assert a.events is not None and b.events is not None
    ra, rb = a.events.routes(since), b.events.routes(since)
    print(f"after the rejoin: 20 calls, {stats.get('SuccessfulCall(C)')} ok; node A {len(ra)}, node B {len(rb)}")
    assert int(stats.get("SuccessfulCall(C)", 0)) == 20, stats
    assert len(ra) >= 5 and len(ra) + len(rb) == 20, (len(ra), len(rb))
    assert all(r["Done"] == "1" for r in ra + rb)
