"""What AMI says about the capture legs and the callers, dispatched to the call that waits for it.

One subscription per event type for the whole router (not one per call: VarSet is frequent and
hundreds of calls may be capturing at once); events are routed by channel name in O(1):

* ``VarSet`` of ``UNICASTRTP_LOCAL_PORT`` on ``UnicastRTP/<router ip>:<port>-0x7f04e4009fb0`` (Asterisk 22
  names the leg after a pointer): Asterisk's side
  of the leg (where the router sends prompt audio) and the leg's channel name;
* ``BridgeEnter`` of that channel: audio sent from now on reaches the caller;
* ``Hangup`` of that channel: the leg is gone (Dial returns in the AGI session);
* ``DTMFEnd`` (Direction: Received) on a caller's channel: caller DTMF does not travel on the leg.

The router keeps each leg on a lease (:meth:`LegRegistry.keep_alive`): AMI ``Setvar`` of
``TIMEOUT(absolute)`` on the leg, renewed while the router lives, so a dead router's leg ends by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass, field

from ..ami.client import AMIClient
from ..ami.protocol import Message
from ..exceptions import AMIError

__all__ = ["LegRegistry", "LegWatch"]

log = logging.getLogger(__name__)

_LEG = re.compile(r"^UnicastRTP/(?P<host>[^:/]+):(?P<port>\d+)-(?:0x)?[0-9a-f]+$")


@dataclass(eq=False)
class LegWatch:
    rtp_port: int
    caller_channel: str
    channel: str | None = None
    asterisk_port: asyncio.Future[int] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    bridged: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    digits: asyncio.Queue[str] = field(default_factory=asyncio.Queue)


class LegRegistry:
    def __init__(self, ami: AMIClient) -> None:
        self.ami = ami
        self._by_port: dict[int, LegWatch] = {}
        self._by_channel: dict[str, LegWatch] = {}
        self._by_caller: dict[str, LegWatch] = {}
        self.lease_renewals = 0
        self.lease_failures = 0
        ami.on("VarSet", self._on_varset)
        ami.on("BridgeEnter", self._on_bridge_enter)
        ami.on("Hangup", self._on_hangup)
        ami.on("DTMFEnd", self._on_dtmf)

    @property
    def available(self) -> bool:
        """Live audio needs AMI: without it the leg could not be ended or fed."""
        return self.ami.connected.is_set()

    def watch(self, rtp_port: int, caller_channel: str) -> LegWatch:
        w = LegWatch(rtp_port, caller_channel)
        self._by_port[rtp_port] = w
        self._by_caller[caller_channel] = w
        return w

    def forget(self, w: LegWatch) -> None:
        self._by_port.pop(w.rtp_port, None)
        if w.channel:
            self._by_channel.pop(w.channel, None)
        if self._by_caller.get(w.caller_channel) is w:
            del self._by_caller[w.caller_channel]
        if not w.asterisk_port.done():
            w.asterisk_port.cancel()

    async def hangup_leg(self, w: LegWatch, timeout: float = 1.0) -> bool:
        """End the capture leg: Dial returns in the AGI session (~2 ms on Asterisk 22)."""
        if w.channel is None or w.ended.is_set():
            return w.ended.is_set()
        try:
            await self.ami.action("Hangup", {"Channel": w.channel}, timeout=timeout)
            return True
        except AMIError as exc:
            log.warning("could not hang up capture leg %s: %s", w.channel, exc)
            return False

    async def keep_alive(self, w: LegWatch, lease_s: float) -> None:
        """Keep the leg on a lease until cancelled: once AMI names it, set ``TIMEOUT(absolute)`` to
        ``lease_s`` and renew it every ``lease_s / 4``. If the router dies, or AMI is lost, the renewals
        stop and Asterisk hangs the leg up within ``lease_s`` (then Dial returns to the AGI)."""
        try:
            await asyncio.shield(w.asterisk_port)  # VarSet named the leg
        except Exception:  # never named (the round is over): nothing to renew
            return
        value = f"{lease_s:.3f}".rstrip("0").rstrip(".")
        while w.channel is not None and not w.ended.is_set():
            try:
                await self.ami.action(
                    "Setvar",
                    {"Channel": w.channel, "Variable": "TIMEOUT(absolute)", "Value": value},
                    timeout=lease_s / 2,
                )
                self.lease_renewals += 1
            except AMIError as exc:
                self.lease_failures += 1
                log.warning("lease of capture leg %s not renewed: %s", w.channel, exc)
            await asyncio.sleep(lease_s / 4)

    # -- AMI events -------------------------------------------------------------------------------------

    def _on_varset(self, m: Message) -> None:
        if m.get("Variable") != "UNICASTRTP_LOCAL_PORT":
            return
        channel = m.get("Channel", "")
        match = _LEG.match(channel)
        if match is None:
            return
        w = self._by_port.get(int(match["port"]))
        if w is None:
            return
        w.channel = channel
        self._by_channel[channel] = w
        if not w.asterisk_port.done():
            with contextlib.suppress(ValueError):
                w.asterisk_port.set_result(int(m.get("Value", "")))

    def _on_bridge_enter(self, m: Message) -> None:
        w = self._by_channel.get(m.get("Channel", ""))
        if w is not None:
            w.bridged.set()

    def _on_hangup(self, m: Message) -> None:
        w = self._by_channel.get(m.get("Channel", ""))
        if w is not None:
            w.ended.set()

    def _on_dtmf(self, m: Message) -> None:
        if m.get("Direction", "Received") != "Received":
            return
        w = self._by_caller.get(m.get("Channel", ""))
        if w is not None and m.get("Digit"):
            w.digits.put_nowait(m["Digit"])
