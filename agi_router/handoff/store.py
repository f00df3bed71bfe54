"""Where call contexts live between the routing decision and the agent (and the CTI) asking for them.

In process by default; in Redis (``[state] backend = "redis"``) when several routers share the line, so
that any of them answers ``GET /calls/{ref}`` and takes the agent's correction. A context expires with the
caller memory (the policy's ``memory_hours``). Errors are :class:`~agi_router.exceptions.StateStoreError`:
the caller's route never depends on this store (the channel variables carry the context to the agent).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..exceptions import StateStoreError
from .context import AgentContext

__all__ = ["ContextStore", "InMemoryContextStore", "RedisContextStore"]


class ContextStore(Protocol):
    async def put(self, ctx: AgentContext, ttl_s: float) -> None: ...

    async def get(self, ref: str) -> AgentContext | None: ...

    async def close(self) -> None: ...


class InMemoryContextStore:
    def __init__(self, *, max_items: int = 200_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._data: dict[str, tuple[float, dict[str, Any]]] = {}
        self.max_items = max_items
        self.clock = clock

    def __len__(self) -> int:
        return len(self._data)

    async def put(self, ctx: AgentContext, ttl_s: float) -> None:
        now = self.clock()
        self._data[ctx.ref] = (now + ttl_s, ctx.dumps())
        if len(self._data) > self.max_items:
            self._data = {k: v for k, v in self._data.items() if v[0] > now}
            while len(self._data) > self.max_items:  # still too many: the oldest expiry first
                del self._data[min(self._data, key=lambda k: self._data[k][0])]

    async def get(self, ref: str) -> AgentContext | None:
        item = self._data.get(ref)
        if item is None:
            return None
        if item[0] <= self.clock():
            del self._data[ref]
            return None
        return AgentContext.loads(item[1])

    async def close(self) -> None:
        return None


class RedisContextStore:
    def __init__(
        self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "agi-router:ctx:", timeout: float = 0.05,
        client: Any = None,
    ) -> None:  # fmt: skip
        import redis.asyncio as aioredis

        self.prefix = prefix
        self.timeout = timeout
        self._redis = client or aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=max(timeout, 0.2), decode_responses=True
        )

    async def put(self, ctx: AgentContext, ttl_s: float) -> None:
        from redis.exceptions import RedisError

        try:
            async with asyncio.timeout(self.timeout):
                await self._redis.set(self.prefix + ctx.ref, json.dumps(ctx.dumps()), px=int(ttl_s * 1000))
        except (RedisError, OSError, TimeoutError) as exc:
            raise StateStoreError(f"redis context write failed: {exc!r}") from exc

    async def get(self, ref: str) -> AgentContext | None:
        from redis.exceptions import RedisError

        try:
            async with asyncio.timeout(self.timeout):
                raw = await self._redis.get(self.prefix + ref)
        except (RedisError, OSError, TimeoutError) as exc:
            raise StateStoreError(f"redis context read failed: {exc!r}") from exc
        if raw is None:
            return None
        try:
            return AgentContext.loads(json.loads(raw))
        except (ValueError, TypeError) as exc:
            raise StateStoreError(f"context {ref} is not readable by this version: {exc}") from exc

    async def close(self) -> None:
        await self._redis.aclose()
