"""Server sockets bound before anything slow: a port in use fails the start at once, in one line.

``agi-router serve`` binds the FastAGI port and the metrics port first (before the Whisper model loads,
~10 s), then hands the bound sockets to asyncio. A port another process holds, an address this host does
not have, or a privileged port gives :class:`~agi_router.exceptions.ConfigError` naming the setting, the
address and what to do — exit status 2, like every configuration error.

Bound, not listening: until the router is ready, a connection is refused (not queued in the backlog), so
Asterisk's ``AGI()`` fails at once and the dialplan moves to the next router or the human route instead of
holding a caller in silence while the model loads. asyncio starts listening when the server starts.
"""

from __future__ import annotations

import errno
import socket

from .exceptions import ConfigError

__all__ = ["bind_listener"]

_ADVICE = {
    errno.EADDRINUSE: "another process listens there: stop it, or set another port",
    errno.EADDRNOTAVAIL: "this machine has no such address: use one of its addresses, or 127.0.0.1",
    errno.EACCES: "ports below 1024 need privileges: use a port above 1023",
}


def bind_listener(host: str, port: int, *, what: str, key: str) -> socket.socket:
    """A TCP socket bound to ``host:port`` (SO_REUSEADDR, non-blocking, not yet listening), or ConfigError
    for ``key``."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen for {what} on {host}:{port}: {exc.strerror}", key=key) from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        advice = _ADVICE.get(exc.errno or 0, "check the address and port")
        raise ConfigError(f"cannot listen for {what} on {host}:{port}: {exc.strerror}; {advice}", key=key) from None
    return sock
