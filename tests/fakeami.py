"""A fake Asterisk Manager Interface server, speaking AMI as Asterisk 22 does.

Messages and their field order follow traces recorded from Asterisk 22.10.1 (tests/fixtures/ami/).
Behaviours are scriptable per test: refuse the login, stop answering Pings while keeping the
socket open (half-open), close in the middle of a multi-event response, burst events, restart.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

BANNER = b"Asterisk Call Manager/11.0.0\r\n"


def encode(pairs: list[tuple[str, str]] | dict[str, str]) -> bytes:
    items = pairs.items() if isinstance(pairs, dict) else pairs
    return ("".join(f"{k}: {v}\r\n" for k, v in items) + "\r\n").encode()


def parse(block: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in block.decode().split("\r\n"):
        k, _, v = line.partition(": ")
        if k:
            out.setdefault(k, v)
    return out


@dataclass
class FakeAMI:
    username: str = "agi-router"
    secret: str = "s3cret"
    answer_pings: bool = True
    queue_status: list[dict[str, str]] = field(default_factory=list)  # events of QueueStatus
    cut_queue_status_after: int | None = None  # close the socket after N events of the list
    on_action: Callable[[dict[str, str]], list[bytes] | None] | None = None
    actions: list[dict[str, str]] = field(default_factory=list)
    connections: int = 0
    server: asyncio.Server | None = None
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self, port: int = 0) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)

    async def stop(self) -> None:
        """Asterisk goes away: listener and every connection closed."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for w in self.writers:
            w.close()
        self.writers.clear()

    async def restart(self) -> None:
        port = self.port
        await self.stop()
        await asyncio.sleep(0.05)
        await self.start(port)

    async def broadcast(self, event: list[tuple[str, str]] | dict[str, str]) -> None:
        for w in list(self.writers):
            with contextlib.suppress(ConnectionError):
                w.write(encode(event))
                await w.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        writer.write(BANNER)
        logged_in = False
        buf = b""
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                buf += data
                while b"\r\n\r\n" in buf:
                    block, buf = buf.split(b"\r\n\r\n", 1)
                    msg = parse(block)
                    self.actions.append(msg)
                    if not await self._answer(msg, writer, logged_in):
                        return
                    if msg.get("Action", "").lower() == "login" and msg.get("Secret") == self.secret:
                        logged_in = True
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            with contextlib.suppress(ValueError):
                self.writers.remove(writer)
            writer.close()

    async def _answer(self, msg: dict[str, str], writer: asyncio.StreamWriter, logged_in: bool) -> bool:
        action = msg.get("Action", "").lower()
        aid = msg.get("ActionID", "")
        if action == "login":
            if msg.get("Username") == self.username and msg.get("Secret") == self.secret:
                writer.write(
                    encode([("Response", "Success"), ("ActionID", aid), ("Message", "Authentication accepted")])
                )
                writer.write(
                    encode(
                        [
                            ("Event", "FullyBooted"),
                            ("Privilege", "system,all"),
                            ("Uptime", "12"),
                            ("LastReload", "12"),
                            ("Status", "Fully Booted"),
                        ]
                    )
                )
            else:
                writer.write(encode([("Response", "Error"), ("ActionID", aid), ("Message", "Authentication failed")]))
                await writer.drain()
                return False  # Asterisk closes after a failed login
        elif not logged_in:
            writer.write(encode([("Response", "Error"), ("ActionID", aid), ("Message", "Permission denied")]))
        elif self.on_action is not None and (custom := self.on_action(msg)) is not None:
            for chunk in custom:
                writer.write(chunk)
        elif action == "ping":
            if self.answer_pings:
                writer.write(
                    encode(
                        [
                            ("Response", "Success"),
                            ("ActionID", aid),
                            ("Ping", "Pong"),
                            ("Timestamp", "1763900000.000000"),
                        ]
                    )
                )
        elif action == "queuestatus":
            writer.write(
                encode(
                    [
                        ("Response", "Success"),
                        ("ActionID", aid),
                        ("EventList", "start"),
                        ("Message", "Queue status will follow"),
                    ]
                )
            )
            for i, ev in enumerate(self.queue_status):
                if self.cut_queue_status_after is not None and i >= self.cut_queue_status_after:
                    await writer.drain()
                    return False
                writer.write(encode([*ev.items(), ("ActionID", aid)]))
            writer.write(
                encode(
                    [
                        ("Event", "QueueStatusComplete"),
                        ("ActionID", aid),
                        ("EventList", "Complete"),
                        ("ListItems", str(len(self.queue_status))),
                    ]
                )
            )
        else:
            writer.write(encode([("Response", "Error"), ("ActionID", aid), ("Message", "Invalid/unknown command")]))
        await writer.drain()
        return True
