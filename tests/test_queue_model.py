"""The live queue model: resync from a real Asterisk 22 QueueStatus, events, snapshots, fail-open,
and saturation reaching the policy as a dissuasion through FastAGI."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from agi_router.agi.server import AGIServer, AGIServerConfig
from agi_router.ami.client import AMIClient, AMIConfig
from agi_router.ami.protocol import Message, MessageParser
from agi_router.callflow.capture import HintCapture
from agi_router.callflow.flow import CallFlow, PolicyHolder
from agi_router.policy.config import Policy
from agi_router.policy.model import AccountFacts
from agi_router.privacy import Pseudonymizer
from agi_router.queues.model import QueueModel
from agi_router.state.memory import InMemoryCallerMemory
from tests.conftest import eventually
from tests.doubles import StubDirectory
from tests.fakeami import FakeAMI
from tests.fakeasterisk import FakeChannel, run_call
from tests.test_ami_recorded import recorded


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def msg(**kw: str) -> Message:
    return Message(list(kw.items()))


def real_queue_status() -> list[Message]:
    _banner, answers = recorded()
    p = MessageParser()
    p.feed(b"Asterisk Call Manager/11.0.0\r\n")
    return [m for m in p.feed(answers["QueueStatus"].replace(b"\n", b"\r\n")) if m.event and "Complete" not in m.event]


def test_resync_from_a_real_queuestatus() -> None:
    model = QueueModel(clock=Clock())
    model.load_status(real_queue_status())
    snap = model.snapshot("droits")
    assert snap.fresh and (snap.waiting, snap.logged_in_agents, snap.available_agents) == (0, 0, 0)
    assert set(model.queues["droits"].members) == {"PJSIP/agent2", "PJSIP/agent3"}


def test_events_keep_the_model_current() -> None:
    clock = Clock()
    model = QueueModel(clock=clock, default_talk_s=300)
    model.load_status(real_queue_status())
    model.on_member(
        msg(
            Event="QueueMemberStatus", Queue="droits", StateInterface="PJSIP/agent2", Status="1", Paused="0", InCall="0"
        )
    )
    snap = model.snapshot("droits")
    assert (snap.logged_in_agents, snap.available_agents, snap.estimated_wait_s) == (1, 1, 0.0)
    for i in range(3):
        model.on_join(msg(Event="QueueCallerJoin", Queue="droits", Uniqueid=f"u{i}", Position=str(i + 1)))
        clock.t += 10
    snap = model.snapshot("droits")
    assert snap.waiting == 3 and snap.longest_wait_s == 30.0
    assert snap.estimated_wait_s == pytest.approx(3 * 300 / 1)
    model.on_agent_connect(
        msg(Event="AgentConnect", Queue="droits", Uniqueid="u0", Interface="PJSIP/agent2", HoldTime="30")
    )
    model.on_abandon(msg(Event="QueueCallerAbandon", Queue="droits", Uniqueid="u1"))
    snap = model.snapshot("droits")
    assert (snap.waiting, snap.available_agents) == (1, 0)
    model.on_agent_complete(
        msg(Event="AgentComplete", Queue="droits", Interface="PJSIP/agent2", TalkTime="120", HoldTime="30")
    )
    assert model.queues["droits"].talk_time_s == 120 and model.queues["droits"].abandoned == 1
    model.on_leave(msg(Event="QueueCallerLeave", Queue="droits", Uniqueid="u2"))
    assert model.snapshot("droits").waiting == 0


def test_unknown_queue_and_stale_data_are_not_fresh() -> None:
    model = QueueModel()
    assert model.snapshot("nope").fresh is False
    model.load_status(real_queue_status())
    model.synced = False  # what an AMI disconnection does
    assert model.snapshot("droits").fresh is False


async def test_resync_on_connect_and_stale_on_disconnect() -> None:
    fake = FakeAMI(
        queue_status=[
            {"Event": "QueueParams", "Queue": "droits", "TalkTime": "200"},
            {
                "Event": "QueueMember",
                "Queue": "droits",
                "Location": "PJSIP/agent2",
                "StateInterface": "PJSIP/agent2",
                "Status": "1",
                "Paused": "0",
                "InCall": "0",
            },
        ]
    )
    await fake.start()
    ami = AMIClient(AMIConfig(port=fake.port, secret=fake.secret, backoff_initial=0.05, backoff_max=0.1))
    model = QueueModel()
    model.attach(ami)
    try:
        await ami.start()
        assert await eventually(lambda: model.synced)
        assert model.snapshot("droits").available_agents == 1
        await fake.broadcast([("Event", "QueueCallerJoin"), ("Queue", "droits"), ("Uniqueid", "x1")])
        assert await eventually(lambda: model.snapshot("droits").waiting == 1)
        await fake.stop()
        assert await eventually(lambda: not model.synced)
        assert model.snapshot("droits").fresh is False  # fail open while AMI is down
    finally:
        await ami.close()
        await fake.stop()


def _hint_flow(model: QueueModel, policy: Policy, pseudonymizer: Pseudonymizer) -> CallFlow:
    """A call flow whose motive comes from the dialplan hint and whose queue data from ``model``."""
    return CallFlow(
        policy=PolicyHolder(policy),
        directory=StubDirectory(everyone=AccountFacts(True, True, date(2026, 11, 1))),
        memory=InMemoryCallerMemory(),
        pseudonymizer=pseudonymizer,
        capture=HintCapture(),
        queue_state=model.snapshot,
        clock=lambda: datetime(2026, 11, 24, 10, 0, tzinfo=UTC),
    )


async def test_saturated_queue_dissuades_through_fastagi(mini_policy: Policy, pseudonymizer: Pseudonymizer) -> None:
    model = QueueModel()
    model.load_status(
        [
            msg(Event="QueueParams", Queue="droits", TalkTime="300"),
            msg(Event="QueueMember", Queue="droits", Name="Agent 1", Interface="PJSIP/agent1", Status="2", Paused="0"),
        ]
    )
    for i in range(45):
        model.on_join(msg(Event="QueueCallerJoin", Queue="droits", Uniqueid=f"w{i}"))

    server = AGIServer({"3646": _hint_flow(model, mini_policy, pseudonymizer)}, AGIServerConfig(port=0))
    await server.start()
    try:
        port = server.sockets[0][1]
        ch = await run_call("127.0.0.1", port, FakeChannel(args=["carte_vitale_perdue"]))
        # no callback store in this flow: dissuasion without an offer (test_callbacks.py covers the offer)
        assert (ch.variables["ROUTER_ACTION"], ch.variables["ROUTER_CALLBACK_OFFER"]) == ("dissuade", "0")
        model.synced = False  # AMI lost: the same queue no longer dissuades
        ch = await run_call("127.0.0.1", port, FakeChannel(args=["carte_vitale_perdue"], uniqueid="2"))
        assert ch.variables["ROUTER_ACTION"] == "queue"
    finally:
        await server.close()


async def test_queue_with_no_agent_logged_in_through_fastagi(mini_policy: Policy, pseudonymizer: Pseudonymizer) -> None:
    """Issue #9: fresh AMI data, nobody logged in to the skill queue and nobody waiting. Before, the
    estimated wait was infinite and every caller was dissuaded and offered a callback nobody could take;
    now: the reception queue, no saturation message, no callback offer."""
    model = QueueModel()
    model.load_status(
        [
            msg(Event="QueueParams", Queue="droits", TalkTime="300"),
            msg(Event="QueueMember", Queue="droits", Name="Agent 2", Interface="PJSIP/agent2", Status="5", Paused="0"),
            msg(Event="QueueParams", Queue="accueil", TalkTime="300"),
            msg(Event="QueueMember", Queue="accueil", Name="Agent 1", Interface="PJSIP/agent1", Status="1", Paused="0"),
        ]
    )
    assert model.snapshot("droits").logged_in_agents == 0 and model.snapshot("accueil").logged_in_agents == 1
    server = AGIServer({"3646": _hint_flow(model, mini_policy, pseudonymizer)}, AGIServerConfig(port=0))
    await server.start()
    try:
        ch = await run_call("127.0.0.1", server.sockets[0][1], FakeChannel(args=["carte_vitale_perdue"]))
    finally:
        await server.close()
    v = ch.variables
    assert (v["ROUTER_ACTION"], v["ROUTER_QUEUE"], v["ROUTER_RULE"]) == ("queue", "accueil", "queue.unstaffed")
    assert (v["ROUTER_PROMPTS"], v["ROUTER_CALLBACK_OFFER"]) == ("", "0")
    assert not any("callback-offer" in c for c in ch.commands)


async def test_event_during_resync_is_not_lost() -> None:
    """Found on a real Asterisk 22: a QueueMemberAdded arriving while QueueStatus is in flight was
    overwritten by the (older) QueueStatus answer."""
    from tests.fakeami import encode

    fake = FakeAMI()

    def on_action(m: dict[str, str]) -> list[bytes] | None:
        if m.get("Action") != "QueueStatus":
            return None
        aid = m["ActionID"]
        return [
            encode(
                [
                    ("Event", "QueueMemberAdded"),
                    ("Queue", "droits"),
                    ("StateInterface", "Local/a9@x"),
                    ("Status", "1"),
                    ("Paused", "0"),
                    ("InCall", "0"),
                ]
            ),
            encode([("Response", "Success"), ("ActionID", aid), ("EventList", "start")]),
            encode([("Event", "QueueParams"), ("Queue", "droits"), ("ActionID", aid)]),
            encode([("Event", "QueueStatusComplete"), ("ActionID", aid), ("EventList", "Complete")]),
        ]

    fake.on_action = on_action
    await fake.start()
    ami = AMIClient(AMIConfig(port=fake.port, secret=fake.secret))
    model = QueueModel()
    model.attach(ami)
    try:
        await ami.start()
        assert await eventually(lambda: model.synced)
        assert model.snapshot("droits").available_agents == 1
    finally:
        await ami.close()
        await fake.stop()


async def test_a_refused_resync_is_tried_again_while_connected() -> None:
    """Found on a real Asterisk 22: logins are accepted while modules still load, and QueueStatus is an unknown
    command until app_queue is loaded. The model must not stay stale until the next reconnection."""
    from tests.fakeami import encode

    fake = FakeAMI(queue_status=[{"Event": "QueueParams", "Queue": "droits"}])
    refusals = [2]

    def on_action(m: dict[str, str]) -> list[bytes] | None:
        if m.get("Action") != "QueueStatus" or refusals[0] == 0:
            return None
        refusals[0] -= 1
        return [encode([("Response", "Error"), ("ActionID", m["ActionID"]), ("Message", "Invalid/unknown command")])]

    fake.on_action = on_action
    await fake.start()
    ami = AMIClient(AMIConfig(port=fake.port, secret=fake.secret))
    model = QueueModel()
    model.retry_initial_s = 0.05
    model.attach(ami)
    try:
        await ami.start()
        assert await eventually(lambda: model.synced, 5)
        assert refusals == [0] and sum(a.get("Action") == "QueueStatus" for a in fake.actions) == 3
        assert model.snapshot("droits").fresh
    finally:
        await ami.close()
        await fake.stop()
