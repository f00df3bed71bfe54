"""The asyncio FastAGI server.

Per connection: read the ``agi_*`` block (deadline, size and line limits), then hand an
:class:`AGISession` to the handler registered for the script path (``agi://host/3646``).
Above ``max_sessions`` concurrent calls the server gives the *overload answer*: it sets the
fallback route variables and closes at once, so Asterisk continues the dialplan to a human
queue instead of waiting on a router that cannot keep up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from ..exceptions import AGIConnectionClosed, AGIError, AGITimeout
from .deadline import Deadline
from .protocol import AGIEnvironment
from .session import AGISession, read_environment

__all__ = ["AGIHandler", "AGIServer", "AGIServerConfig", "FallbackRoute"]

log = logging.getLogger(__name__)

AGIHandler = Callable[[AGISession], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class FallbackRoute:
    """Channel variables that send a call to a human. Written on overload, unknown script,
    malformed header, internal fault and deadline; the dialplan sets the same defaults
    before calling AGI() for the case the router cannot write anything at all."""

    variables: Mapping[str, str] = field(
        default_factory=lambda: {
            "ROUTER_ACTION": "human",
            "ROUTER_QUEUE": "accueil",
            "ROUTER_PRIO": "0",
        }
    )

    async def apply(self, session: AGISession, reason: str, timeout: float = 1.0) -> bool:
        """Best effort: True when every variable was acknowledged."""
        try:
            for name, value in self.variables.items():
                await session.command("SET VARIABLE", name, value, timeout=timeout)
            await session.command("SET VARIABLE", "ROUTER_REASON", reason, timeout=timeout)
            await session.command("SET VARIABLE", "ROUTER_DONE", "1", timeout=timeout)
            return True
        except AGIError as exc:
            log.warning("fallback route not written (%s): %s", reason, exc)
            return False


@dataclass(frozen=True, slots=True)
class AGIServerConfig:
    host: str = "127.0.0.1"
    port: int = 4573
    max_sessions: int = 500
    header_timeout: float = 2.0
    header_max_bytes: int = 16384
    header_max_lines: int = 200
    command_timeout: float = 5.0
    stream_limit: int = 65536
    backlog: int = 1024


async def _skip_to_blank_line(reader: asyncio.StreamReader, *, timeout: float, max_bytes: int) -> bool:
    """Discard the rest of a rejected header; True once its closing blank line was read."""
    seen = 0
    try:
        async with asyncio.timeout(timeout):
            while seen < max_bytes:
                try:
                    raw = await reader.readline()
                except (asyncio.LimitOverrunError, ValueError):
                    return False
                if not raw.endswith(b"\n"):
                    return False
                if raw.strip() == b"":
                    return True
                seen += len(raw)
    except TimeoutError:
        return False
    return False


class AGIServer:
    def __init__(
        self,
        routes: Mapping[str, AGIHandler],
        config: AGIServerConfig | None = None,
        *,
        fallback: FallbackRoute | None = None,
    ) -> None:
        self.config = config or AGIServerConfig()
        self.routes = dict(routes)
        self.fallback = fallback or FallbackRoute()
        self.active = 0
        self.sessions = 0  # accepted and handed to a route
        self.errors: Counter[str] = Counter()  # kind -> count (header_timeout, bad_header, overload, ...)
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def header_errors(self) -> int:
        return sum(n for kind, n in self.errors.items() if kind.startswith("header") or kind == "bad_header")

    @property
    def overloads(self) -> int:
        return self.errors["overload"]

    @property
    def sockets(self) -> tuple[tuple[str, int], ...]:
        if self._server is None:
            return ()
        return tuple(s.getsockname()[:2] for s in self._server.sockets)

    async def start(self, sock: socket.socket | None = None) -> None:
        """Listen on the configured address, or on ``sock`` already bound (``agi_router.listen``)."""
        if sock is not None:
            self._server = await asyncio.start_server(
                self._on_connect, sock=sock, limit=self.config.stream_limit, backlog=self.config.backlog
            )
        else:
            self._server = await asyncio.start_server(
                self._on_connect,
                self.config.host,
                self.config.port,
                limit=self.config.stream_limit,
                backlog=self.config.backlog,
                reuse_address=True,
            )
        log.info("FastAGI listening on %s", ", ".join(f"{h}:{p}" for h, p in self.sockets))

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting; let calls in progress finish for ``grace`` seconds, then cancel them."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await self._serve_connection(reader, writer)
        finally:
            if task is not None:
                self._tasks.discard(task)
            # close() flushes what is buffered, then closes: Asterisk reads our last answer, then EOF
            writer.close()

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        deadline = Deadline()  # one timer for the header and every command of this session
        try:
            await self._serve_session(reader, writer, peer, deadline)
        finally:
            deadline.close()

    async def _serve_session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: object, deadline: Deadline
    ) -> None:
        cfg = self.config
        try:
            env = await read_environment(
                reader,
                timeout=cfg.header_timeout,
                max_bytes=cfg.header_max_bytes,
                max_lines=cfg.header_max_lines,
                deadline=deadline,
            )
        except (AGIConnectionClosed, AGITimeout) as exc:
            self.errors["header_timeout" if isinstance(exc, AGITimeout) else "header_closed"] += 1
            log.warning("AGI header from %s not received: %s", peer, exc)
            return
        except AGIError as exc:
            # A channel is waiting on the other side: route it to a human rather than drop it.
            self.errors["bad_header"] += 1
            log.warning("bad AGI header from %s: %s; writing the fallback route", peer, exc)
            consumed = getattr(exc, "consumed", True)
            if consumed or await _skip_to_blank_line(reader, timeout=0.5, max_bytes=1 << 20):
                session = AGISession(reader, writer, AGIEnvironment({}), command_timeout=1.0, deadline=deadline)
                await self.fallback.apply(session, "bad_header")
            return
        session = AGISession(reader, writer, env, command_timeout=cfg.command_timeout, deadline=deadline)
        if self.active >= cfg.max_sessions:
            self.errors["overload"] += 1
            log.warning("overload: %d sessions active, fallback for %s", self.active, env.uniqueid)
            await self.fallback.apply(session, "overload")
            return
        handler = self.routes.get(env.network_script)
        if handler is None:
            self.errors["unknown_script"] += 1
            log.warning("no route for AGI script %r (uniqueid %s)", env.network_script, env.uniqueid)
            await self.fallback.apply(session, "unknown_script")
            return
        self.active += 1
        self.sessions += 1
        try:
            await handler(session)
        except AGIError as exc:
            self.errors["session_" + type(exc).__name__.removeprefix("AGI").lower()] += 1
            log.info("AGI session %s ended: %s", env.uniqueid, exc)
        except Exception:
            self.errors["handler_fault"] += 1
            log.exception("handler fault on %s; writing the fallback route", env.uniqueid)
            await self.fallback.apply(session, "internal_error")
        finally:
            self.active -= 1
