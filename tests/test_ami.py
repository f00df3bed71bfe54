"""The AMI client against a fake AMI server: login, correlation, event lists, storms, Ping watchdog,
disconnects, restarts, backoff."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import pytest

from agi_router.ami.client import AMIClient, AMIConfig, AMIState
from agi_router.ami.protocol import Message, MessageParser, encode_action
from agi_router.exceptions import AMIActionError, AMIConnectionError, AMIProtocolError, AMITimeout
from tests.conftest import eventually
from tests.fakeami import FakeAMI, encode, parse


@pytest.fixture
async def fake() -> AsyncIterator[FakeAMI]:
    f = FakeAMI()
    await f.start()
    yield f
    await f.stop()


def config(fake: FakeAMI, **kw: float | str) -> AMIConfig:
    base = {
        "port": fake.port,
        "secret": fake.secret,
        "ping_interval": 5.0,
        "backoff_initial": 0.05,
        "backoff_max": 0.2,
        "action_timeout": 1.0,
    }
    base.update(kw)
    return AMIConfig(**base)  # type: ignore[arg-type]


@pytest.fixture
async def client(fake: FakeAMI) -> AsyncIterator[AMIClient]:
    c = AMIClient(config(fake), rng=random.Random(1))
    await c.start()
    assert await c.wait_connected(2)
    yield c
    await c.close()


# -- wire format ------------------------------------------------------------------------------------


def test_parser_banner_messages_repeated_keys() -> None:
    p = MessageParser()
    out = p.feed(b"Asterisk Call Manager/11.0.0\r\nResponse: Success\r\nActionID: 1\r\n")
    assert out == [] and p.banner == "Asterisk Call Manager/11.0.0"
    out = p.feed(
        b"Message: ok\r\n\r\nEvent: VarSet\r\nChannel: UnicastRTP/127.0.0.1:30000-0000001\r\n"
        b"Variable: UNICASTRTP_LOCAL_PORT\r\nValue: 14562\r\n\r\nResponse: Success\r\nOutput: a\r\n"
        b"Output: b: c\r\n\r\n"
    )
    assert [m.event or m.response for m in out] == ["Success", "VarSet", "Success"]
    assert out[1]["value"] == "14562" and out[1]["VARIABLE"] == "UNICASTRTP_LOCAL_PORT"
    assert out[2].getall("Output") == ["a", "b: c"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n", "not an AMI server"),
        (b"x" * 2000, "no AMI banner"),
    ],
)
def test_parser_refuses_non_ami(data: bytes, message: str) -> None:
    with pytest.raises(AMIProtocolError, match=message):
        MessageParser().feed(data)


def test_parser_refuses_oversized_message() -> None:
    p = MessageParser(max_bytes=1000)
    p.feed(b"Asterisk Call Manager/11.0.0\r\n")
    with pytest.raises(AMIProtocolError, match="larger than 1000"):
        p.feed(b"Event: X\r\n" + b"Key: value\r\n" * 200)


def test_encode_action() -> None:
    assert encode_action("Originate", [("Channel", "Local/1@x"), ("Variable", "A=1"), ("Variable", "B=2")]) == (
        b"Action: Originate\r\nChannel: Local/1@x\r\nVariable: A=1\r\nVariable: B=2\r\n\r\n"
    )
    with pytest.raises(ValueError, match="line break"):
        encode_action("Setvar", {"Value": "a\r\nAction: Hangup"})


# -- client -------------------------------------------------------------------------------------------


async def test_login_and_ping(client: AMIClient, fake: FakeAMI) -> None:
    assert client.state is AMIState.CONNECTED and client.banner == "Asterisk Call Manager/11.0.0"
    r = await client.action("Ping")
    assert r.response["Ping"] == "Pong"
    login = fake.actions[0]
    assert login["Action"] == "Login" and login["Username"] == "agi-router" and login["Events"] == "on"


async def test_action_error_is_typed(client: AMIClient) -> None:
    with pytest.raises(AMIActionError, match="Invalid/unknown command") as info:
        await client.action("NoSuchAction")
    assert info.value.action == "NoSuchAction"


async def test_event_list_is_collected(client: AMIClient, fake: FakeAMI) -> None:
    fake.queue_status = [
        {"Event": "QueueParams", "Queue": "droits", "Max": "0", "Calls": "2", "Holdtime": "30"},
        {"Event": "QueueMember", "Queue": "droits", "Name": "Agent 2", "Status": "1", "Paused": "0"},
        {"Event": "QueueEntry", "Queue": "droits", "Position": "1", "Wait": "42"},
    ]
    seen: list[Message] = []
    client.on("QueueParams", seen.append)
    r = await client.action("QueueStatus")
    assert [e.event for e in r.events] == ["QueueParams", "QueueMember", "QueueEntry"]
    assert r.events[2]["Wait"] == "42"
    assert seen == []  # list members go to the action, not to subscribers


async def test_concurrent_actions_are_correlated(client: AMIClient) -> None:
    results = await asyncio.gather(*(client.action("Ping") for _ in range(50)))
    assert len({r.response.action_id for r in results}) == 50


async def test_an_event_with_a_response_field_is_an_event(client: AMIClient, fake: FakeAMI) -> None:
    """Found on a real Asterisk 22: ChallengeResponseFailed carries the phone's digest in a "Response" field;
    it was taken for an action's response and dropped (no failed authentication was ever counted)."""
    got: list[str] = []
    client.on("ChallengeResponseFailed", lambda m: got.append(m["AccountID"]))
    event = [("Event", "ChallengeResponseFailed"), ("Privilege", "security,all"), ("Service", "PJSIP"),
             ("AccountID", "agent1"), ("Challenge", "1796/28ce"), ("Response", "5d3c0f0e"),
             ("ExpectedResponse", "")]  # fmt: skip
    fake.writers[0].write(encode(event))
    assert await eventually(lambda: got == ["agent1"])
    assert (await client.action("Ping")).response["Ping"] == "Pong"  # real responses still correlate


async def test_event_storm(client: AMIClient, fake: FakeAMI) -> None:
    got: list[str] = []
    client.on("Newexten", lambda m: got.append(m["Seq"]))
    boom: list[str] = []

    def broken(m: Message) -> None:
        boom.append("x")
        raise RuntimeError("subscriber bug")

    client.on("*", broken)
    payload = b"".join(encode([("Event", "Newexten"), ("Seq", str(i))]) for i in range(5000))
    fake.writers[0].write(payload)
    assert await eventually(lambda: len(got) == 5000)
    assert got == [str(i) for i in range(5000)]
    assert len(boom) >= 5000  # a failing subscriber does not stop the others or the reader
    assert (await client.action("Ping")).response["Ping"] == "Pong"


async def test_login_refused(fake: FakeAMI) -> None:
    c = AMIClient(config(fake, secret="wrong"))
    await c.start()
    try:
        assert not await c.wait_connected(0.5)
        assert c.last_error is not None and "refused" in c.last_error
        with pytest.raises(AMIConnectionError, match="not connected"):
            await c.action("Ping")
        assert fake.connections >= 2  # it keeps trying, with backoff
    finally:
        await c.close()


async def test_fail_fast_while_down() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = AMIClient(AMIConfig(port=port, backoff_initial=0.05, backoff_max=0.1))
    await c.start()
    try:
        await asyncio.sleep(0.2)
        t = time.perf_counter()
        with pytest.raises(AMIConnectionError):
            await c.action("Ping")
        assert time.perf_counter() - t < 0.5  # no connect attempt, no wait
        assert c.reconnects >= 2
    finally:
        await c.close()


async def test_half_open_connection_detected_by_ping(fake: FakeAMI) -> None:
    c = AMIClient(config(fake, ping_interval=0.1))
    states: list[AMIState] = []
    c.on_state(states.append)
    await c.start()
    try:
        assert await c.wait_connected(1)
        fake.answer_pings = False  # TCP stays up, Asterisk is gone
        t = time.perf_counter()
        assert await eventually(lambda: c.state is not AMIState.CONNECTED)
        assert 0.2 <= time.perf_counter() - t <= 2.0  # interval + 2 x interval, roughly
        assert "half-open" in (c.last_error or "")
        fake.answer_pings = True
        assert await c.wait_connected(2)
        assert states.count(AMIState.CONNECTED) == 2
    finally:
        await c.close()


async def test_disconnect_mid_event_list_fails_the_action_and_reconnects(client: AMIClient, fake: FakeAMI) -> None:
    fake.queue_status = [{"Event": "QueueParams", "Queue": f"q{i}"} for i in range(10)]
    fake.cut_queue_status_after = 4
    with pytest.raises(AMIConnectionError, match="lost"):
        await client.action("QueueStatus")
    fake.cut_queue_status_after = None
    assert await eventually(lambda: client.reconnects >= 1 and client.state is AMIState.CONNECTED)
    assert fake.connections == 2
    r = await client.action("QueueStatus")
    assert len(r.events) == 10


async def test_asterisk_restart_resyncs(fake: FakeAMI) -> None:
    c = AMIClient(config(fake))
    resyncs: list[int] = []

    async def resync(cl: AMIClient) -> None:
        r = await cl.action("QueueStatus")
        resyncs.append(len(r.events))

    c.on_connected(resync)
    await c.start()
    try:
        assert await c.wait_connected(1)
        assert await eventually(lambda: bool(resyncs))
        fake.queue_status = [{"Event": "QueueParams", "Queue": "droits"}]
        await fake.restart()
        await asyncio.sleep(0.05)
        assert await c.wait_connected(2)
        assert await eventually(lambda: len(resyncs) == 2)
        assert resyncs == [0, 1]
    finally:
        await c.close()


async def test_action_timeout(client: AMIClient, fake: FakeAMI) -> None:
    fake.on_action = lambda m: [] if m.get("Action") == "Status" else None  # swallow it
    with pytest.raises(AMITimeout, match="Status"):
        await client.action("Status", timeout=0.1)
    assert (await client.action("Ping")).response["Ping"] == "Pong"  # late or missing answers do not shift


def test_backoff_is_capped_with_jitter() -> None:
    c = AMIClient(AMIConfig(backoff_initial=0.5, backoff_max=30.0), rng=random.Random(7))
    delays = [c.backoff(a) for a in range(12)]
    assert all(0.25 <= d <= 30.0 for d in delays)
    assert max(delays[8:]) > 5  # grows
    assert len({round(d, 3) for d in delays}) == len(delays)  # jittered


async def test_a_refused_login_is_reported_as_refused_even_when_the_close_comes_with_it() -> None:
    """Asterisk answers a bad login with an Error and closes the socket at once: when the Error and the end of
    the stream arrive in one read, the reader ends before the login task has seen its answer. The client must
    still say "refused" (what to fix: the secret), not "connection closed"."""

    async def pbx(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        login = parse((await reader.readuntil(b"\r\n\r\n")).rstrip(b"\r\n"))
        refusal = [("Response", "Error"), ("ActionID", login["ActionID"]), ("Message", "Authentication failed")]
        writer.write(encode(refusal))
        writer.close()  # the Error and the FIN leave together

    server = await asyncio.start_server(pbx, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    errors = []
    try:
        for _ in range(20):
            c = AMIClient(AMIConfig(port=port, secret="wrong", backoff_initial=5.0, backoff_max=5.0))
            await c.start()
            try:
                assert await eventually(lambda c=c: c.last_error is not None, timeout=5)  # type: ignore[misc]
                errors.append(c.last_error)
            finally:
                await c.close()
    finally:
        server.close()
        await server.wait_closed()
    assert all("refused" in (e or "") for e in errors), errors
