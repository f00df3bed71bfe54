"""The SIP edge of the line, as far as the router installs it into Asterisk.

- :mod:`.accounts` — the line's SIP accounts (agents, softphones): generated passwords kept by the router
  (``var/sip/accounts.json``, mode 0600), never in the repository; ``agi-router asterisk agent add NAME``.
- :mod:`.tls` — the TLS certificate of the signalling transport (generated at setup when none is given).
- :mod:`.pjsip` — renders the includes that ``asterisk/pjsip.conf`` and ``asterisk/queues.conf`` read:
  the TLS transport, one endpoint/auth/aor per account (SRTP when TLS is on), the queue memberships.
- :mod:`.security` — Asterisk's security events (failed authentication, unknown endpoint, ACL refusal)
  read over AMI and counted (``agi_router_sip_security_events_total{event}``).

The banning edge itself (flood detection, scanner User-Agents, brute force) is Kamailio, configured in the
repository's ``edge/`` folder.
"""

from .accounts import AccountBook, Membership, SipAccount, generate_password, is_placeholder

__all__ = ["AccountBook", "Membership", "SipAccount", "generate_password", "is_placeholder"]
