"""Renders what Asterisk reads of the SIP edge from the router's accounts and ``[sip]`` settings.

Two includes, written next to the shipped configuration by ``agi-router asterisk setup``:

- ``agi-router-pjsip.conf`` (mode 0640, ``#include``d at the end of ``pjsip.conf``): the TLS transport when TLS
  is on, then per account an endpoint (on the TLS transport with ``media_encryption = sdes`` when TLS is on),
  its auth (the generated password) and its aor — built on the templates of ``pjsip.conf``;
- ``agi-router-members.conf`` (``#include``d at the end of ``queues.conf``): each agent's queue memberships,
  appended to the shipped queues with Asterisk's ``[queue](+)`` syntax.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..exceptions import ConfigError
from .accounts import AccountBook

__all__ = [
    "MEMBERS_INCLUDE",
    "PJSIP_INCLUDE",
    "EdgeShape",
    "kamailio_tls_config",
    "queue_names",
    "render_members",
    "render_pjsip",
]

PJSIP_INCLUDE = "agi-router-pjsip.conf"
MEMBERS_INCLUDE = "agi-router-members.conf"
TLS_TRANSPORT = "transport-tls"


@dataclass(frozen=True, slots=True)
class EdgeShape:
    """What the rendered include offers: Asterisk's own TLS transport on ``bind:tls_port`` (with these PEM
    files) or not; SRTP-only accounts or not; phones behind the Kamailio edge (Path, no contact rewriting)."""

    tls: bool
    bind: str = "127.0.0.1"
    tls_port: int = 5061
    cert_file: Path | None = None
    key_file: Path | None = None
    srtp: bool = False
    behind_edge: bool = False


def queue_names(queues_conf: str) -> list[str]:
    """The queues a ``queues.conf`` defines (not ``[general]``, not templates)."""
    return [
        m.group(1)
        for m in re.finditer(r"^\[([A-Za-z0-9_-]+)\](?!\(!\))", queues_conf, flags=re.M)
        if m.group(1) != "general"
    ]


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def render_pjsip(book: AccountBook, edge: EdgeShape) -> str:
    out = [
        "; Written by `agi-router asterisk setup` from the router's SIP accounts and [sip] settings.",
        "; Do not edit: `agi-router asterisk agent add NAME` adds an agent, then run setup again.",
        "",
    ]
    if edge.tls:
        if edge.cert_file is None or edge.key_file is None:
            raise ValueError("TLS needs a certificate and its key")
        out += [
            f"[{TLS_TRANSPORT}]",
            "type = transport",
            "protocol = tls",
            f"bind = {_bind(edge.bind, edge.tls_port)}",
            f"cert_file = {edge.cert_file}",
            f"priv_key_file = {edge.key_file}",
            # pjproject's own default is TLS 1.0 only (measured: OpenSSL 3 clients refuse it); 1.2 is what
            # every softphone speaks. Ciphers: OpenSSL's defaults.
            "method = tlsv1_2",
            "",
        ]
    for acc in book.accounts.values():
        out.append(f"[{acc.name}](endpoint-template)")
        if acc.role == "agent":
            out.append("context = agents")
        if acc.callerid:
            out.append(f"callerid = {acc.callerid}")
        out += [f"auth = {acc.name}-auth", f"aors = {acc.name}"]
        if edge.tls:
            # signalling pinned to TLS: Asterisk also accepts SDES over plain UDP (measured), keys in clear
            out.append(f"transport = {TLS_TRANSPORT}")
        if edge.srtp or edge.tls:
            # media over SRTP, keys in the SDP (encrypted by TLS up to Asterisk or the edge); a phone that offers
            # plain RTP is refused (488), never downgraded
            out += ["media_encryption = sdes", "media_encryption_optimistic = no"]
        if edge.behind_edge:
            # the edge does the NAT work (Path ;received=); rewriting the Contact to the edge's address loses
            # the route of Asterisk's ACK (measured: the agent retransmits its 200 OK, the call drops)
            out.append("rewrite_contact = no")
        out += [
            f"[{acc.name}-auth](auth-template)",
            f"username = {acc.name}",
            f"password = {acc.password}",
            f"[{acc.name}](aor-template)",
            "",
        ]
    return "\n".join(out)


def render_members(book: AccountBook, known_queues: Iterable[str]) -> str:
    known = set(known_queues)
    by_queue: dict[str, list[str]] = {}
    for acc in book.accounts.values():
        for m in acc.queues:
            if m.queue not in known:
                raise ConfigError(
                    f"agent {acc.name}: queue {m.queue!r} is not in queues.conf (one of {', '.join(sorted(known))})",
                    file=str(book.path),
                )
            by_queue.setdefault(m.queue, []).append(f"member => PJSIP/{acc.name},{m.penalty},{acc.name}")
    out = [
        "; Written by `agi-router asterisk setup` from the router's SIP accounts: who answers which queue.",
        "; Do not edit: `agi-router asterisk agent add NAME --queue Q[:PENALTY]`, then run setup again.",
        "",
    ]
    for queue in sorted(by_queue):
        out += [f"[{queue}](+)", *by_queue[queue], ""]
    return "\n".join(out)


def kamailio_tls_config(cert_file: Path, key_file: Path) -> str:
    """Kamailio's tls module configuration for the edge: the router's certificate, TLS 1.2 or later, phones
    not asked for a client certificate (they authenticate with their digest password at Asterisk)."""
    return (
        "# Written by `agi-router asterisk setup` ([sip] edge = \"kamailio\"): Kamailio's tls module reads it.\n"
        "[server:default]\n"
        "method = TLSv1.2+\n"
        "verify_certificate = no\n"
        "require_certificate = no\n"
        f"certificate = {cert_file}\n"
        f"private_key = {key_file}\n"
        "\n"
        "[client:default]\n"
        "method = TLSv1.2+\n"
        "verify_certificate = no\n"
        "require_certificate = no\n"
    )
