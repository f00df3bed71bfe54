"""The FastAGI server and the 3646 call flow, driven over TCP by the protocol-faithful fake Asterisk."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from agi_router.agi.server import AGIServer, AGIServerConfig
from agi_router.callflow.capture import ChainedCapture, DTMFMenuCapture, DTMFMenuConfig, HintCapture
from agi_router.callflow.flow import CallFlow, CallFlowConfig, CallResult, PolicyHolder
from agi_router.directory.sqlite import SQLiteDirectory, import_csv
from agi_router.exceptions import StateStoreError
from agi_router.motives.catalogue import Catalogue
from agi_router.policy.config import Policy
from agi_router.policy.model import AccountFacts, PastCall
from agi_router.privacy import Pseudonymizer
from agi_router.state.memory import InMemoryCallerMemory
from tests.doubles import StubDirectory
from tests.fakeasterisk import FakeChannel, environment, run_call

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class BrokenMemory(InMemoryCallerMemory):
    async def history(self, caller: str, motive: str, now: datetime) -> tuple[PastCall, ...]:
        raise StateStoreError("redis down")


@dataclass
class Harness:
    server: AGIServer
    flow: CallFlow
    clock: Clock
    directory: StubDirectory
    results: list[CallResult]

    @property
    def port(self) -> int:
        return self.server.sockets[0][1]

    async def call(self, channel: FakeChannel, timeout: float = 10.0) -> FakeChannel:
        out = await run_call("127.0.0.1", self.port, channel, timeout=timeout)
        await self.flow.drain()
        assert not out.pipelined, "the router pipelined AGI commands: res_agi would stall"
        return out


ACTIVE = AccountFacts(known=True, exists=True, last_login=date(2026, 10, 1))


@pytest.fixture
async def make_harness(
    mini_policy: Policy, mini_catalogue: Catalogue, pseudonymizer: Pseudonymizer
) -> AsyncIterator[Callable[..., Harness]]:
    made: list[AGIServer] = []

    async def make(
        *,
        memory: InMemoryCallerMemory | None = None,
        flow_config: CallFlowConfig | None = None,
        server_config: AGIServerConfig | None = None,
        capture: object = None,
        directory: object = None,
    ) -> Harness:
        clock = Clock()
        stub = StubDirectory({"+33612345678": ACTIVE})
        results: list[CallResult] = []
        flow = CallFlow(
            policy=PolicyHolder(mini_policy),
            directory=directory or stub,  # type: ignore[arg-type]
            memory=memory if memory is not None else InMemoryCallerMemory(),
            pseudonymizer=pseudonymizer,
            capture=capture
            or ChainedCapture(  # type: ignore[arg-type]
                [HintCapture(), DTMFMenuCapture(mini_catalogue, DTMFMenuConfig(attempts=2, timeout_ms=100))]
            ),
            config=flow_config,
            clock=clock,
            on_result=results.append,
        )
        server = AGIServer({"3646": flow}, server_config or AGIServerConfig(port=0))
        await server.start()
        made.append(server)
        return Harness(server, flow, clock, stub, results)

    yield make  # type: ignore[misc]
    for s in made:
        await s.close(grace=1.0)


def assert_done_last(ch: FakeChannel) -> None:
    sets = [c for c in ch.commands if c.startswith("SET VARIABLE")]
    assert sets[-1] == 'SET VARIABLE "ROUTER_DONE" "1"'
    assert ch.closed_by_router


async def test_2024_sequence_through_fastagi(make_harness: Callable[..., object]) -> None:
    h: Harness = await make_harness()  # type: ignore[misc]
    c1 = await h.call(FakeChannel(args=["attestation_droits"]))
    assert c1.variables["ROUTER_ACTION"] == "deflect"
    assert c1.variables["ROUTER_PROMPTS"].split("&")[1] == "router/online/attestation_droits"
    assert c1.variables["ROUTER_SMS"] == "0"  # no SMS gateway in this harness: none announced
    assert "router/sms-sent" not in c1.variables["ROUTER_PROMPTS"]
    assert_done_last(c1)
    h.clock.now += timedelta(minutes=4)
    c2 = await h.call(FakeChannel(args=["attestation_droits"], uniqueid="2.2"))
    assert (c2.variables["ROUTER_ACTION"], c2.variables["ROUTER_RULE"]) == ("hangup", "repeat.hangup")
    h.clock.now += timedelta(minutes=4)
    c3 = await h.call(FakeChannel(args=["attestation_droits"], uniqueid="3.3", callerid="+33 6 12 34 56 78"))
    assert c3.variables["ROUTER_ACTION"] == "priority"
    assert (c3.variables["ROUTER_QUEUE"], c3.variables["ROUTER_PRIO"]) == ("droits", "10")
    assert [r.decision.action.value for r in h.results if r.decision] == ["deflect", "hangup", "priority"]
    # the same caller under three spellings of the number: one pseudonym, never the number
    assert len({r.caller for r in h.results}) == 1 and h.results[0].caller.startswith("c-")


@pytest.mark.parametrize(
    ("callerid", "down", "segment"),
    [("0698765432", False, "no_account"), ("0612345678", True, "account_unknown"), ("anonymous", False, "withheld")],
)
async def test_no_account_unknown_or_withheld_go_to_queue(
    make_harness: Callable[..., object], callerid: str, down: bool, segment: str
) -> None:
    h: Harness = await make_harness()  # type: ignore[misc]
    h.directory.down = down
    ch = await h.call(FakeChannel(callerid=callerid, args=["attestation_droits"]))
    assert (ch.variables["ROUTER_ACTION"], ch.variables["ROUTER_QUEUE"]) == ("queue", "droits")
    assert f"segment.{segment}" in ch.variables["ROUTER_REASON"]
    assert_done_last(ch)


async def test_slow_directory_does_not_delay_the_decision(make_harness: Callable[..., object]) -> None:
    h: Harness = await make_harness()  # type: ignore[misc]
    h.directory.delay = 5.0
    ch = await h.call(FakeChannel(args=["attestation_droits"]))
    assert ch.variables["ROUTER_ACTION"] == "queue"
    r = h.results[-1]
    assert r.decision_latency_s is not None and r.decision_latency_s < 1.0  # did not wait the 5 s directory
    assert any("decision budget" in e for e in r.errors)


async def test_state_store_down_still_decides(make_harness: Callable[..., object]) -> None:
    h: Harness = await make_harness(memory=BrokenMemory())  # type: ignore[misc]
    ch = await h.call(FakeChannel(args=["attestation_droits"]))
    assert ch.variables["ROUTER_ACTION"] == "deflect"
    assert any("redis down" in e for e in h.results[-1].errors)


async def test_dtmf_menu_path(make_harness: Callable[..., object]) -> None:
    h: Harness = await make_harness()  # type: ignore[misc]
    ch = await h.call(FakeChannel(dtmf=["3", "1"]))
    assert ch.commands[0] == 'GET DATA "router/menu-skills" "100" "1"'
    assert ch.commands[1] == 'GET DATA "router/menu-skill-droits" "100" "1"'
    assert ch.variables["ROUTER_MOTIVE"] == "attestation_droits"
    assert ch.variables["ROUTER_ACTION"] == "deflect"


async def test_dtmf_invalid_then_valid(make_harness: Callable[..., object]) -> None:
    h: Harness = await make_harness()  # type: ignore[misc]
    ch = await h.call(FakeChannel(dtmf=["7", "3", "2"]))
    assert 'STREAM FILE "router/invalid" ""' in ch.commands
    assert ch.variables["ROUTER_MOTIVE"] == "carte_vitale_perdue"
    assert (ch.variables["ROUTER_ACTION"], ch.variables["ROUTER_QUEUE"]) == ("queue", "droits")


async def test_dtmf_skill_only_goes_to_skill_queue(make_harness: Callable[..., object]) -> None:
    h: Harness = await make_harness()  # type: ignore[misc]
    ch = await h.call(FakeChannel(dtmf=["1", ""]))
    assert ch.variables["ROUTER_MOTIVE"] == "remboursements.autre"
    assert ch.variables["ROUTER_QUEUE"] == "remboursements"


@pytest.mark.parametrize(("dtmf", "rule"), [(["", ""], "motive.none"), (["0"], "motive.human")])
async def test_no_input_or_human_request_reaches_a_human(
    make_harness: Callable[..., object], dtmf: list[str], rule: str
) -> None:
    h: Harness = await make_harness()  # type: ignore[misc]
    ch = await h.call(FakeChannel(dtmf=dtmf))
    assert (ch.variables["ROUTER_ACTION"], ch.variables["ROUTER_QUEUE"], ch.variables["ROUTER_RULE"]) == (
        "queue",
        "accueil",
        rule,
    )


async def test_unknown_motive_hint_goes_to_a_human(make_harness: Callable[..., object]) -> None:
    h: Harness = await make_harness()  # type: ignore[misc]
    ch = await h.call(FakeChannel(args=["carte-vitale!!"]))
    assert ch.variables["ROUTER_QUEUE"] == "accueil"
    assert "motive.unknown_id" in ch.variables["ROUTER_REASON"]
    free_text = await h.call(FakeChannel(args=["ma carte vitale"]))
    # free text goes no further than the decision: a closed value back to the dialplan (and the metrics)
    assert (ch.variables["ROUTER_MOTIVE"], free_text.variables["ROUTER_MOTIVE"]) == ("unknown", "unknown")


async def test_caller_hangs_up_mid_menu(make_harness: Callable[..., object]) -> None:
    h: Harness = await make_harness()  # type: ignore[misc]
    ch = await h.call(FakeChannel(dtmf=["3"], hangup_during="GET DATA"))
    assert len(ch.commands) == 1  # nothing sent after the hang-up
    assert "ROUTER_DONE" not in ch.variables
    assert h.results[-1].hung_up and h.results[-1].decision is None
    # the server keeps serving
    ok = await h.call(FakeChannel(args=["carte_vitale_perdue"], uniqueid="9.9"))
    assert ok.variables["ROUTER_ACTION"] == "queue"


async def test_caller_hangs_up_between_commands(make_harness: Callable[..., object]) -> None:
    h: Harness = await make_harness()  # type: ignore[misc]
    ch = await h.call(FakeChannel(dtmf=["3", "1"], hangup_after=1))
    assert h.results[-1].hung_up
    assert "ROUTER_DONE" not in ch.variables


async def test_internal_fault_routes_to_a_human(make_harness: Callable[..., object]) -> None:
    class Exploding:
        async def capture(self, session: object, call: object) -> None:
            raise RuntimeError("bug")

    h: Harness = await make_harness(capture=Exploding())  # type: ignore[misc]
    ch = await h.call(FakeChannel())
    assert (ch.variables["ROUTER_ACTION"], ch.variables["ROUTER_REASON"]) == ("human", "internal_error")
    assert_done_last(ch)


async def test_call_deadline_writes_the_fallback(make_harness: Callable[..., object]) -> None:
    h: Harness = await make_harness(flow_config=CallFlowConfig(call_deadline=0.3))  # type: ignore[misc]
    # Asterisk takes 0.25 s per command: the menu cannot finish within 0.3 s
    ch = await h.call(FakeChannel(dtmf=["", "", "", ""], command_delay=0.25))
    assert (ch.variables["ROUTER_ACTION"], ch.variables["ROUTER_REASON"]) == ("human", "deadline")
    assert_done_last(ch)


async def _raw_session(port: int, payload: bytes, *, close: bool = False, read: bool = True) -> list[str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    if close:
        writer.close()
        return []
    lines: list[str] = []
    while read:
        raw = await asyncio.wait_for(reader.readline(), 5)
        if not raw:
            break
        line = raw.decode().rstrip("\n")
        lines.append(line)
        writer.write(b"200 result=1\n")
        await writer.drain()
    writer.close()
    return lines


async def test_malformed_header_gets_the_fallback(make_harness: Callable[..., object]) -> None:
    h: Harness = await make_harness()  # type: ignore[misc]
    env = environment()
    env.insert(5, "this is not an agi line")
    lines = await _raw_session(h.port, ("\n".join(env) + "\n\n").encode())
    assert 'SET VARIABLE "ROUTER_ACTION" "human"' in lines
    assert 'SET VARIABLE "ROUTER_REASON" "bad_header"' in lines
    assert lines[-1] == 'SET VARIABLE "ROUTER_DONE" "1"'
    assert h.server.header_errors == 1


async def test_oversized_header_gets_the_fallback(make_harness: Callable[..., object]) -> None:
    h: Harness = await make_harness(  # type: ignore[misc]
        server_config=AGIServerConfig(port=0, header_max_bytes=2048)
    )
    env = environment(args=["x" * 3000])
    lines = await _raw_session(h.port, ("\n".join(env) + "\n\n").encode())
    assert 'SET VARIABLE "ROUTER_REASON" "bad_header"' in lines


async def test_line_longer_than_stream_limit_is_refused(make_harness: Callable[..., object]) -> None:
    h: Harness = await make_harness(  # type: ignore[misc]
        server_config=AGIServerConfig(port=0, stream_limit=1024)
    )
    lines = await _raw_session(h.port, b"agi_network: " + b"y" * 5000 + b"\n\n")
    assert h.server.header_errors == 1
    assert all("ROUTER_ACTION" not in x or "human" in x for x in lines)


async def test_half_header_then_disconnect_does_not_wedge_the_server(make_harness: Callable[..., object]) -> None:
    h: Harness = await make_harness()  # type: ignore[misc]
    half = ("\n".join(environment()[:6]) + "\nagi_calleri").encode()
    for _ in range(20):
        await _raw_session(h.port, half, close=True)
    # stalled clients too: they time out on their own, others are served meanwhile
    stalled = [await asyncio.open_connection("127.0.0.1", h.port) for _ in range(5)]
    for _r, w in stalled:
        w.write(b"agi_network: yes\n")
    ok = await asyncio.wait_for(h.call(FakeChannel(args=["carte_vitale_perdue"])), 3)
    assert ok.variables["ROUTER_ACTION"] == "queue"
    await asyncio.sleep(0.05)
    assert h.server.header_errors >= 20
    for _r, w in stalled:
        w.close()


async def test_stalled_header_times_out(make_harness: Callable[..., object]) -> None:
    h: Harness = await make_harness(  # type: ignore[misc]
        server_config=AGIServerConfig(port=0, header_timeout=0.2)
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
    writer.write(b"agi_network: yes\n")
    assert await asyncio.wait_for(reader.read(), 2) == b""  # server closed it
    writer.close()
    assert h.server.header_errors == 1


async def test_overload_answer(make_harness: Callable[..., object]) -> None:
    h: Harness = await make_harness(server_config=AGIServerConfig(port=0, max_sessions=1))  # type: ignore[misc]
    slow = asyncio.create_task(h.call(FakeChannel(dtmf=["3", "1"], command_delay=0.3)))
    await asyncio.sleep(0.1)
    over = await h.call(FakeChannel(args=["attestation_droits"], uniqueid="over"))
    assert (over.variables["ROUTER_ACTION"], over.variables["ROUTER_REASON"]) == ("human", "overload")
    assert_done_last(over)
    first = await slow
    assert first.variables["ROUTER_ACTION"] == "deflect"
    assert h.server.overloads == 1


async def test_unknown_script_gets_the_fallback(make_harness: Callable[..., object]) -> None:
    h: Harness = await make_harness()  # type: ignore[misc]
    ch = await h.call(FakeChannel(script="nope"))
    assert ch.variables["ROUTER_REASON"] == "unknown_script"


async def test_concurrent_calls(make_harness: Callable[..., object]) -> None:
    h: Harness = await make_harness()  # type: ignore[misc]
    chans = [
        FakeChannel(callerid=f"06000000{i:02d}", uniqueid=f"c{i}", args=["carte_vitale_perdue"]) for i in range(100)
    ]
    done = await asyncio.gather(*(run_call("127.0.0.1", h.port, c) for c in chans))
    assert all(c.variables.get("ROUTER_DONE") == "1" for c in done)
    assert h.server.active == 0


async def test_sqlite_directory_end_to_end(
    make_harness: Callable[..., object], tmp_path: Path, pseudonymizer: Pseudonymizer
) -> None:
    csv = tmp_path / "accounts.csv"
    csv.write_text("number,last_login,flags\n06 11 22 33 44,2026-10-30,\n0655667788,2024-01-01,\n0699887766,,\n")
    db = tmp_path / "dir.sqlite3"
    import_csv(csv, db, pseudonymizer)
    directory = SQLiteDirectory(db, pseudonymizer)
    try:
        h: Harness = await make_harness(directory=directory)  # type: ignore[misc]
        got = {}
        for num in ("0611223344", "0655667788", "0699887766", "0600000000"):
            ch = await h.call(FakeChannel(callerid=num, args=["attestation_droits"]))
            got[num] = (ch.variables["ROUTER_ACTION"], ch.variables["ROUTER_REASON"].split(",")[0])
        assert got == {
            "0611223344": ("deflect", "segment.account_active"),
            "0655667788": ("queue", "segment.account_inactive"),
            "0699887766": ("queue", "segment.no_account"),
            "0600000000": ("queue", "segment.no_account"),
        }
    finally:
        await directory.close()


async def test_fake_asterisk_flags_pipelined_commands() -> None:
    """The guard above can fail: a handler that pipelines two commands is caught."""
    from agi_router.agi.session import AGISession

    async def pipelining(session: AGISession) -> None:
        session._writer.write(b'SET VARIABLE "A" "1"\nSET VARIABLE "B" "2"\n')
        await session._writer.drain()
        await asyncio.sleep(0.1)

    server = AGIServer({"3646": pipelining}, AGIServerConfig(port=0))
    await server.start()
    try:
        ch = await run_call("127.0.0.1", server.sockets[0][1], FakeChannel())
        assert ch.pipelined
    finally:
        await server.close()


async def test_sms_after_deflection_only_to_mobiles(
    mini_policy: Policy, mini_catalogue: Catalogue, pseudonymizer: Pseudonymizer
) -> None:
    import json

    import httpx

    from agi_router.sms import HTTPSmsGateway

    sent: list[dict[str, str]] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(202)

    fixed = AccountFacts(known=True, exists=True, last_login=date(2026, 10, 1))
    stub = StubDirectory({"+33612345678": fixed, "+33145678901": fixed})
    results: list[CallResult] = []
    sms = HTTPSmsGateway("http://sms.test/send", transport=httpx.MockTransport(gateway))
    flow = CallFlow(
        policy=PolicyHolder(mini_policy),
        directory=stub,
        memory=InMemoryCallerMemory(),
        pseudonymizer=pseudonymizer,
        capture=HintCapture(),
        clock=Clock(),
        on_result=results.append,
        sms=sms,
    )
    server = AGIServer({"3646": flow}, AGIServerConfig(port=0))
    await server.start()
    try:
        port = server.sockets[0][1]
        await run_call("127.0.0.1", port, FakeChannel(args=["attestation_droits"]))
        await run_call("127.0.0.1", port, FakeChannel(callerid="0145678901", args=["attestation_droits"]))
        await flow.drain()
        assert [r.decision.action.value for r in results if r.decision] == ["deflect", "deflect"]
        assert [r.sms for r in results] == ["sent", None]  # a landline gets no SMS, and none is announced
        assert [r.decision.sms_template is not None for r in results if r.decision] == [True, False]
        assert sent == [
            {
                "to": "+33612345678",
                "text": mini_catalogue.motives["attestation_droits"].sms,
                "reference": "1763900000.1",
            }
        ]
    finally:
        await server.close()
        await sms.close()


async def test_sms_gateway_down_does_not_touch_the_call(mini_policy: Policy, pseudonymizer: Pseudonymizer) -> None:
    import httpx

    from agi_router.sms import HTTPSmsGateway

    results: list[CallResult] = []
    sms = HTTPSmsGateway("http://sms.test/send", transport=httpx.MockTransport(lambda r: httpx.Response(503)))
    flow = CallFlow(
        policy=PolicyHolder(mini_policy),
        directory=StubDirectory({"+33612345678": ACTIVE}),
        memory=InMemoryCallerMemory(),
        pseudonymizer=pseudonymizer,
        capture=HintCapture(),
        clock=Clock(),
        on_result=results.append,
        sms=sms,
    )
    server = AGIServer({"3646": flow}, AGIServerConfig(port=0))
    await server.start()
    try:
        ch = await run_call("127.0.0.1", server.sockets[0][1], FakeChannel(args=["attestation_droits"]))
        await flow.drain()
        assert ch.variables["ROUTER_ACTION"] == "deflect" and ch.variables["ROUTER_DONE"] == "1"
        assert results[-1].sms == "failed"
    finally:
        await server.close()
        await sms.close()
