"""The router's HTTP endpoint for operations: ``GET /metrics`` (Prometheus text format) and
``GET /healthz`` (JSON, 200 while the router accepts calls: liveness) and ``GET /readyz`` (the same JSON,
200 only when nothing is degraded: readiness).

A few lines of asyncio rather than prometheus_client's threaded server: the collectors read
state owned by the event loop (queue model, live RTP legs), so they must run on it. One request
per connection, a deadline and a size limit on the request head; nothing else is served.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import generate_latest

from .instruments import RouterMetrics

__all__ = ["MetricsServer"]

log = logging.getLogger(__name__)

# generate_latest() writes the classic text format; say so (prometheus_client >= 0.22 announces
# "version=1.0.0", which Prometheus 2.x, as packaged by Debian 12, does not know)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
    503: "Service Unavailable",
}  # fmt: skip


class MetricsServer:
    def __init__(
        self,
        metrics: RouterMetrics,
        host: str = "127.0.0.1",
        port: int = 9646,
        *,
        health: Callable[[], dict[str, Any]] | None = None,
        calls: Callable[[str, dict[str, str]], Awaitable[tuple[int, str, bytes]]] | None = None,
        head_timeout: float = 5.0,
        head_max_bytes: int = 8192,
    ) -> None:
        self.metrics = metrics
        self.host, self.port = host, port
        self.health = health or (lambda: {"status": "ok"})
        self.calls = calls  # GET /calls/{ref} (handoff/api.py), None: not served
        self.head_timeout = head_timeout
        self.head_max_bytes = head_max_bytes
        self._server: asyncio.base_events.Server | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None, "not started"
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def start(self, sock: socket.socket | None = None) -> None:
        """Listen on host:port, or on ``sock`` already bound (``agi_router.listen``)."""
        if sock is not None:
            self._server = await asyncio.start_server(self._on_connect, sock=sock, limit=self.head_max_bytes)
        else:
            self._server = await asyncio.start_server(
                self._on_connect, self.host, self.port, limit=self.head_max_bytes, reuse_address=True
            )
        log.info("metrics on http://%s:%d/metrics", *self.address)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(self.head_timeout):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            status, ctype, body = await self._route(head)
            method = head.split(b" ", 1)[0]
            extra = "WWW-Authenticate: Bearer\r\n" if status == 401 else ""
            writer.write(
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n{extra}"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            )
            if method != b"HEAD":
                writer.write(body)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        finally:
            writer.close()

    async def _route(self, head: bytes) -> tuple[int, str, bytes]:
        if self.calls is not None and head.startswith((b"GET /calls/", b"HEAD /calls/")):
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1].split("?", 1)[0]
            headers = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            return await self.calls(path, headers)
        return self._answer(head)

    def _answer(self, head: bytes) -> tuple[int, str, bytes]:
        try:
            method, target, _version = head.split(b"\r\n", 1)[0].decode("ascii").split(" ")
        except (UnicodeDecodeError, ValueError):
            return 400, "text/plain", b"bad request\n"
        path = target.split("?", 1)[0]
        if path not in ("/metrics", "/healthz", "/readyz"):
            return 404, "text/plain", b"not found: try /metrics, /healthz or /readyz\n"
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"GET only\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE, generate_latest(self.metrics.registry)
        try:
            state = self.health()
        except Exception as exc:  # a health probe never crashes the endpoint
            log.exception("health check failed")
            state = {"status": "error", "error": repr(exc)}
        # /healthz (liveness): 200 while the router routes calls, even degraded (AMI or directory down: it
        # then falls back, callers still get a route). /readyz (readiness): 200 only when nothing is degraded.
        live = ("ok", "degraded") if path == "/healthz" else ("ok",)
        code = 200 if state.get("status") in live else 503
        return code, "application/json", (json.dumps(state, sort_keys=True) + "\n").encode()
