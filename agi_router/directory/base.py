"""The online-account directory: caller -> (last online-account use, flags).

Backends raise :class:`DirectoryError` when they cannot answer; the call flow turns that
into ``AccountFacts.unknown()``, which the policy never deflects.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Protocol

from ..policy.model import AccountFacts

__all__ = ["AccountDirectory", "parse_last_login"]


class AccountDirectory(Protocol):
    async def lookup(self, e164: str | None, pseudonym: str) -> AccountFacts:
        """``e164`` is None for withheld numbers; embedded stores look up by pseudonym only."""
        ...

    async def close(self) -> None: ...


def parse_last_login(value: str) -> date | None:
    """ISO 8601 date or date-time -> date; empty -> None (no account). ValueError otherwise."""
    v = value.strip()
    if not v:
        return None
    try:
        if len(v) == 10:
            return date.fromisoformat(v)
        return datetime.fromisoformat(v.replace("Z", "+00:00")).date()
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 date (YYYY-MM-DD) or date-time") from None
