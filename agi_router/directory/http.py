"""An HTTP account directory with a time budget and a TTL cache.

``GET {base_url}/accounts/{id}`` where ``id`` is the E.164 number or the pseudonym (config
``identify_by``). ``200 {"last_login": "2026-05-02" | null, "flags": ["..."]}`` is an answer;
``404`` means no account; anything else, or no answer within ``timeout``, raises
:class:`DirectoryError` (status unknown: never deflected). The transport is injectable
(``httpx.MockTransport`` in tests).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Literal
from urllib.parse import quote

import httpx

from ..exceptions import DirectoryError, DirectoryTimeout
from ..policy.model import AccountFacts
from .base import parse_last_login

__all__ = ["HTTPDirectory"]


class HTTPDirectory:
    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 0.15,
        identify_by: Literal["e164", "pseudonym"] = "pseudonym",
        cache_ttl: float = 300.0,
        negative_ttl: float = 60.0,
        cache_size: int = 100_000,
        headers: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.timeout = timeout
        self.identify_by = identify_by
        self.cache_ttl = cache_ttl
        self.negative_ttl = negative_ttl
        self.cache_size = cache_size
        self._cache: OrderedDict[str, tuple[float, AccountFacts]] = OrderedDict()
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(timeout, connect=timeout, pool=timeout),
            headers=headers,
            transport=transport,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )
        self.hits = 0
        self.misses = 0

    def _cached(self, key: str) -> AccountFacts | None:
        item = self._cache.get(key)
        if item is None:
            return None
        expires, facts = item
        if time.monotonic() >= expires:
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return facts

    def _store(self, key: str, facts: AccountFacts) -> None:
        ttl = self.cache_ttl if facts.exists else self.negative_ttl
        self._cache[key] = (time.monotonic() + ttl, facts)
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    async def lookup(self, e164: str | None, pseudonym: str) -> AccountFacts:
        ident = e164 if self.identify_by == "e164" else pseudonym
        if ident is None:
            return AccountFacts.none()
        hit = self._cached(pseudonym)
        if hit is not None:
            self.hits += 1
            return hit
        self.misses += 1
        try:
            resp = await self._client.get(f"/accounts/{quote(ident, safe='')}")
        except httpx.TimeoutException:
            raise DirectoryTimeout(f"HTTP directory did not answer within {self.timeout * 1000:.0f} ms") from None
        except httpx.HTTPError as exc:
            raise DirectoryError(f"HTTP directory unreachable: {exc!r}") from exc
        if resp.status_code == 404:
            facts = AccountFacts.none()
        elif resp.status_code == 200:
            facts = self._parse(resp)
        else:
            raise DirectoryError(f"HTTP directory answered {resp.status_code}")
        self._store(pseudonym, facts)
        return facts

    @staticmethod
    def _parse(resp: httpx.Response) -> AccountFacts:
        try:
            body = resp.json()
        except ValueError:
            raise DirectoryError("HTTP directory answered 200 with a body that is not JSON") from None
        if not isinstance(body, dict):
            raise DirectoryError("HTTP directory answer is not a JSON object")
        raw_last = body.get("last_login")
        flags = body.get("flags", [])
        if raw_last is not None and not isinstance(raw_last, str):
            raise DirectoryError(f"HTTP directory: last_login must be a string or null, got {raw_last!r}")
        if not isinstance(flags, list) or not all(isinstance(x, str) for x in flags):
            raise DirectoryError(f"HTTP directory: flags must be a list of strings, got {flags!r}")
        try:
            last = parse_last_login(raw_last or "")
        except ValueError as exc:
            raise DirectoryError(f"HTTP directory: {exc}") from None
        return AccountFacts(known=True, exists=last is not None, last_login=last, flags=frozenset(flags))

    async def close(self) -> None:
        await self._client.aclose()
