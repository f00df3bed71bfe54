"""Caller memory: per (pseudonymised caller, motive) call history with a TTL.

The store only keeps what happened (time and action of each call); the policy derives repeat
counts from it, so a replay over a call log computes exactly what production computed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

from ..policy.model import Action, PastCall

__all__ = ["MAX_ENTRIES", "CallerMemory", "decode_entry", "encode_entry"]

MAX_ENTRIES = 20  # per (caller, motive): far more than any repeat rule looks at


class CallerMemory(Protocol):
    async def history(self, caller: str, motive: str, now: datetime) -> tuple[PastCall, ...]:
        """Calls of ``caller`` for ``motive`` still within their TTL, oldest first."""
        ...

    async def record(self, caller: str, motive: str, call: PastCall, ttl: timedelta) -> None:
        """Append one call, atomically, and (re)start the TTL of this caller's history."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


def encode_entry(call: PastCall) -> str:
    return f"{call.at.timestamp():.3f}|{call.action.value}"


def decode_entry(raw: str, motive: str) -> PastCall | None:
    """None for an entry this version cannot read (never crash a call on old data)."""
    from datetime import UTC

    try:
        ts, action = raw.split("|", 1)
        return PastCall(datetime.fromtimestamp(float(ts), UTC), motive, Action(action))
    except ValueError:
        return None
