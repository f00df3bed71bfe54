"""One behavioural suite for both caller-memory backends; Redis runs a real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agi_router.exceptions import StateStoreError
from agi_router.policy.model import Action, PastCall
from agi_router.state.base import MAX_ENTRIES
from agi_router.state.memory import InMemoryCallerMemory
from agi_router.state.redis import RedisCallerMemory
from tests.conftest import _free_port

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
TTL = timedelta(hours=24)




@pytest.fixture(params=["memory", "redis"])
async def memory(request: pytest.FixtureRequest) -> AsyncIterator[InMemoryCallerMemory | RedisCallerMemory]:
    if request.param == "memory":
        yield InMemoryCallerMemory()
        return
    url = request.getfixturevalue("redis_server")
    m = RedisCallerMemory(url, prefix=f"t{time.monotonic_ns()}:", timeout=0.5)
    yield m
    await m.close()


def call(minutes: float, action: Action = Action.DEFLECT, motive: str = "m1") -> PastCall:
    return PastCall(T0 + timedelta(minutes=minutes), motive, action)


async def test_empty_history(memory: InMemoryCallerMemory | RedisCallerMemory) -> None:
    assert await memory.history("c-1", "m1", T0) == ()


async def test_record_and_read_back_in_order(memory: InMemoryCallerMemory | RedisCallerMemory) -> None:
    for i, a in enumerate([Action.DEFLECT, Action.HANGUP, Action.PRIORITY]):
        await memory.record("c-1", "m1", call(i, a), TTL)
    h = await memory.history("c-1", "m1", T0 + timedelta(minutes=3))
    assert [c.action for c in h] == [Action.DEFLECT, Action.HANGUP, Action.PRIORITY]
    assert h[0].at == T0 and h[0].motive == "m1"


async def test_keys_are_per_caller_and_motive(memory: InMemoryCallerMemory | RedisCallerMemory) -> None:
    await memory.record("c-1", "m1", call(0), TTL)
    await memory.record("c-1", "m2", call(0, motive="m2"), TTL)
    await memory.record("c-2", "m1", call(0), TTL)
    assert len(await memory.history("c-1", "m1", T0)) == 1
    assert len(await memory.history("c-1", "m2", T0)) == 1
    assert len(await memory.history("c-3", "m1", T0)) == 0


async def test_history_is_capped(memory: InMemoryCallerMemory | RedisCallerMemory) -> None:
    for i in range(MAX_ENTRIES + 5):
        await memory.record("c-1", "m1", call(i), TTL)
    h = await memory.history("c-1", "m1", T0 + timedelta(hours=1))
    assert len(h) == MAX_ENTRIES
    assert h[-1].at == T0 + timedelta(minutes=MAX_ENTRIES + 4)


async def test_concurrent_records_lose_nothing(memory: InMemoryCallerMemory | RedisCallerMemory) -> None:
    await asyncio.gather(*(memory.record("c-9", "m1", call(i / 100), TTL) for i in range(15)))
    assert len(await memory.history("c-9", "m1", T0 + timedelta(minutes=1))) == 15


async def test_ttl_in_memory() -> None:
    m = InMemoryCallerMemory()
    await m.record("c-1", "m1", call(0), timedelta(minutes=30))
    assert len(await m.history("c-1", "m1", T0 + timedelta(minutes=29))) == 1
    assert await m.history("c-1", "m1", T0 + timedelta(minutes=30)) == ()
    assert len(m) == 0


async def test_in_memory_sweep_bounds_size() -> None:
    m = InMemoryCallerMemory(max_keys=10)
    for i in range(25):
        await m.record(f"c-{i}", "m1", call(i), TTL)
    assert len(m) <= 11


async def test_ttl_in_redis(redis_server: str) -> None:
    m = RedisCallerMemory(redis_server, prefix="ttl:", timeout=0.5)
    try:
        await m.record("c-1", "m1", call(0), timedelta(milliseconds=200))
        assert len(await m.history("c-1", "m1", T0)) == 1
        await asyncio.sleep(0.35)
        assert await m.history("c-1", "m1", T0) == ()
    finally:
        await m.close()


async def test_redis_never_leaves_a_key_without_ttl(redis_server: str) -> None:
    import redis.asyncio as aioredis

    m = RedisCallerMemory(redis_server, prefix="nottl:", timeout=0.5)
    raw = aioredis.Redis.from_url(redis_server)
    try:
        await asyncio.gather(*(m.record("c-1", "m1", call(i), TTL) for i in range(10)))
        ttl_ms = await raw.pttl("nottl:c-1:m1")
        assert 0 < ttl_ms <= TTL.total_seconds() * 1000
    finally:
        await m.close()
        await raw.aclose()


async def test_redis_ignores_unreadable_entries(redis_server: str) -> None:
    import redis.asyncio as aioredis

    raw = aioredis.Redis.from_url(redis_server)
    m = RedisCallerMemory(redis_server, prefix="bad:", timeout=0.5)
    try:
        await raw.rpush("bad:c-1:m1", "garbage", "1.0|nonsense", f"{T0.timestamp()}|deflect")
        h = await m.history("c-1", "m1", T0)
        assert [c.action for c in h] == [Action.DEFLECT]
    finally:
        await m.close()
        await raw.aclose()


async def test_redis_down_raises_state_store_error_quickly() -> None:
    port = _free_port()  # nothing listens there
    m = RedisCallerMemory(f"redis://127.0.0.1:{port}/0", timeout=0.05)
    try:
        t = time.perf_counter()
        with pytest.raises(StateStoreError, match="redis history read failed"):
            await m.history("c-1", "m1", T0)
        with pytest.raises(StateStoreError, match="redis history write failed"):
            await m.record("c-1", "m1", call(0), TTL)
        with pytest.raises(StateStoreError, match="unreachable"):
            await m.ping()
        assert time.perf_counter() - t < 2.0
    finally:
        await m.close()


async def test_redis_stalled_server_hits_the_budget() -> None:
    """A server that accepts and never answers (a hung Redis) costs one budget, not a hang."""
    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read(1 << 16)
        await asyncio.sleep(5)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    m = RedisCallerMemory(f"redis://127.0.0.1:{port}/0", timeout=0.1)
    try:
        t = time.perf_counter()
        with pytest.raises(StateStoreError):
            await m.history("c-1", "m1", T0)
        assert time.perf_counter() - t < 1.0
    finally:
        await m.close()
        for w in writers:
            w.close()
        server.close()


async def test_redis_killed_then_restarted_the_router_recovers_by_itself(tmp_path: Path) -> None:
    """Redis SIGKILLed mid-traffic: each operation fails within its budget (the call flow then decides without
    history); restarted on the same port, the same client works again with no action from anyone."""
    import shutil
    import signal
    import subprocess

    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server not installed (scripts/bootstrap.sh test installs it)")
    port = _free_port()

    def start() -> subprocess.Popen[bytes]:
        args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(tmp_path)]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                return proc
            time.sleep(0.05)
        proc.kill()
        raise AssertionError("redis-server did not start")

    proc = start()
    m = RedisCallerMemory(f"redis://127.0.0.1:{port}/0", timeout=0.2)
    try:
        await m.record("c-1", "m1", call(0), TTL)
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        t = time.perf_counter()
        with pytest.raises(StateStoreError):
            await m.history("c-1", "m1", T0)
        assert time.perf_counter() - t < 2.0
        proc = start()  # empty: no persistence in this test
        for _ in range(50):  # the client's own reconnection, no restart of the router
            try:
                await m.record("c-1", "m1", call(1), TTL)
                break
            except StateStoreError:
                await asyncio.sleep(0.1)
        assert [c.action for c in await m.history("c-1", "m1", T0 + timedelta(minutes=5))] == [Action.DEFLECT]
    finally:
        await m.close()
        proc.kill()
        proc.wait(5)

