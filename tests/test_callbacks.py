"""Callbacks: durable store (restart, encryption at rest), the offer in the AGI session, the placer over AMI."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from agi_router.agi.server import AGIServer, AGIServerConfig
from agi_router.agi.session import AGISession
from agi_router.ami.client import AMIClient, AMIConfig
from agi_router.callbacks.placer import CallbackPlacer, PlacerConfig
from agi_router.callbacks.redis_store import RedisCallbackStore
from agi_router.callbacks.store import CallbackRecords, CallbackStore
from agi_router.callflow.capture import CallContext, HintCapture
from agi_router.callflow.flow import CallFlow, CallResult, PolicyHolder
from agi_router.policy.config import Policy
from agi_router.policy.model import AccountFacts, MotiveFacts, QueueSnapshot
from agi_router.privacy import Pseudonymizer
from agi_router.state.memory import InMemoryCallerMemory
from tests.doubles import StubDirectory
from tests.fakeami import FakeAMI, encode
from tests.fakeasterisk import FakeChannel, run_call

KEY = b"callback-test-key-0123456789"


def test_store_survives_a_restart_and_encrypts_the_number(tmp_path: Path) -> None:
    db = tmp_path / "cb.sqlite3"
    s = CallbackStore(db, KEY)
    cid = s.add(call_id="1.1", caller="c-abc", number="+33612345678", queue="droits", motive="m", now=100.0)
    assert s.add(call_id="1.2", caller="c-abc", number="+33612345678", queue="droits", motive="m", now=101.0) == cid
    assert s.mark_placing(cid)
    s.close()  # the router dies while placing
    raw = db.read_bytes() + (
        db.with_name("cb.sqlite3-wal").read_bytes() if db.with_name("cb.sqlite3-wal").exists() else b""
    )
    assert b"612345678" not in raw
    s = CallbackStore(db, KEY)
    assert s.recovered == 1
    (cb,) = s.due(200.0)
    assert (cb.number, cb.queue, cb.status, cb.attempts) == ("+33612345678", "droits", "pending", 1)
    s.mark_placed(cid)
    assert s.get(cid).number == "" and s.count("placed") == 1  # type: ignore[union-attr]
    s.close()


def test_retry_then_fail_and_expiry(tmp_path: Path) -> None:
    s = CallbackStore(tmp_path / "cb.sqlite3", KEY)
    a = s.add(call_id="1", caller="c-a", number="+33611111111", queue="droits", motive="", now=0.0)
    b = s.add(call_id="2", caller="c-b", number="+33622222222", queue="droits", motive="", now=0.0)
    s.mark_placing(a)
    s.mark_failed(a, "no answer", retry_at=500.0)
    assert [c.id for c in s.due(100.0)] == [b]
    assert {c.id for c in s.due(600.0)} == {a, b}
    s.mark_placing(a)
    s.mark_failed(a, "no answer", retry_at=None)
    assert s.count("failed") == 1 and s.get(a).number == ""  # type: ignore[union-attr]
    assert s.expire(older_than=10.0) == 1 and s.count("expired") == 1
    c = s.add(call_id="3", caller="c-c", number="+33633333333", queue="droits", motive="", now=20.0)
    assert s.mark_placing(c)
    s.mark_failed(c, "AMI connection lost", retry_at=50.0, counted=False)  # the PBX was lost, not the caller
    assert (s.get(c).status, s.get(c).attempts) == ("pending", 0)  # type: ignore[union-attr]
    s.close()


SPOKE_AT: list[float] = []


class SpokenHint(HintCapture):
    """The hint, as if the caller had just said it (end of speech now, 550 ms after the last voiced audio)."""

    async def capture(self, session: AGISession, call: CallContext) -> MotiveFacts | None:
        SPOKE_AT[:] = [time.monotonic()]
        call.ended_speaking(SPOKE_AT[0], 0.55)
        return await super().capture(session, call)


async def test_offer_accepted_and_declined_in_the_agi_session(
    tmp_path: Path, mini_policy: Policy, pseudonymizer: Pseudonymizer
) -> None:
    store = CallbackStore(tmp_path / "cb.sqlite3", KEY)
    results: list[CallResult] = []
    full = QueueSnapshot("droits", waiting=50, available_agents=0, logged_in_agents=2)
    flow = CallFlow(
        policy=PolicyHolder(mini_policy),
        directory=StubDirectory(everyone=AccountFacts(True, True, date(2026, 11, 1))),
        memory=InMemoryCallerMemory(),
        pseudonymizer=pseudonymizer,
        capture=SpokenHint(),
        clock=lambda: datetime(2026, 11, 24, 10, 0, tzinfo=UTC),
        queue_state=lambda q: full,
        callbacks=store,
        on_result=results.append,
    )
    server = AGIServer({"3646": flow}, AGIServerConfig(port=0))
    await server.start()
    try:
        port = server.sockets[0][1]
        yes = await run_call("127.0.0.1", port, FakeChannel(args=["carte_vitale_perdue"], dtmf=["1"]))
        assert 'STREAM FILE "router/saturated" ""' in yes.commands
        assert 'GET DATA "router/callback-offer" "6000" "1"' in yes.commands
        assert (yes.variables["ROUTER_ACTION"], yes.variables["ROUTER_PROMPTS"]) == (
            "callback",
            "router/callback-confirmed",
        )
        assert "callback.accepted" in yes.variables["ROUTER_REASON"]
        # the caller's wait ended when the router answered with the offer, not when they answered it
        offered = results[0]
        assert offered.responded_at is not None and offered.speech_to_route_s is not None
        assert offered.speech_to_route_s == pytest.approx(offered.responded_at - SPOKE_AT[0], abs=1e-6)
        assert offered.voice_to_route_s == pytest.approx(offered.speech_to_route_s + 0.55, abs=1e-6)
        (cb,) = store.due(10**10)
        assert (cb.number, cb.queue, cb.motive) == ("+33612345678", "droits", "carte_vitale_perdue")
        no = await run_call(
            "127.0.0.1", port, FakeChannel(callerid="0622222222", args=["carte_vitale_perdue"], dtmf=[""])
        )
        assert (no.variables["ROUTER_ACTION"], no.variables["ROUTER_PROMPTS"]) == ("queue", "")
        withheld = await run_call("127.0.0.1", port, FakeChannel(callerid="anonymous", args=["carte_vitale_perdue"]))
        assert not any("callback-offer" in c for c in withheld.commands)  # no number to call back: no offer
        assert withheld.variables["ROUTER_ACTION"] == "dissuade"
    finally:
        await server.close()
        store.close()


@dataclass
class PlacerRig:
    placer: CallbackPlacer
    store: CallbackRecords
    originates: list[dict[str, str]]
    outcome: dict[str, bool]
    snapshot: dict[str, QueueSnapshot]
    now: list[float]
    opened: list[bool]
    ami: AMIClient


@pytest.fixture(params=["sqlite", "redis"])
async def rig(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[PlacerRig]:
    fake = FakeAMI()
    originates: list[dict[str, str]] = []
    outcome = {"ok": True}

    def on_action(msg: dict[str, str]) -> list[bytes] | None:
        if msg.get("Action") != "Originate":
            return None
        originates.append(msg)
        if outcome["ok"]:
            return [
                encode(
                    [
                        ("Response", "Success"),
                        ("ActionID", msg["ActionID"]),
                        ("Message", "Originate successfully queued"),
                    ]
                )
            ]
        return [encode([("Response", "Error"), ("ActionID", msg["ActionID"]), ("Message", "Originate failed")])]

    fake.on_action = on_action
    await fake.start()
    ami = AMIClient(AMIConfig(port=fake.port, secret=fake.secret))
    await ami.start()
    assert await ami.wait_connected(2)
    store: CallbackRecords
    if request.param == "redis":
        url = request.getfixturevalue("redis_server")
        store = RedisCallbackStore(KEY, url, prefix=f"rig:{tmp_path.name}:")
    else:
        store = CallbackStore(tmp_path / "cb.sqlite3", KEY)
    snapshot = {"droits": QueueSnapshot("droits", available_agents=1)}
    now = [1000.0]
    opened = [True]
    placer = CallbackPlacer(
        store,
        ami,
        lambda q: snapshot.get(q, QueueSnapshot(q, fresh=False)),
        lambda dt: opened[0],
        PlacerConfig(max_attempts=2, retry_s=60),
        clock=lambda: now[0],
    )
    yield PlacerRig(placer, store, originates, outcome, snapshot, now, opened, ami)
    await ami.close()
    await fake.stop()
    store.close()


async def test_placer_places_when_an_agent_is_free(rig: PlacerRig) -> None:
    placer, store = rig.placer, rig.store
    store.add(call_id="1", caller="c-a", number="+33612345678", queue="droits", motive="", now=900.0)
    store.add(call_id="2", caller="c-b", number="+33622222222", queue="droits", motive="", now=950.0)
    assert await placer.run_once() == 1  # one free agent: one callback
    assert rig.originates[0]["Channel"] == "Local/+33612345678@callback-out"
    assert rig.originates[0]["Context"] == "callback-connect" and rig.originates[0]["Async"] == "false"
    assert store.count("placed") == 1 and store.count("pending") == 1
    rig.snapshot["droits"] = QueueSnapshot("droits", available_agents=0)
    assert await placer.run_once() == 0  # nobody free: it waits
    rig.snapshot["droits"] = QueueSnapshot("droits", available_agents=3, fresh=False)
    assert await placer.run_once() == 0  # stale data: it waits
    rig.opened[0] = False
    rig.snapshot["droits"] = QueueSnapshot("droits", available_agents=3)
    assert await placer.run_once() == 0  # closed: it waits


async def test_placer_retries_then_gives_up(rig: PlacerRig) -> None:
    placer, store = rig.placer, rig.store
    rig.outcome["ok"] = False
    cid = store.add(call_id="1", caller="c-a", number="+33612345678", queue="droits", motive="", now=900.0)
    assert await placer.run_once() == 1
    assert store.count("pending") == 1 and "Originate failed" in store.get(cid).last_error  # type: ignore[union-attr]
    assert await placer.run_once() == 0  # not before retry_s
    rig.now[0] += 61
    assert await placer.run_once() == 1
    assert store.count("failed") == 1 and placer.failed == 1


async def test_placer_waits_while_ami_is_down(rig: PlacerRig) -> None:
    placer, store = rig.placer, rig.store
    store.add(call_id="1", caller="c-a", number="+33612345678", queue="droits", motive="", now=900.0)
    await rig.ami.close()
    assert await placer.run_once() == 0 and store.count("pending") == 1
