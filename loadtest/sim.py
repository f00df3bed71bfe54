"""A simulated Asterisk, so the router can be loaded on any machine: FastAGI client, AMI server, chan_rtp legs.

What the router sees is what a real Asterisk 22 sends (formats from the traces in tests/fixtures):

* AMI: banner, ``Login`` (the router's secret), ``Ping``, ``QueueStatus`` (no queue: the router's queue
  model stays empty, so no saturation), ``Setvar TIMEOUT(absolute)`` on capture legs (the lease), ``Hangup``
  of a leg, and the events ``VarSet UNICASTRTP_LOCAL_PORT``, ``BridgeEnter``, ``DTMFEnd``, ``Hangup``;
* FastAGI: one TCP session per call with the ``agi_*`` environment, answers to ``EXEC Dial
  UnicastRTP/...`` (a leg: a UDP socket that sends the caller's audio as RTP µ-law, paced at 20 ms, and
  counts the router's prompt packets), ``GET DATA`` (the caller's digits or a timeout, after the prompt's
  length), ``STREAM FILE``, ``SET``/``GET VARIABLE``, ``ANSWER``.

Each call follows a :class:`CallerPlan` (what the caller does in each round and at each menu) and ends in
a :class:`CallRecord`: timings (setup, end of speech → route), the ``ROUTER_*`` variables, and a failure
reason when there is one: ``connect`` (refused), ``no_route`` (the session ended without ``ROUTER_DONE=1``:
the real dialplan would take its human route), ``silence`` (the router sent nothing, no command and no
audio, for ``silence_s`` while the caller waited), ``timeout`` (the call outlived ``call_timeout_s``),
``protocol`` (a line the simulator could not read).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import shlex
import socket
import time
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from aiortc.rtp import RtpPacket

from agi_router.media import g711

__all__ = ["CallRecord", "CallerPlan", "Round", "SimulatedAsterisk"]

Pcm = npt.NDArray[np.int16]
BANNER = b"Asterisk Call Manager/11.0.0\r\n"
_DIAL = re.compile(r"UnicastRTP/(?P<host>[^:/]+):(?P<port>\d+)/")
_LIMIT = re.compile(r"L\((\d+)\)")


def _encode(pairs: list[tuple[str, str]]) -> bytes:
    return ("".join(f"{k}: {v}\r\n" for k, v in pairs) + "\r\n").encode()


@dataclass(frozen=True)
class Round:
    """What the caller does on one capture leg: say ``audio`` after ``after_s``, or type ``dtmf``, or
    nothing (``audio`` and ``dtmf`` empty), or hang up after ``hang_up_s``."""

    audio: Pcm | None = None
    dtmf: str = ""
    after_s: float = 0.6
    hang_up_s: float | None = None


@dataclass(frozen=True)
class CallerPlan:
    number: str  # "" = withheld
    kind: str  # what kind of caller this is (for the report): speak, dtmf, silent, hangup, hint, person
    rounds: tuple[Round, ...] = ()  # capture legs in order; missing ones: the caller says nothing
    menu: tuple[str, ...] = ()  # digits typed at each GET DATA in order ("" = none: timeout)
    hint: str = ""  # MOTIVE_HINT (first AGI argument)
    account: str = "none"  # active | inactive | none | withheld (the directory the run imported)
    expects: str = ""  # what the router should act on if it understood the caller (loadtest/voices.py)


@dataclass
class CallRecord:
    call_id: str
    plan: CallerPlan
    offered_at: float  # loop time the call was started
    connected_at: float | None = None
    first_command_at: float | None = None
    ended_at: float | None = None
    route_at: float | None = None  # ROUTER_DONE=1 received
    speech_end_at: float | None = None  # last audio packet of a round the route directly followed
    end_declared_at: float | None = None  # the router hung that round's leg up: its end of speech
    variables: dict[str, str] = field(default_factory=dict)
    legs: int = 0
    prompt_packets: int = 0
    max_gap_s: float = 0.0  # longest stretch with nothing from the router while the call was up
    failure: str | None = None

    hangover_s: float = 0.55  # the router's endpointer hangover ([speech] hangover_ms)

    @property
    def speech_to_route_s(self) -> float | None:
        """The router's end of speech (its endpointer declares it one hangover after the last word) ->
        route: recognition, waiting for a decoder included; what the SLO bounds."""
        words = self.last_word_to_route_s
        return None if words is None else max(0.0, words - self.hangover_s)

    @property
    def last_word_to_route_s(self) -> float | None:
        """What the caller perceives: their last word -> route (the endpointer's hangover included)."""
        if self.route_at is None or self.speech_end_at is None:
            return None
        return max(0.0, self.route_at - self.speech_end_at)


class SimulatedAsterisk:
    """AMI server + call simulator on loopback. ``await start()``, then ``await call(plan)`` per call."""

    def __init__(
        self,
        *,
        ami_secret: str,
        hangover_s: float = 0.55,
        ami_username: str = "agi-router",
        agi_host: str = "127.0.0.1",
        agi_port: int = 4573,
        prompt_seconds: float = 4.0,
        silence_s: float = 15.0,
        call_timeout_s: float = 120.0,
    ) -> None:
        self.ami_secret = ami_secret
        self.hangover_s = hangover_s
        self.ami_username = ami_username
        self.agi = (agi_host, agi_port)
        self.prompt_seconds = prompt_seconds  # how long a GET DATA / STREAM FILE prompt "plays"
        self.silence_s = silence_s
        self.call_timeout_s = call_timeout_s
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._legs: dict[str, asyncio.Event] = {}
        self._leg_deadline: dict[str, float] = {}
        self._hangup_at: dict[str, float] = {}
        self._seq = 0
        self.ami_logins = 0

    # ------------------------------------------------------------------------------------------ AMI

    @property
    def ami_port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, ami_port: int = 0) -> None:
        self._server = await asyncio.start_server(self._serve_ami, "127.0.0.1", ami_port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in self._writers:
            w.close()

    async def _broadcast(self, pairs: list[tuple[str, str]]) -> None:
        data = _encode(pairs)
        for w in list(self._writers):
            with contextlib.suppress(ConnectionError):
                w.write(data)

    async def _serve_ami(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(BANNER)
        logged = False
        buf = b""
        try:
            while data := await reader.read(65536):
                buf += data
                while b"\r\n\r\n" in buf:
                    block, buf = buf.split(b"\r\n\r\n", 1)
                    msg: dict[str, str] = {}
                    for line in block.decode(errors="replace").split("\r\n"):
                        k, _, v = line.partition(": ")
                        msg.setdefault(k, v)
                    action, aid = msg.get("Action", "").lower(), msg.get("ActionID", "")
                    if action == "login":
                        if msg.get("Username") != self.ami_username or msg.get("Secret") != self.ami_secret:
                            writer.write(
                                _encode(
                                    [("Response", "Error"), ("ActionID", aid), ("Message", "Authentication failed")]
                                )
                            )
                            return
                        logged = True
                        self.ami_logins += 1
                        self._writers.append(writer)
                        writer.write(
                            _encode(
                                [("Response", "Success"), ("ActionID", aid), ("Message", "Authentication accepted")]
                            )
                        )
                        writer.write(_encode([("Event", "FullyBooted"), ("Status", "Fully Booted")]))
                    elif not logged:
                        writer.write(
                            _encode([("Response", "Error"), ("ActionID", aid), ("Message", "Permission denied")])
                        )
                    else:
                        writer.write(self._answer(action, aid, msg))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(ValueError):
                self._writers.remove(writer)
            writer.close()

    def _answer(self, action: str, aid: str, msg: dict[str, str]) -> bytes:
        ok = [("Response", "Success"), ("ActionID", aid)]
        if action == "ping":
            return _encode([*ok, ("Ping", "Pong"), ("Timestamp", f"{time.time():.6f}")])
        if action == "queuestatus":
            return _encode([*ok, ("EventList", "start"), ("Message", "Queue status will follow")]) + _encode(
                [("Event", "QueueStatusComplete"), ("ActionID", aid), ("EventList", "Complete"), ("ListItems", "0")]
            )
        channel = msg.get("Channel", "")
        if action in ("setvar", "hangup") and channel.startswith("UnicastRTP/"):
            ev = self._legs.get(channel)
            if ev is None:
                return _encode([("Response", "Error"), ("ActionID", aid), ("Message", "No such channel")])
            if action == "hangup":
                self._hangup_at[channel] = time.monotonic()
                ev.set()
            elif msg.get("Variable") == "TIMEOUT(absolute)":
                self._leg_deadline[channel] = time.monotonic() + float(msg.get("Value", "0") or 0)
        return _encode([*ok, ("Message", "OK")])

    # ------------------------------------------------------------------------------------------ calls

    async def call(self, plan: CallerPlan, offered_at: float) -> CallRecord:
        self._seq += 1
        uid = f"{time.time():.0f}.{self._seq}"
        rec = CallRecord(uid, plan, offered_at, hangover_s=self.hangover_s)
        channel = f"PJSIP/loadtest-{self._seq:08x}"
        try:
            async with asyncio.timeout(self.call_timeout_s):
                await self._run(plan, rec, uid, channel)
        except TimeoutError:
            rec.failure = rec.failure or "timeout"
        except (ConnectionRefusedError, OSError) as exc:
            rec.failure = rec.failure or (
                "connect" if rec.connected_at is None else f"socket: {exc.__class__.__name__}"
            )
        rec.ended_at = time.monotonic()
        if rec.failure is None and rec.variables.get("ROUTER_DONE") != "1" and not rec.plan.kind == "hangup":
            rec.failure = "no_route"
        return rec

    async def _run(self, plan: CallerPlan, rec: CallRecord, uid: str, channel: str) -> None:
        reader, writer = await asyncio.open_connection(*self.agi)
        rec.connected_at = time.monotonic()
        env = [
            "agi_network: yes",
            "agi_network_script: 3646",
            f"agi_request: agi://{self.agi[0]}/3646",
            f"agi_channel: {channel}",
            "agi_language: fr",
            "agi_type: PJSIP",
            f"agi_uniqueid: {uid}",
            "agi_version: 22.10.1",
            f"agi_callerid: {plan.number or 'unknown'}",
            "agi_calleridname: unknown",
            f"agi_callingpres: {'32' if not plan.number else '0'}",
            "agi_dnid: 3646",
            "agi_context: hotline",
            "agi_extension: 3646",
            "agi_priority: 5",
            "agi_enhanced: 0.0",
        ]
        if plan.hint:
            env.append(f"agi_arg_1: {plan.hint}")
        writer.write(("\n".join(env) + "\n\n").encode())
        rounds, menu = list(plan.rounds), list(plan.menu)
        last = time.monotonic()
        try:
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), self.silence_s)
                except TimeoutError:
                    rec.failure = "silence"
                    return
                now = time.monotonic()
                rec.max_gap_s = max(rec.max_gap_s, now - last)
                if not line:
                    return  # the router closed the session
                if rec.first_command_at is None:
                    rec.first_command_at = now
                try:
                    argv = shlex.split(line.decode("utf-8", "replace"))
                except ValueError:
                    rec.failure = "protocol"
                    return
                reply, hung_up = await self._command(argv, rec, rounds, menu, channel)
                writer.write((reply + "\n").encode())
                last = time.monotonic()
                if hung_up:
                    writer.write(b"HANGUP\n")
                    await writer.drain()
                    return
        finally:
            writer.close()

    async def _command(
        self, argv: list[str], rec: CallRecord, rounds: list[Round], menu: list[str], channel: str
    ) -> tuple[str, bool]:
        cmd = " ".join(argv[:2]).upper()
        if cmd == "SET VARIABLE" and len(argv) >= 4:
            rec.variables[argv[2]] = argv[3]
            if argv[2] == "ROUTER_DONE" and argv[3] == "1":
                rec.route_at = time.monotonic()
            return "200 result=1", False
        if cmd == "GET VARIABLE":
            return "200 result=0", False
        # another prompt or round: the route, when it comes, does not follow that speech directly
        rec.speech_end_at = rec.end_declared_at = None
        if argv[:1] == ["EXEC"] and len(argv) >= 3 and argv[1].lower() == "dial":
            r = rounds.pop(0) if rounds else Round()
            return await self._leg(argv[2], r, rec, channel)
        if cmd == "GET DATA":
            await asyncio.sleep(min(self.prompt_seconds, 1.0))  # the prompt plays (shortened: a load test)
            digits = menu.pop(0) if menu else ""
            if digits:
                return f"200 result={digits}", False
            timeout_ms = int(argv[3]) if len(argv) > 3 and argv[3].isdigit() else 2000
            await asyncio.sleep(min(timeout_ms / 1000, 2.0))
            return "200 result= (timeout)", False
        if cmd == "STREAM FILE":
            await asyncio.sleep(min(self.prompt_seconds, 1.0))
            return "200 result=0 endpos=8000", False
        return "200 result=0", False

    async def _leg(self, dial: str, r: Round, rec: CallRecord, caller_channel: str) -> tuple[str, bool]:
        m = _DIAL.search(dial)
        if m is None:
            return "200 result=-1", False
        limit = _LIMIT.search(dial)
        deadline = time.monotonic() + (int(limit.group(1)) / 1000 if limit else 60.0)
        leg = f"UnicastRTP/{m['host']}:{m['port']}-0x{random.getrandbits(44):x}"
        hung = self._legs[leg] = asyncio.Event()
        rec.legs += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        target = (m["host"], int(m["port"]))
        caller_hung_up = False
        try:
            await self._broadcast(
                [
                    ("Event", "VarSet"),
                    ("Channel", leg),
                    ("Variable", "UNICASTRTP_LOCAL_PORT"),
                    ("Value", str(sock.getsockname()[1])),
                ]
            )
            await self._broadcast([("Event", "BridgeEnter"), ("Channel", leg)])
            sender = asyncio.create_task(self._speak(sock, target, r, rec, caller_channel))
            while not hung.is_set():
                with contextlib.suppress(BlockingIOError):
                    while sock.recv(2048):
                        rec.prompt_packets += 1
                now = time.monotonic()
                if now > deadline or now > self._leg_deadline.get(leg, float("inf")):
                    break
                if sender.done() and sender.result():
                    caller_hung_up = True
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.02):
                        await hung.wait()
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            await self._broadcast([("Event", "Hangup"), ("Channel", leg), ("Cause", "16")])
            rec.end_declared_at = self._hangup_at.get(leg)
        finally:
            self._hangup_at.pop(leg, None)
            sock.close()
            self._legs.pop(leg, None)
            self._leg_deadline.pop(leg, None)
        return ("200 result=-1", True) if caller_hung_up else ("200 result=0", False)

    async def _speak(
        self, sock: socket.socket, target: tuple[str, int], r: Round, rec: CallRecord, channel: str
    ) -> bool:
        """The caller's side of one leg; True when they hang up."""
        await asyncio.sleep(r.after_s)
        for d in r.dtmf:
            await self._broadcast(
                [
                    ("Event", "DTMFEnd"),
                    ("Channel", channel),
                    ("Digit", d),
                    ("DurationMs", "120"),
                    ("Direction", "Received"),
                ]
            )
            await asyncio.sleep(0.15)
        if r.audio is not None and len(r.audio):
            ulaw = g711.ulaw_encode(r.audio)
            seq, ts, ssrc = random.randint(0, 65535), random.getrandbits(32), random.getrandbits(32)
            loop = asyncio.get_running_loop()
            start = loop.time()
            for i in range(len(ulaw) // 160):
                pkt = RtpPacket(
                    payload_type=0,
                    sequence_number=(seq + i) & 0xFFFF,
                    timestamp=(ts + 160 * i) & 0xFFFFFFFF,
                    ssrc=ssrc,
                    payload=ulaw[160 * i : 160 * (i + 1)],
                )
                with contextlib.suppress(BlockingIOError):
                    sock.sendto(pkt.serialize(), target)
                delay = start + (i + 1) * 0.02 - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            rec.speech_end_at = time.monotonic()
        if r.hang_up_s is not None:
            await asyncio.sleep(r.hang_up_s)
            return True
        await asyncio.sleep(3600)
        return False
