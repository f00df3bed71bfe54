"""AGI conversations recorded between a real Asterisk 22.10.1 and the router (tests/fixtures/agi/*.trace,
made by test_real_asterisk.py with AGI_ROUTER_RECORD_TRACES=1), replayed in CI without Asterisk.

``A> `` lines are what Asterisk sent, ``R> `` lines what the router sent. The replay checks that
the fake res_agi matches the real one (environment keys and order) and that the router, given the
same inputs, says exactly what it said to the real Asterisk.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from agi_router.agi.protocol import parse_env_line, parse_response_line
from agi_router.agi.server import AGIServer, AGIServerConfig
from agi_router.callflow.capture import ChainedCapture, DTMFMenuCapture, DTMFMenuConfig, HintCapture
from agi_router.callflow.flow import CallFlow, PolicyHolder
from agi_router.motives.catalogue import Catalogue
from agi_router.policy.model import AccountFacts
from agi_router.privacy import Pseudonymizer
from agi_router.state.memory import InMemoryCallerMemory
from tests.conftest import bundled_policy_always_open
from tests.doubles import StubDirectory
from tests.fakeasterisk import environment

TRACES = Path(__file__).parent / "fixtures" / "agi"
_DIGEST = re.compile(r"\+[0-9a-f]{8}\b")
ALL = sorted(TRACES.glob("*.trace"))


@dataclass
class Trace:
    name: str
    env: list[str]
    turns: list[tuple[str, list[str]]] = field(default_factory=list)  # router command -> Asterisk lines
    tail: list[str] = field(default_factory=list)  # Asterisk lines after the router's last command


def load(path: Path) -> Trace:
    lines = path.read_text().splitlines()
    env: list[str] = []
    i = 0
    while i < len(lines) and lines[i] != "A> ":
        assert lines[i].startswith("A> "), f"{path.name}:{i + 1}: environment line from the router?"
        env.append(lines[i][3:])
        i += 1
    trace = Trace(path.stem, env)
    i += 1
    for line in lines[i:]:
        if line.startswith("R> "):
            trace.turns.append((line[3:], []))
        elif trace.turns:
            trace.turns[-1][1].append(line[3:])
        else:
            trace.tail.append(line[3:])
    return trace


def test_traces_were_recorded() -> None:
    assert len(ALL) >= 3, "record them: AGI_ROUTER_ASTERISK=... AGI_ROUTER_RECORD_TRACES=1 pytest -m asterisk"


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_fake_environment_matches_real_asterisk(path: Path) -> None:
    real = [parse_env_line(x)[0] for x in load(path).env]
    fake = [parse_env_line(x)[0] for x in environment(args=("x",))]
    assert [k for k in real if not k.startswith("agi_arg_")] == [k for k in fake if not k.startswith("agi_arg_")]


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_every_real_response_parses(path: Path) -> None:
    for cmd, answers in load(path).turns:
        for a in answers:
            if a == "HANGUP":
                continue
            if a.startswith("200"):
                parse_response_line(a)
            else:
                assert a[:3] in ("510", "511", "520"), (cmd, a)


class Replayer:
    """Plays Asterisk's side of a recorded trace and checks the router's side line by line."""

    def __init__(self, trace: Trace) -> None:
        self.trace = trace
        self.mismatches: list[str] = []

    async def run(self, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(("\n".join(self.trace.env) + "\n\n").encode())
        for expected, answers in self.trace.turns:
            raw = await asyncio.wait_for(reader.readline(), 5)
            got = raw.decode().rstrip("\n")
            # the policy label ends with the digest of the policy file: a comment edit must not fail this
            if _DIGEST.sub("+<digest>", got) != _DIGEST.sub("+<digest>", expected):
                self.mismatches.append(f"expected {expected!r}, router sent {got!r}")
                break
            for a in answers:
                writer.write((a + "\n").encode())
        rest = await asyncio.wait_for(reader.read(), 5)
        if rest:
            self.mismatches.append(f"router sent more: {rest[:100]!r}")
        writer.close()


def groups() -> dict[str, list[Path]]:
    """Sessions to replay; speech captures are not (their RTP port is drawn at random)."""
    out: dict[str, list[Path]] = {}
    for p in ALL:
        if p.stem.startswith("speech-"):
            continue
        out.setdefault(p.stem.rsplit("-", 1)[0], []).append(p)
    return out


@pytest.mark.parametrize("group", sorted(groups()), ids=str)
async def test_router_replays_identically(group: str) -> None:
    catalogue = Catalogue.load()
    policy = bundled_policy_always_open()
    now = [datetime(2026, 11, 24, 10, 0, tzinfo=UTC)]

    flow = CallFlow(
        policy=PolicyHolder(policy),
        directory=StubDirectory({"+33612345678": AccountFacts(True, True, date(2026, 11, 1))}),
        memory=InMemoryCallerMemory(),
        pseudonymizer=Pseudonymizer(b"replay-key-0123456789"),
        capture=ChainedCapture(
            [HintCapture(), DTMFMenuCapture(catalogue, DTMFMenuConfig(attempts=2, timeout_ms=4000))]
        ),
        clock=lambda: now[0],
    )
    server = AGIServer({"3646": flow}, AGIServerConfig(port=0))
    await server.start()
    try:
        for path in groups()[group]:
            r = Replayer(load(path))
            await r.run(server.sockets[0][1])
            await flow.drain()
            assert not r.mismatches, f"{path.name}: {r.mismatches}"
            now[0] += timedelta(minutes=1)
    finally:
        await server.close()
