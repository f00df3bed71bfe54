"""Callbacks shared by several routers through Redis (callbacks/redis_store.py), against a real redis-server:
encrypted at rest, at most one router rings a caller, a router that dies mid-placement hands its callback
over when its lease runs out, a router that dies after accepting leaves it to a survivor."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import redis

from agi_router.callbacks.redis_store import RedisCallbackStore
from agi_router.exceptions import StateStoreError
from tests.conftest import _free_port
from tests.fakeasterisk import FakeChannel

KEY = b"callback-test-key-0123456789"
NUMBER = "+33612345678"


@pytest.fixture
def prefix(tmp_path: Path) -> str:
    return f"t:{tmp_path.name}:"


def _router(url: str, prefix: str, **kw: float) -> RedisCallbackStore:
    return RedisCallbackStore(KEY, url, prefix=prefix, timeout=1.0, **kw)


def test_the_number_is_sealed_and_wiped_once_placed(redis_server: str, prefix: str) -> None:
    a = _router(redis_server, prefix)
    cid = a.add(call_id="1.1", caller="c-abc", number=NUMBER, queue="droits", motive="m", now=100.0)
    assert a.add(call_id="1.2", caller="c-abc", number=NUMBER, queue="droits", motive="m", now=101.0) == cid
    raw = redis.Redis.from_url(redis_server)
    dump = b"".join(str(raw.hgetall(k)).encode() for k in raw.scan_iter(f"{prefix}*") if raw.type(k) == b"hash")
    assert b"612345678" not in dump and b"c-abc" in dump
    assert a.get(cid).number == NUMBER  # type: ignore[union-attr]
    assert a.mark_placing(cid, 200.0)
    a.mark_placed(cid)
    cb = a.get(cid)
    assert cb is not None and (cb.status, cb.number) == ("placed", "")
    assert raw.pttl(f"{prefix}cb:{cid}") > 0  # done callbacks are kept for a while, then go
    # the caller may ask again once the first one is done
    assert a.add(call_id="1.3", caller="c-abc", number=NUMBER, queue="droits", motive="m", now=300.0) != cid


def test_two_routers_never_claim_the_same_callback(redis_server: str, prefix: str) -> None:
    routers = [_router(redis_server, prefix) for _ in range(4)]
    ids = [routers[0].add(call_id=str(i), caller=f"c-{i}", number=NUMBER, queue="q", motive="", now=0.0)
           for i in range(50)]  # fmt: skip
    won: list[list[int]] = [[] for _ in routers]
    go = threading.Barrier(len(routers))

    def claim(n: int) -> None:
        go.wait()
        for cid in ids:
            if routers[n].mark_placing(cid, 10.0):
                won[n].append(cid)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(len(routers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [c for w in won for c in w]
    assert sorted(claimed) == sorted(ids)  # every callback claimed exactly once
    assert routers[1].due(20.0) == [] and routers[1].count("placing") == 50


def test_a_router_that_dies_while_placing_hands_over_when_its_lease_ends(redis_server: str, prefix: str) -> None:
    a, b = _router(redis_server, prefix, lease_s=120.0), _router(redis_server, prefix, lease_s=120.0)
    cid = a.add(call_id="9.1", caller="c-x", number=NUMBER, queue="droits", motive="", now=1000.0)
    assert a.mark_placing(cid, 1000.0)
    a.close()  # router A is killed mid-Originate: it never says placed or failed
    assert b.due(1100.0) == []  # its lease still runs: B must not ring the caller as well
    (cb,) = b.due(1121.0)
    assert (cb.id, cb.status, cb.attempts, cb.number) == (cid, "pending", 1, NUMBER)
    assert b.mark_placing(cid, 1121.0) and not b.mark_placing(cid, 1121.0)


def test_retry_fail_and_expiry_keep_the_indexes_right(redis_server: str, prefix: str) -> None:
    s = _router(redis_server, prefix)
    a = s.add(call_id="1", caller="c-a", number="+33611111111", queue="droits", motive="", now=0.0)
    b = s.add(call_id="2", caller="c-b", number="+33622222222", queue="droits", motive="", now=0.0)
    assert s.mark_placing(a, 0.0)
    s.mark_failed(a, "no answer", retry_at=500.0)
    assert [c.id for c in s.due(100.0)] == [b]
    assert {c.id for c in s.due(600.0)} == {a, b}
    assert s.mark_placing(a, 600.0)
    s.mark_failed(a, "no answer", retry_at=None)
    assert s.count("failed") == 1 and s.get(a).number == ""  # type: ignore[union-attr]
    assert s.expire(older_than=10.0) == 1 and s.count("expired") == 1 and s.count("pending") == 0


def test_redis_down_is_a_state_store_error_within_the_budget() -> None:
    s = RedisCallbackStore(KEY, f"redis://127.0.0.1:{_free_port()}/0", timeout=0.2)
    t0 = time.monotonic()
    with pytest.raises(StateStoreError, match="callback store \\(Redis\\) could not record a callback"):
        s.add(call_id="1", caller="c", number=NUMBER, queue="q", motive="", now=0.0)
    assert time.monotonic() - t0 < 2.0


async def _accept_callback_on_a_saturated_queue(store: object, policy: object, pseudonymizer: object) -> FakeChannel:
    """One caller on a saturated skill queue presses 1 at the callback offer; ``store`` records (or not)."""
    from datetime import UTC, date, datetime

    from agi_router.agi.server import AGIServer, AGIServerConfig
    from agi_router.callflow.capture import HintCapture
    from agi_router.callflow.flow import CallFlow, PolicyHolder
    from agi_router.policy.model import AccountFacts, QueueSnapshot
    from agi_router.state.memory import InMemoryCallerMemory
    from tests.doubles import StubDirectory
    from tests.fakeasterisk import run_call

    full = QueueSnapshot("droits", waiting=50, available_agents=0, logged_in_agents=2)
    flow = CallFlow(
        policy=PolicyHolder(policy),  # type: ignore[arg-type]
        directory=StubDirectory(everyone=AccountFacts(True, True, date(2026, 11, 1))),
        memory=InMemoryCallerMemory(),
        pseudonymizer=pseudonymizer,  # type: ignore[arg-type]
        capture=HintCapture(),
        clock=lambda: datetime(2026, 11, 24, 10, 0, tzinfo=UTC),
        queue_state=lambda q: full,
        callbacks=store,  # type: ignore[arg-type]
    )
    server = AGIServer({"3646": flow}, AGIServerConfig(port=0))
    await server.start()
    try:
        return await run_call("127.0.0.1", server.sockets[0][1], FakeChannel(args=["carte_vitale_perdue"], dtmf=["1"]))
    finally:
        await server.close()


async def test_a_callback_that_cannot_be_recorded_is_never_promised(mini_policy: object, pseudonymizer: object) -> None:
    """Redis down when the caller presses 1: no "we will call you back", the caller keeps the queue."""
    dead = RedisCallbackStore(KEY, f"redis://127.0.0.1:{_free_port()}/0", timeout=0.1)
    ch = await _accept_callback_on_a_saturated_queue(dead, mini_policy, pseudonymizer)
    assert 'GET DATA "router/callback-offer" "6000" "1"' in ch.commands
    assert (ch.variables["ROUTER_ACTION"], ch.variables["ROUTER_QUEUE"], ch.variables["ROUTER_PROMPTS"]) == (
        "queue",
        "droits",
        "",
    )
    assert "callback.unavailable" in ch.variables["ROUTER_REASON"] and ch.variables["ROUTER_DONE"] == "1"


async def test_a_full_disk_under_the_sqlite_store_never_promises_a_callback(
    tmp_path: Path, mini_policy: object, pseudonymizer: object
) -> None:
    """One router, SQLite store, disk full as the caller presses 1: no promise, the caller keeps the queue."""
    import sqlite3

    from agi_router.callbacks.store import CallbackStore

    class FullDisk:
        """The store's SQLite connection on a full disk: every write fails as SQLite says it."""

        def __init__(self, real: sqlite3.Connection) -> None:
            self.real = real

        def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
            if sql.lstrip().upper().startswith(("INSERT", "UPDATE")):
                raise sqlite3.OperationalError("database or disk is full")
            return self.real.execute(sql, *args)  # type: ignore[arg-type]

        def close(self) -> None:
            self.real.close()

    store = CallbackStore(tmp_path / "cb.sqlite3", KEY)
    store._db = FullDisk(store._db)  # type: ignore[assignment]
    try:
        ch = await _accept_callback_on_a_saturated_queue(store, mini_policy, pseudonymizer)
    finally:
        store.close()
    assert (ch.variables["ROUTER_ACTION"], ch.variables["ROUTER_PROMPTS"]) == ("queue", "")
    assert "callback.unavailable" in ch.variables["ROUTER_REASON"]


class _NodeAMI:
    """One node's AMI as the placer sees it: connected, Originate recorded (or failing like a dead node)."""

    def __init__(self, fail: Exception | None = None) -> None:
        import asyncio

        self.connected = asyncio.Event()
        self.connected.set()
        self.originated: list[str] = []
        self.fail = fail

    async def action(self, name: str, fields: list[tuple[str, str]], timeout: float = 10.0) -> object:
        if self.fail is not None:
            raise self.fail
        self.originated.append(dict(fields)["Channel"])
        return object()


async def test_a_callback_is_placed_once_by_the_node_with_a_free_agent(redis_server: str, prefix: str) -> None:
    """Issue #22: two nodes, each router's placer reading its OWN node's queue (node A: nobody on the skill;
    node B: one free agent) and sharing the Redis store: the callback taken on node A is placed by node B,
    once, however many rounds both run; node A never rings it."""
    from agi_router.callbacks.placer import CallbackPlacer, PlacerConfig
    from agi_router.policy.model import QueueSnapshot

    store_a, store_b = _router(redis_server, prefix), _router(redis_server, prefix)
    cid = store_a.add(call_id="a.1", caller="c-abc", number=NUMBER, queue="droits", motive="m", now=time.time())
    ami_a, ami_b = _NodeAMI(), _NodeAMI()
    a = CallbackPlacer(store_a, ami_a, lambda q: QueueSnapshot(q, logged_in_agents=0, available_agents=0),  # type: ignore[arg-type]
                       lambda now: True, PlacerConfig())  # fmt: skip
    b = CallbackPlacer(store_b, ami_b, lambda q: QueueSnapshot(q, logged_in_agents=1, available_agents=1),  # type: ignore[arg-type]
                       lambda now: True, PlacerConfig())  # fmt: skip
    for _ in range(3):
        await a.run_once()
        await b.run_once()
    assert ami_a.originated == [] and ami_b.originated == [f"Local/{NUMBER}@callback-out"]
    assert store_a.get(cid).status == "placed"  # type: ignore[union-attr]


async def test_a_node_that_dies_while_placing_gives_the_callback_back_to_any_node_without_spending_an_attempt(
    redis_server: str, prefix: str
) -> None:
    """The node's Asterisk dies during the Originate (AMI connection lost): the callback is pending again
    ``lost_retry_s`` later (not the 300 s of an unanswered call), the attempt not counted, and another node's
    placer places it then. A refused Originate (Asterisk alive) still spends an attempt and waits ``retry_s``."""
    from agi_router.callbacks.placer import CallbackPlacer, PlacerConfig
    from agi_router.exceptions import AMIActionError, AMIConnectionError
    from agi_router.policy.model import QueueSnapshot

    store = _router(redis_server, prefix)
    now = time.time()
    cid = store.add(call_id="a.2", caller="c-def", number=NUMBER, queue="droits", motive="m", now=now)
    free = lambda q: QueueSnapshot(q, logged_in_agents=1, available_agents=1)  # noqa: E731
    cfg = PlacerConfig(retry_s=300.0, lost_retry_s=30.0)
    dead = _NodeAMI(fail=AMIConnectionError("AMI connection lost (node killed)"))
    placer = CallbackPlacer(store, dead, free, lambda now: True, cfg, clock=lambda: now)  # type: ignore[arg-type]
    assert await placer.run_once() == 1
    cb = store.get(cid)
    assert cb is not None and cb.status == "pending" and cb.attempts == 0
    assert cb.next_attempt_at == pytest.approx(now + 30.0, abs=1.0)
    assert store.due(now + 29.0) == []
    other = _NodeAMI()
    later = CallbackPlacer(_router(redis_server, prefix), other, free, lambda now: True, cfg,  # type: ignore[arg-type]
                           clock=lambda: now + 31.0)  # fmt: skip
    assert await later.run_once() == 1 and other.originated == [f"Local/{NUMBER}@callback-out"]
    assert store.get(cid).status == "placed"  # type: ignore[union-attr]
    # Asterisk alive but the Originate refused: an attempt spent, retry_s later
    cid2 = store.add(call_id="a.3", caller="c-ghi", number=NUMBER, queue="droits", motive="m", now=now)
    refusing = _NodeAMI(fail=AMIActionError("Originate", "Originate failed"))
    await CallbackPlacer(store, refusing, free, lambda now: True, cfg, clock=lambda: now).run_once()  # type: ignore[arg-type]
    cb2 = store.get(cid2)
    assert cb2 is not None and cb2.attempts == 1 and cb2.next_attempt_at == pytest.approx(now + 300.0, abs=1.0)
