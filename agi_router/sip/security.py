"""Asterisk's security events, read over AMI and counted: the PBX's own view of an attack.

res_pjsip (and the AMI itself) report every refused request as a *security event* of the AMI class
``security`` (``manager.conf``: the router's user reads it). The router folds the event names into five
kinds and counts them in ``agi_router_sip_security_events_total{event,service}``; the alert
``AgiRouterSipAttack`` fires on a sustained rate of failed authentications or unknown accounts (a
registration brute force, a scanner walking extensions). The events carry the attacker's address, which
the edge (Kamailio, ``edge/``) uses to ban; the router only logs a summary per source and minute (an IP
address, never a caller's number).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from ..ami.client import AMIClient
from ..ami.protocol import Message as AMIMessage
from ..metrics.instruments import RouterMetrics

__all__ = ["EVENT_KINDS", "SecurityEvents"]

log = logging.getLogger("agi_router.sip.security")

# Asterisk 22's security event names (main/security_events.c) -> the metric's ``event`` label.
# SuccessfulAuth and ChallengeSent (every normal REGISTER/INVITE) are not counted.
EVENT_KINDS: dict[str, str] = {
    "InvalidPassword": "failed_auth",
    "ChallengeResponseFailed": "failed_auth",
    "InvalidAccountID": "unknown_endpoint",
    "FailedACL": "acl_refused",
    "RequestNotAllowed": "bad_request",
    "RequestNotSupported": "bad_request",
    "AuthMethodNotAllowed": "bad_request",
    "RequestBadFormat": "bad_request",
    "InvalidTransport": "bad_request",
    "UnexpectedAddress": "bad_request",
    "SessionLimit": "limit",
    "MemoryLimit": "limit",
    "LoadAverageLimit": "limit",
}
SERVICES = frozenset({"pjsip", "ami", "sip", "iax2", "ari", "test"})
LOG_EVERY_S = 60.0
MAX_SOURCES = 1024  # sources remembered for the per-minute log summary (oldest forgotten first)


def source_host(remote: str) -> str:
    """``IPV4/UDP/203.0.113.7/5060`` -> ``203.0.113.7`` (Asterisk's address format)."""
    parts = remote.split("/")
    return parts[2] if len(parts) >= 4 else remote


class SecurityEvents:
    def __init__(self, ami: AMIClient, metrics: RouterMetrics, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics = metrics
        self._clock = clock
        self._sources: OrderedDict[str, tuple[float, int]] = OrderedDict()  # host -> (last log, unlogged)
        for name in EVENT_KINDS:
            ami.on(name, self.on_event)
        # every PJSIP series exists from the start at 0: rate() then sees the first burst whole (a series born
        # with its first event loses what it counted before the first scrape: measured 2.8/s for 3.3/s)
        for kind in sorted(set(EVENT_KINDS.values())):
            metrics.sip_security_events.labels(kind, "pjsip")

    def on_event(self, msg: AMIMessage) -> None:
        kind = EVENT_KINDS.get(msg.event or "")
        if kind is None:
            return
        service = msg.get("Service", "").lower()
        self.metrics.sip_security_events.labels(kind, service if service in SERVICES else "other").inc()
        host = source_host(msg.get("RemoteAddress", "?"))
        now = self._clock()
        last, unlogged = self._sources.pop(host, (float("-inf"), 0))
        unlogged += 1
        if now - last >= LOG_EVERY_S:
            log.warning("security: %d refused request(s) from %s (%s, last: %s %s)", unlogged, host, kind,
                        msg.event, msg.get("Service", ""))  # fmt: skip
            last, unlogged = now, 0
        self._sources[host] = (last, unlogged)
        while len(self._sources) > MAX_SOURCES:
            self._sources.popitem(last=False)
