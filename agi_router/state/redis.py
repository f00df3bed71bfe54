"""Redis caller memory, for several routers sharing one view of callers.

One list per (caller, motive): ``RPUSH`` + ``LTRIM`` + ``PEXPIRE`` in one MULTI/EXEC
transaction, so concurrent routers never lose an entry or leave a key without TTL.
Every operation has its own time budget; a slow or dead Redis raises
:class:`StateStoreError` and the call flow decides without history (never a hang-up).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..exceptions import StateStoreError
from ..policy.model import PastCall
from .base import MAX_ENTRIES, decode_entry, encode_entry

__all__ = ["RedisCallerMemory"]


class RedisCallerMemory:
    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "agi-router:hist:",
        timeout: float = 0.05,
        client: Any = None,
    ) -> None:
        self.prefix = prefix
        self.timeout = timeout
        self._redis = client or aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=max(timeout, 0.2),
            decode_responses=True,
            health_check_interval=10,
        )

    def _key(self, caller: str, motive: str) -> str:
        return f"{self.prefix}{caller}:{motive}"

    async def history(self, caller: str, motive: str, now: datetime) -> tuple[PastCall, ...]:
        try:
            async with asyncio.timeout(self.timeout):
                raw = await self._redis.lrange(self._key(caller, motive), 0, -1)
        except (RedisError, OSError, TimeoutError) as exc:
            raise StateStoreError(f"redis history read failed: {exc!r}") from exc
        calls = (decode_entry(str(r), motive) for r in raw)
        return tuple(c for c in calls if c is not None)

    async def record(self, caller: str, motive: str, call: PastCall, ttl: timedelta) -> None:
        key = self._key(caller, motive)
        try:
            async with asyncio.timeout(self.timeout):
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.rpush(key, encode_entry(call))
                    pipe.ltrim(key, -MAX_ENTRIES, -1)
                    pipe.pexpire(key, int(ttl.total_seconds() * 1000))
                    await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            raise StateStoreError(f"redis history write failed: {exc!r}") from exc

    async def ping(self) -> None:
        try:
            async with asyncio.timeout(max(self.timeout, 0.5)):
                await self._redis.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            raise StateStoreError(f"redis unreachable: {exc!r}") from exc

    async def close(self) -> None:
        await self._redis.aclose()
