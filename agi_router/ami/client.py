"""An asyncio AMI client that survives production.

Why our own (README, "Dependencies"): ``asterisk-ami`` (0.1.7) is blocking, threaded and alpha;
panoramisk's Manager is asyncio but unmaintained since 2021, never checks Ping replies and
reconnects at a fixed 2 s. This client:

* logs in, correlates actions by ``ActionID`` and collects multi-event responses
  (``EventList: start`` ... ``EventList: Complete``) into one result;
* dispatches events by name to subscribers (``"*"`` for all); a failing subscriber is logged,
  never allowed to break the read loop;
* sends ``Ping`` every ``ping_interval`` and closes the connection when no reply comes within
  twice that (a half-open TCP connection is otherwise invisible);
* reconnects for ever with exponential backoff and full jitter (capped), and calls the
  ``on_connected`` hooks after each login so state can be re-synchronised (queues, channels);
* fails fast while disconnected: ``action()`` raises :class:`AMIConnectionError` at once, so callers
  route on safe defaults instead of waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum

from ..exceptions import AMIActionError, AMIAuthError, AMIConnectionError, AMIError, AMITimeout
from .protocol import Message, MessageParser, encode_action

__all__ = ["AMIClient", "AMIConfig", "AMIState", "ActionResult"]

log = logging.getLogger(__name__)

EventHandler = Callable[[Message], None]
ConnectedHook = Callable[["AMIClient"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class AMIConfig:
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "agi-router"
    secret: str = ""
    connect_timeout: float = 2.0
    action_timeout: float = 5.0
    ping_interval: float = 10.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0


class AMIState(StrEnum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"


@dataclass(slots=True)
class ActionResult:
    response: Message
    events: list[Message] = field(default_factory=list)


@dataclass(slots=True)
class _Pending:
    name: str
    future: asyncio.Future[ActionResult]
    collect: bool
    result: ActionResult | None = None


class AMIClient:
    def __init__(self, config: AMIConfig, *, rng: random.Random | None = None) -> None:
        self.config = config
        self.state = AMIState.DISCONNECTED
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.events_received = 0
        self.last_error: str | None = None
        self.banner: str | None = None
        self._rng = rng or random.Random()
        self._ids = itertools.count(1)
        self._pending: dict[str, _Pending] = {}
        self._handlers: dict[str, list[EventHandler]] = {}
        self._connected_hooks: list[ConnectedHook] = []
        self._state_hooks: list[Callable[[AMIState], None]] = []
        self._writer: asyncio.StreamWriter | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closing = False
        self._last_rx = 0.0

    # -- subscriptions ------------------------------------------------------------------------------

    def on(self, event: str, handler: EventHandler) -> Callable[[], None]:
        """Call ``handler`` for each event named ``event`` (case-insensitive, ``"*"`` = all)."""
        key = event.lower()
        self._handlers.setdefault(key, []).append(handler)

        def off() -> None:
            with contextlib.suppress(ValueError):
                self._handlers.get(key, []).remove(handler)

        return off

    def on_connected(self, hook: ConnectedHook) -> None:
        """Awaited after every successful login (first connection and each reconnection)."""
        self._connected_hooks.append(hook)

    def on_state(self, hook: Callable[[AMIState], None]) -> None:
        self._state_hooks.append(hook)

    # -- life cycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is None:
            self._closing = False
            self._runner = asyncio.create_task(self._run(), name="ami-client")

    async def wait_connected(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self.connected.wait()
            return True
        except TimeoutError:
            return False

    async def close(self) -> None:
        self._closing = True
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.write(encode_action("Logoff", {"ActionID": "logoff"}))
            self._writer.close()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner
            self._runner = None
        self._set_state(AMIState.DISCONNECTED)

    # -- actions ------------------------------------------------------------------------------------

    async def action(
        self,
        name: str,
        fields: dict[str, str | int] | list[tuple[str, str]] | None = None,
        *,
        timeout: float | None = None,
    ) -> ActionResult:
        """Send an action and wait for its response (and its event list, if it has one)."""
        if self.state is not AMIState.CONNECTED or self._writer is None:
            raise AMIConnectionError(f"AMI not connected ({self.last_error or self.state.value}); {name} not sent")
        return await self._send(name, fields, timeout=timeout)

    async def _send(
        self,
        name: str,
        fields: dict[str, str | int] | list[tuple[str, str]] | None,
        *,
        timeout: float | None,
    ) -> ActionResult:
        assert self._writer is not None
        action_id = f"agi-router-{next(self._ids)}"
        items: list[tuple[str, str]] = [("ActionID", action_id)]
        if isinstance(fields, dict):
            items += [(k, str(v)) for k, v in fields.items()]
        elif fields:
            items += fields
        fut: asyncio.Future[ActionResult] = asyncio.get_running_loop().create_future()
        self._pending[action_id] = _Pending(name, fut, collect=False)
        limit = self.config.action_timeout if timeout is None else timeout
        try:
            self._writer.write(encode_action(name, items))
            async with asyncio.timeout(limit):
                return await fut
        except TimeoutError:
            raise AMITimeout(f"no AMI response to {name} within {limit:.3g} s") from None
        finally:
            self._pending.pop(action_id, None)

    # -- connection loop -----------------------------------------------------------------------------

    def _set_state(self, state: AMIState) -> None:
        if state is self.state:
            return
        self.state = state
        if state is AMIState.CONNECTED:
            self.connected.set()
        else:
            self.connected.clear()
        for hook in list(self._state_hooks):
            try:
                hook(state)
            except Exception:
                log.exception("AMI state hook failed")

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter: uniform(0, min(cap, initial * 2**attempt))."""
        cap = min(self.config.backoff_max, self.config.backoff_initial * (2 ** min(attempt, 30)))
        return self._rng.uniform(self.config.backoff_initial / 2, max(cap, self.config.backoff_initial))

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            self._set_state(AMIState.CONNECTING)
            try:
                await self._session()
                attempt = 0  # the session was up; the next failure starts from the bottom
            except asyncio.CancelledError:
                raise
            except AMIAuthError as exc:
                self.last_error = str(exc)
                log.error("AMI login refused: %s", exc)
            except (AMIError, OSError, ConnectionError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                # the first failure, then one in ten: a PBX that is down for an hour must not flood the logs
                level = logging.WARNING if attempt % 10 == 0 else logging.DEBUG
                log.log(
                    level,
                    "AMI connection to %s:%s lost or refused (attempt %d): %s",
                    self.config.host,
                    self.config.port,
                    attempt + 1,
                    exc,
                )
            finally:
                self._fail_pending(AMIConnectionError(f"AMI connection lost ({self.last_error})"))
                self._writer = None
                self._set_state(AMIState.DISCONNECTED)
            if self._closing:
                break
            delay = self.backoff(attempt)
            attempt += 1
            self.reconnects += 1
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        cfg = self.config
        try:
            async with asyncio.timeout(cfg.connect_timeout):
                reader, writer = await asyncio.open_connection(cfg.host, cfg.port)
        except TimeoutError:
            raise AMIConnectionError(f"connect to {cfg.host}:{cfg.port} timed out") from None
        self._writer = writer
        parser = MessageParser()
        reader_task = asyncio.create_task(self._read_loop(reader, parser), name="ami-reader")
        ping_task: asyncio.Task[None] | None = None
        try:
            login: asyncio.Task[ActionResult] = asyncio.create_task(
                self._send(
                    "Login",
                    {"Username": cfg.username, "Secret": cfg.secret, "Events": "on"},
                    timeout=cfg.connect_timeout + cfg.action_timeout,
                )
            )
            await asyncio.wait({reader_task, login}, return_when=asyncio.FIRST_COMPLETED)
            if not login.done():
                # the reader may end first with the login's answer in its last read (Asterisk sends the Error
                # and closes): the login task has its result, it only needs a turn of the loop to see it
                await asyncio.wait({login}, timeout=1.0)
            if not login.done():
                login.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await login
                reader_task.result()  # raises the read error
                raise AMIConnectionError("connection closed during login")
            try:
                login.result()
            except AMIActionError as exc:
                raise AMIAuthError(f"login as {cfg.username!r} refused: {exc.message}") from None
            self.banner = parser.banner
            self.last_error = None
            self._set_state(AMIState.CONNECTED)
            log.info("AMI connected to %s:%s (%s)", cfg.host, cfg.port, self.banner)
            for hook in list(self._connected_hooks):
                try:
                    await hook(self)
                except Exception:
                    log.exception("AMI on_connected hook failed")
            ping_task = asyncio.create_task(self._ping_loop(), name="ami-ping")
            done, _pending = await asyncio.wait({reader_task, ping_task}, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()
            raise AMIConnectionError("connection closed by Asterisk")
        finally:
            for task in (reader_task, ping_task):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                elif task is not None and not task.cancelled():
                    task.exception()  # retrieved: what ended the session was raised above
            writer.close()

    async def _read_loop(self, reader: asyncio.StreamReader, parser: MessageParser) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    raise AMIConnectionError("connection closed by Asterisk")
                self._last_rx = time.monotonic()
                for msg in parser.feed(data):
                    self._dispatch(msg)
        except (AMIError, OSError) as exc:
            # fail waiting actions now, not when the session unwinds (a hook may be waiting on one); last_error
            # is the session's to set (a refused login must not read "connection closed", even for a moment)
            self._fail_pending(AMIConnectionError(f"AMI connection lost ({type(exc).__name__}: {exc})"))
            raise

    async def _ping_loop(self) -> None:
        interval = self.config.ping_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await self._send("Ping", None, timeout=2 * interval)
            except AMITimeout:
                raise AMIConnectionError(f"no Pong within {2 * interval:.3g} s: half-open connection") from None

    # -- dispatch ---------------------------------------------------------------------------------------

    def _dispatch(self, msg: Message) -> None:
        action_id = msg.action_id
        pending = self._pending.get(action_id) if action_id else None
        # an event may carry a "Response" field of its own (ChallengeResponseFailed: the digest the phone
        # sent): only a message without "Event" is an action's response
        if msg.response is not None and msg.event is None:
            if pending is None or pending.future.done():
                return
            if msg.response.lower() == "error":
                pending.future.set_exception(AMIActionError(pending.name, msg.get("Message", "")))
                return
            result = ActionResult(msg)
            if msg.get("EventList", "").lower() == "start":
                pending.collect = True
                pending.result = result
                return
            pending.future.set_result(result)
            return
        if msg.event is None:
            return
        self.events_received += 1
        if pending is not None and pending.collect and pending.result is not None:
            if msg.get("EventList", "").lower() == "complete":
                pending.future.set_result(pending.result)
            else:
                pending.result.events.append(msg)
            return
        for key in (msg.event.lower(), "*"):
            for handler in list(self._handlers.get(key, ())):
                try:
                    handler(msg)
                except Exception:
                    log.exception("AMI event handler failed on %s", msg.event)

    def _fail_pending(self, exc: Exception) -> None:
        for p in list(self._pending.values()):
            if not p.future.done():
                p.future.set_exception(exc)
                p.future.exception()  # mark retrieved: the waiter may already have gone
