"""Test doubles shared by the test modules."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from agi_router.exceptions import DirectoryError
from agi_router.policy.model import AccountFacts


@dataclass
class StubDirectory:
    """An account directory answering from a dict keyed by E.164 (``everyone`` for numbers not in it);
    it can be slow (``delay``) or down."""

    accounts: dict[str, AccountFacts] = field(default_factory=dict)
    everyone: AccountFacts = field(default_factory=AccountFacts.none)
    delay: float = 0.0
    down: bool = False

    async def lookup(self, e164: str | None, pseudonym: str) -> AccountFacts:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            raise DirectoryError("directory down")
        return self.accounts.get(e164 or "", self.everyone)

    async def close(self) -> None:
        pass
