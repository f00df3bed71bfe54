"""``GET /calls/{ref}``: a routed call's context as JSON, for a CTI or CRM screen pop.

Served on the router's HTTP port (``[metrics]``, loopback by default) next to /metrics. Every request
carries ``Authorization: Bearer <token>``; the token is generated on first start into ``api.token``
(mode 0600, like the other secrets) or given in ``$AGI_ROUTER_API_TOKEN``. Answers: 200 and the context,
401 without the right token, 404 for a reference that is unknown or expired (the same answer: a probe
learns nothing), 503 when the context store does not answer. Never a caller's number or pseudonym.
"""

from __future__ import annotations

import hmac
import json
import logging
import re

from ..exceptions import StateStoreError
from .store import ContextStore

__all__ = ["CallsAPI"]

log = logging.getLogger(__name__)

_REF = re.compile(r"^[a-z2-7]{16}$")
PATH_PREFIX = "/calls/"


class CallsAPI:
    def __init__(self, store: ContextStore, token: str) -> None:
        if len(token) < 16:
            raise ValueError("the API token must have at least 16 characters")
        self.store = store
        self._token = token.encode()
        self.refused = 0

    def authorized(self, headers: dict[str, str]) -> bool:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token)
        if not ok:
            self.refused += 1
        return ok

    async def answer(self, path: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
        if not self.authorized(headers):
            return 401, "text/plain", b"a bearer token is needed: Authorization: Bearer <api.token>\n"
        ref = path.removeprefix(PATH_PREFIX)
        if not _REF.match(ref):
            return 404, "text/plain", b"no such call\n"
        try:
            ctx = await self.store.get(ref)
        except StateStoreError as exc:
            log.warning("GET /calls/%s: %s", ref, exc)
            return 503, "text/plain", b"the context store does not answer\n"
        if ctx is None:
            return 404, "text/plain", b"no such call\n"
        return 200, "application/json", (json.dumps(ctx.to_json(), ensure_ascii=False) + "\n").encode()
