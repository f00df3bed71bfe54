"""In-process caller memory: the embedded default for a single router."""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta

from ..policy.model import PastCall
from .base import MAX_ENTRIES

__all__ = ["InMemoryCallerMemory"]


class InMemoryCallerMemory:
    def __init__(self, max_keys: int = 1_000_000) -> None:
        self._data: dict[tuple[str, str], tuple[datetime, deque[PastCall]]] = {}
        self._max_keys = max_keys

    def __len__(self) -> int:
        return len(self._data)

    async def history(self, caller: str, motive: str, now: datetime) -> tuple[PastCall, ...]:
        item = self._data.get((caller, motive))
        if item is None:
            return ()
        expires, calls = item
        if now >= expires:
            del self._data[(caller, motive)]
            return ()
        return tuple(calls)

    async def record(self, caller: str, motive: str, call: PastCall, ttl: timedelta) -> None:
        key = (caller, motive)
        item = self._data.get(key)
        calls = item[1] if item is not None and call.at < item[0] else deque(maxlen=MAX_ENTRIES)
        calls.append(call)
        self._data[key] = (call.at + ttl, calls)
        if len(self._data) > self._max_keys:
            self.sweep(call.at)

    def sweep(self, now: datetime) -> int:
        """Drop expired histories; if still too many, the oldest ones. Returns how many went."""
        before = len(self._data)
        self._data = {k: v for k, v in self._data.items() if v[0] > now}
        if len(self._data) > self._max_keys:
            keep = sorted(self._data.items(), key=lambda kv: kv[1][0])[-self._max_keys :]
            self._data = dict(keep)
        return before - len(self._data)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
