"""Two routers behind one real Asterisk 22 (issue #11): an ordered AGI address list in the dialplan, caller
memory and callbacks shared through Redis.

* the dialplan's ``ROUTER_AGI`` lists both routers; each call starts at a random one and moves to the next
  when it cannot connect (``AGISTATUS=FAILURE``) before the router said ``ROUTER_DONE=1``;
* both routers take a share of the calls;
* caller memory is shared: two router-ended calls on router 1, the third call on router 2 gets the priority
  agent (the 2024 repeat rules span routers);
* router 1 is killed (SIGKILL) in the middle of a burst: every call still gets a route — a router's
  decision, or the dialplan's human route — and the calls after the kill are routed by router 2.

The product as shipped (``agi-router serve``, the bundled policy with hours off, ``asterisk setup``), with
live audio off so that both routers start in seconds (calls carry their motive in MOTIVE_HINT).
Skipped, with the reason, without AGI_ROUTER_ASTERISK or redis-server.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest

from agi_router.policy.config import default_policy_path
from tests.asterisk_harness import (
    AMI,
    AsteriskInstance,
    free_port,
    router_healthy,
    start,
    stop_router,
    write_config,
)
from tests.test_real_callers_path import BINARY

pytestmark = [
    pytest.mark.asterisk,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not BINARY, reason="needs a real Asterisk 22: set AGI_ROUTER_ASTERISK=/path/to/asterisk"),
]
ACTIVE = "0611000001"  # an active online account (directory of both routers)
SIMPLE = "releve_remboursements"  # a simple motive: deflected for active account holders


@dataclass
class Pair:
    ast: AsteriskInstance
    ami: AMI
    routers: list[subprocess.Popen[bytes]]
    agi_ports: list[int]
    metrics_ports: list[int]
    vars: list[Path]

    def originate(self, number: str, **variables: str) -> None:
        fields = {"Action": "Originate", "Channel": f"Local/{number}@hotline-test", "Context": "test-caller",
                  "Exten": "s", "Priority": "1", "Async": "true", "Timeout": "10000",
                  "ActionID": f"o-{number}-{time.monotonic_ns()}"}  # fmt: skip
        head = "".join(f"{k}: {v}\r\n" for k, v in fields.items())
        extra = "".join(f"Variable: {k}={v}\r\n" for k, v in variables.items())
        self.ami.sock.sendall((head + extra + "\r\n").encode())

    def routes(self, n: int, timeout: float) -> list[dict[str, str]]:
        got: list[dict[str, str]] = []
        deadline = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < deadline:
            for m in self.ami.messages(min(1.0, max(0.1, deadline - time.monotonic()))):
                if m.get("UserEvent") == "RouterRoute" and "AGIStatus" in m:
                    got.append(m)
                    if len(got) == n:
                        break
        return got

    def decisions(self, i: int) -> list[dict[str, object]]:
        path = self.vars[i] / "audit" / "decisions.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def only(self, i: int | None) -> None:
        """Point the dialplan at router i only (None: both, the shipped list)."""
        urls = [f"agi://127.0.0.1:{p}/3646" for p in self.agi_ports]
        self.ast.cli(f"dialplan set global ROUTER_AGI {','.join(urls) if i is None else urls[i]}")


@pytest.fixture
def pair(tmp_path: Path, redis_server: str) -> Iterator[Pair]:
    binary = Path(BINARY)
    ami_port = free_port()
    policy = tmp_path / "policy.toml"
    policy.write_text(default_policy_path().read_text().replace("[hours]\nenabled = true", "[hours]\nenabled = false"))
    env = {**os.environ, "AGI_ROUTER_PSEUDONYM_KEY": "shared-key-of-this-deployment-0123456789"}
    env.pop("AGI_ROUTER_AMI_SECRET", None)
    secret = f"shared-ami-secret-{random.randrange(10**9)}"  # one deployment, one AMI secret file per router
    directory = tmp_path / "directory.csv"
    directory.write_text(f"number,last_login,flags\n{ACTIVE},{date.today() - timedelta(days=20)},\n")
    routers, agi_ports, metrics_ports, var_dirs, cfgs = [], [], [], [], []
    for i in range(2):
        var, agi_port, metrics_port = tmp_path / f"r{i + 1}", free_port(), free_port()
        var.mkdir()
        (var / "ami.secret").write_text(secret)
        (var / "ami.secret").chmod(0o600)
        cfg = tmp_path / f"router{i + 1}.toml"
        cfg.write_text(
            f'data_dir = "{var}"\npolicy_file = "{policy}"\n[agi]\nport = {agi_port}\n[ami]\nport = {ami_port}\n'
            f'[metrics]\nport = {metrics_port}\n[speech]\nenabled = false\n[state]\nbackend = "redis"\n'
            f'redis_url = "{redis_server}"\n'
        )
        imp = subprocess.run([sys.executable, "-m", "agi_router", "directory", "import", str(directory)],
                             env={**env, "AGI_ROUTER_CONFIG": str(cfg)}, capture_output=True, text=True)  # fmt: skip
        assert imp.returncode == 0, imp.stderr
        agi_ports.append(agi_port)
        metrics_ports.append(metrics_port)
        var_dirs.append(var)
        cfgs.append(cfg)
    for cfg in cfgs:
        routers.append(subprocess.Popen([sys.executable, "-m", "agi_router", "serve"],
                                        env={**env, "AGI_ROUTER_CONFIG": str(cfg)},
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
    agi_url = ",".join(f"agi://127.0.0.1:{p}/3646" for p in agi_ports)
    ast = write_config(binary, tmp_path / "ast", agi_url=agi_url, ami_port=ami_port, sip_port=free_port(),
                       router_data_dir=var_dirs[0])  # fmt: skip
    setup = subprocess.run(
        [sys.executable, "-m", "agi_router", "asterisk", "setup", "--sounds", str(ast.root / "data" / "sounds" / "fr")],
        env={**env, "AGI_ROUTER_CONFIG": str(cfgs[0])}, capture_output=True, text=True,
    )  # fmt: skip
    assert setup.returncode == 0, setup.stderr
    ami: AMI | None = None
    try:
        start(ast)
        ami = AMI(ami_port, secret=secret)
        deadline = time.monotonic() + 60
        while not all(router_healthy(p) for p in metrics_ports):
            assert all(r.poll() is None for r in routers) and time.monotonic() < deadline, "a router did not start"
            time.sleep(0.3)
        yield Pair(ast, ami, routers, agi_ports, metrics_ports, var_dirs)
    finally:  # nothing left running, whatever failed
        for r in routers:
            stop_router(r)
        if ami is not None:
            ami.close()
        ast.stop()


def test_two_routers_share_the_load_the_caller_memory_and_survive_a_kill(pair: Pair) -> None:
    # 1. the 2024 repeat rules across routers: two router-ended calls on router 1, the third on router 2
    pair.only(0)
    rules = []
    for _ in range(2):
        pair.originate(ACTIVE, MOTIVE_HINT=SIMPLE)
        (r,) = pair.routes(1, 20)
        rules.append(r["Rule"])
    pair.only(1)
    pair.originate(ACTIVE, MOTIVE_HINT=SIMPLE)
    (third,) = pair.routes(1, 20)
    print(f"repeat rules: {rules} then on router 2: {third['Rule']} (prio {third['Prio']})")
    assert rules[0].startswith("deflect") and rules[1].startswith("repeat"), rules
    assert third["Rule"].startswith("repeat") and third["Action"] == "priority", third
    assert len(pair.decisions(0)) == 2 and len(pair.decisions(1)) == 1

    # 2. both routers listed: the load is shared
    pair.only(None)
    before = [len(pair.decisions(i)) for i in range(2)]
    for n in range(20):
        pair.originate(f"07220{n:05d}", MOTIVE_HINT="carte_vitale_perdue")
        time.sleep(0.05)
    routes = pair.routes(20, 40)
    shares = [len(pair.decisions(i)) - before[i] for i in range(2)]
    print(f"20 calls over two routers: {shares}; AGI status {[r['AGIStatus'] for r in routes].count('SUCCESS')}")
    assert len(routes) == 20 and all(r["Done"] == "1" for r in routes), routes
    assert min(shares) >= 3 and sum(shares) == 20, shares

    # 3. router 1 killed in the middle of a burst: no call lost
    killed_at = None
    for n in range(30):
        if n == 10:
            pair.routers[0].send_signal(signal.SIGKILL)
            killed_at = n
        pair.originate(f"07330{n:05d}", MOTIVE_HINT="carte_vitale_perdue", TEST_HOLD="2")
        time.sleep(0.1)
    routes = pair.routes(30, 60)
    assert killed_at == 10
    done = [r for r in routes if r["Done"] == "1"]
    human = [r for r in routes if r["Done"] != "1"]
    print(f"burst of 30 with router 1 killed after 10: {len(routes)} routes, {len(done)} decided by a router, "
          f"{len(human)} on the dialplan's human route {[h['AGIStatus'] for h in human]}")  # fmt: skip
    assert len(routes) == 30, "a caller got no route"
    assert all(r["Action"] for r in routes)
    assert all(h["Action"] == "human" for h in human)  # the dialplan's default: a person
    assert len(human) <= 3  # only calls in progress on router 1 when it died may fall back
