"""SMS to the caller's mobile after a deflection (the policy's optional "SMS link").

The router hands the message to an operator's SMS gateway over HTTP, in the background, after the
routing variables are written: a slow or failing gateway never delays a caller. Only mobile numbers
(French 06/07 and overseas mobiles) get an SMS. The number leaves the router only towards the
gateway; logs carry the pseudonym.
"""

from __future__ import annotations

import logging
from typing import Protocol

import httpx

from .exceptions import RouterError

__all__ = ["HTTPSmsGateway", "NoSms", "SmsError", "SmsSender", "is_mobile"]

log = logging.getLogger(__name__)

_MOBILE_PREFIXES = (
    "+336",
    "+337",
    "+262692",
    "+262693",
    "+262639",
    "+590690",
    "+590691",
    "+594694",
    "+596696",
    "+596697",
)


class SmsError(RouterError):
    """The SMS gateway did not accept a message."""


def is_mobile(e164: str) -> bool:
    return e164.startswith(_MOBILE_PREFIXES)


class SmsSender(Protocol):
    async def send(self, e164: str, text: str, *, reference: str) -> None: ...

    async def close(self) -> None: ...


class NoSms:
    """No gateway configured: the decision still says an SMS was due; nothing is sent."""

    async def send(self, e164: str, text: str, *, reference: str) -> None:
        raise SmsError("no SMS gateway configured")

    async def close(self) -> None:
        return None


class HTTPSmsGateway:
    """``POST {url}`` with ``{"to": "+336…", "text": "…", "reference": "<call id>"}``; 2xx = accepted."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 2.0,
        headers: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout), headers=headers, transport=transport)

    async def send(self, e164: str, text: str, *, reference: str) -> None:
        try:
            resp = await self._client.post(self.url, json={"to": e164, "text": text, "reference": reference})
        except httpx.HTTPError as exc:
            raise SmsError(f"SMS gateway unreachable: {exc!r}") from exc
        if not resp.is_success:
            raise SmsError(f"SMS gateway answered {resp.status_code}")

    async def close(self) -> None:
        await self._client.aclose()
