"""The PBX side of a live-audio capture, faked as Asterisk 22 does it (see test_real_asterisk.py for
the real thing): the AGI ``EXEC Dial UnicastRTP/...`` blocks while a chan_rtp leg sends the caller's
audio as µ-law RTP, AMI announces ``VarSet UNICASTRTP_LOCAL_PORT`` and ``BridgeEnter`` for a leg
named ``UnicastRTP/<host>:<port>-0x<pointer>``, the leg ends on AMI ``Hangup`` (then Dial returns
``200 result=0``), on Dial's ``L()`` limit, or when a ``TIMEOUT(absolute)`` set on it with AMI ``Setvar``
expires (a new Setvar replaces the old one; 0 clears it), caller DTMF arrives as AMI ``DTMFEnd`` on the
caller's channel, and a caller hang-up makes Dial return ``200 result=-1`` followed by an inline ``HANGUP``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
from dataclasses import dataclass, field

import numpy as np
from aiortc.rtp import RtpPacket

from agi_router.media import g711
from tests.fakeami import FakeAMI, encode

_DIAL = re.compile(r"^UnicastRTP/(?P<host>[^:/]+):(?P<port>\d+)/")


@dataclass
class CallerScript:
    """What the caller does during one capture round (one Dial)."""

    audio: np.ndarray | None = None  # what they say (8 kHz int16), None = silence (nothing forwarded)
    start_after_s: float = 0.3  # when they start speaking after the bridge
    dtmf: str = ""  # typed instead (AMI DTMFEnd)
    hang_up_after_s: float | None = None
    drop: set[int] = field(default_factory=set)  # packet indexes lost
    swap: set[int] = field(default_factory=set)  # packet i sent after i+1
    garbage_every: int = 0  # send a garbage datagram every N packets
    # (packet index, seconds): the network holds the packets from that index this long, then releases them
    # in a burst (a congested path), as opposed to the caller falling silent (no packet is missing)
    stalls: dict[int, float] = field(default_factory=dict)
    varset_after_s: float = 0.0  # a loaded PBX: AMI announces the leg's port this late


@dataclass
class FakePBX:
    ami: FakeAMI
    caller_channel: str = "PJSIP/softphone-00000001"
    rounds: list[CallerScript] = field(default_factory=list)
    legs: list[str] = field(default_factory=list)
    prompt_packets: list[int] = field(default_factory=list)  # RTP packets the router sent, per round
    hangups: list[str] = field(default_factory=list)
    leg_ends: list[tuple[str, str, float]] = field(default_factory=list)  # (leg, why, loop time)
    speech_ends: list[float] = field(default_factory=list)  # loop time the caller's last packet of a round left
    lease_renewals: int = 0

    def __post_init__(self) -> None:
        self._hangup_requested: dict[str, asyncio.Event] = {}
        self._absolute_timeout: dict[str, float] = {}  # leg -> loop time at which it hangs itself up
        self.ami.on_action = self._on_action

    def _on_action(self, msg: dict[str, str]) -> list[bytes] | None:
        action = msg.get("Action", "").lower()
        aid = msg.get("ActionID", "")
        if action == "setvar" and msg.get("Variable") == "TIMEOUT(absolute)":
            leg = msg.get("Channel", "")
            if leg not in self._hangup_requested:
                return [encode([("Response", "Error"), ("ActionID", aid), ("Message", "No such channel")])]
            seconds = float(msg.get("Value", "0") or 0)
            if seconds > 0:
                self._absolute_timeout[leg] = asyncio.get_running_loop().time() + seconds
            else:
                self._absolute_timeout.pop(leg, None)
            self.lease_renewals += 1
            return [encode([("Response", "Success"), ("ActionID", aid), ("Message", "Variable Set")])]
        if action != "hangup":
            return None
        ev = self._hangup_requested.get(msg.get("Channel", ""))
        aid = msg.get("ActionID", "")
        if ev is None:
            return [encode([("Response", "Error"), ("ActionID", aid), ("Message", "No such channel")])]
        self.hangups.append(msg["Channel"])
        ev.set()
        return [encode([("Response", "Success"), ("ActionID", aid), ("Message", "Channel Hungup")])]

    async def dial(self, argv: list[str]) -> list[str]:
        """Asterisk executing ``EXEC Dial UnicastRTP/<host>:<port>/c(ulaw),,gL(<ms>)``."""
        m = _DIAL.match(argv[2])
        assert m is not None, argv
        limit_ms = int(re.search(r"L\((\d+)\)", argv[2]).group(1)) if "L(" in argv[2] else 60000  # type: ignore[union-attr]
        script = self.rounds.pop(0) if self.rounds else CallerScript()
        leg = f"UnicastRTP/{m['host']}:{m['port']}-0x{random.getrandbits(44):x}"
        self.legs.append(leg)
        hung = self._hangup_requested[leg] = asyncio.Event()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        target = (m["host"], int(m["port"]))
        received = 0
        try:
            if script.varset_after_s:
                await asyncio.sleep(script.varset_after_s)
            await self.ami.broadcast(
                [
                    ("Event", "VarSet"),
                    ("Channel", leg),
                    ("Variable", "UNICASTRTP_LOCAL_PORT"),
                    ("Value", str(sock.getsockname()[1])),
                ]
            )
            await asyncio.sleep(0.003)
            await self.ami.broadcast([("Event", "BridgeEnter"), ("Channel", leg)])
            sender = asyncio.create_task(self._speak(sock, target, script))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + limit_ms / 1000
            caller_gone = False
            why = "ami-hangup"
            while not hung.is_set():
                with contextlib.suppress(BlockingIOError):
                    while True:
                        sock.recv(2048)
                        received += 1
                now = loop.time()
                if now > deadline:
                    why = "limit"
                    break
                if now > self._absolute_timeout.get(leg, float("inf")):
                    why = "absolute-timeout"
                    break
                if sender.done() and sender.result() == "hangup":
                    caller_gone = True
                    why = "caller"
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.01):
                        await hung.wait()
            self.leg_ends.append((leg, why, loop.time()))
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            await self.ami.broadcast([("Event", "Hangup"), ("Channel", leg), ("Cause", "16")])
            self.prompt_packets.append(received)
            if caller_gone:
                return ["200 result=-1", "HANGUP"]
            return ["200 result=0"]
        finally:
            sock.close()
            self._hangup_requested.pop(leg, None)
            self._absolute_timeout.pop(leg, None)

    async def _speak(self, sock: socket.socket, target: tuple[str, int], script: CallerScript) -> str:
        await asyncio.sleep(script.start_after_s)
        if script.dtmf:
            for d in script.dtmf:
                await self.ami.broadcast(
                    [
                        ("Event", "DTMFEnd"),
                        ("Channel", self.caller_channel),
                        ("Digit", d),
                        ("DurationMs", "120"),
                        ("Direction", "Received"),
                    ]
                )
                await asyncio.sleep(0.15)
        if script.audio is not None:
            pcm = script.audio
            n = len(pcm) // 160
            packets = []
            seq, ts, ssrc = random.randint(0, 65535), random.getrandbits(32), random.getrandbits(32)
            for i in range(n):
                payload = g711.ulaw_encode(pcm[i * 160 : (i + 1) * 160])
                packets.append(
                    RtpPacket(
                        payload_type=0,
                        sequence_number=(seq + i) & 0xFFFF,
                        timestamp=(ts + i * 160) & 0xFFFFFFFF,
                        ssrc=ssrc,
                        payload=payload,
                    ).serialize()
                )
            order = list(range(n))
            for i in sorted(script.swap):
                if i + 1 < n:
                    order[i], order[i + 1] = order[i + 1], order[i]
            start = asyncio.get_running_loop().time()
            for k, i in enumerate(order):
                if k in script.stalls:
                    await asyncio.sleep(script.stalls[k])
                if i not in script.drop:
                    sock.sendto(packets[i], target)
                if script.garbage_every and k % script.garbage_every == 0:
                    sock.sendto(b"\x00garbage" * 3, target)
                delay = start + (k + 1) * 0.02 - asyncio.get_running_loop().time()
                if delay > 0:
                    await asyncio.sleep(delay)
            self.speech_ends.append(asyncio.get_running_loop().time())
        if script.hang_up_after_s is not None:
            await asyncio.sleep(script.hang_up_after_s)
            return "hangup"
        await asyncio.sleep(3600)
        return "done"
