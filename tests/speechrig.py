"""The pieces every live-audio test wires the same way: a fake AMI with the fake PBX's chan_rtp legs, the
router's AMI client logged in to it, and the FastAGI server around a call flow."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime

from agi_router.agi.server import AGIServer, AGIServerConfig
from agi_router.ami.client import AMIClient, AMIConfig
from agi_router.callflow.capture import ChainedCapture, DTMFMenuCapture, DTMFMenuConfig, HintCapture, MotiveCapture
from agi_router.callflow.flow import CallFlow, CallResult, PolicyHolder
from agi_router.motives.catalogue import Catalogue
from agi_router.policy.config import Policy
from agi_router.policy.model import AccountFacts
from agi_router.privacy import Pseudonymizer
from agi_router.state.memory import InMemoryCallerMemory
from tests.doubles import StubDirectory
from tests.fakeami import FakeAMI
from tests.fakepbx import FakePBX


@asynccontextmanager
async def fake_pbx() -> AsyncIterator[tuple[FakePBX, AMIClient]]:
    """A fake PBX (AMI + capture legs) and the router's AMI client, connected."""
    fake_ami = FakeAMI()
    await fake_ami.start()
    pbx = FakePBX(fake_ami)
    ami = AMIClient(AMIConfig(port=fake_ami.port, secret=fake_ami.secret, backoff_initial=0.05, backoff_max=0.1))
    await ami.start()
    try:
        assert await ami.wait_connected(2)
        yield pbx, ami
    finally:
        await ami.close()
        await fake_ami.stop()


def mini_flow(
    policy: Policy,
    catalogue: Catalogue,
    pseudonymizer: Pseudonymizer,
    speech: MotiveCapture,
    on_result: Callable[[CallResult], None],
) -> CallFlow:
    """The mini catalogue's flow: hint, live audio, a one-shot 100 ms DTMF menu; an active account holder;
    a Monday morning."""
    return CallFlow(
        policy=PolicyHolder(policy),
        directory=StubDirectory(everyone=AccountFacts(True, True, date(2026, 11, 1))),
        memory=InMemoryCallerMemory(),
        pseudonymizer=pseudonymizer,
        clock=lambda: datetime(2026, 11, 24, 10, 0, tzinfo=UTC),
        capture=ChainedCapture(
            [HintCapture(), speech, DTMFMenuCapture(catalogue, DTMFMenuConfig(attempts=1, timeout_ms=100))]
        ),
        on_result=on_result,
    )


@asynccontextmanager
async def agi_server(flow: CallFlow) -> AsyncIterator[int]:
    """The FastAGI server on a free port, closed with a 1 s grace; yields the port."""
    server = AGIServer({"3646": flow}, AGIServerConfig(port=0))
    await server.start()
    try:
        yield server.sockets[0][1]
    finally:
        await server.close(grace=1)
