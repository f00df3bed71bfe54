"""The router's RTP media endpoint for one call: the caller's audio from Asterisk's chan_rtp leg.

Asterisk 22 bridges the caller to ``UnicastRTP/<router ip>:<port>/c(ulaw)`` and sends the caller's
audio there as G.711 (payload type 0, 160-byte 20 ms packets; a 30 ms caller arrives as 240-byte
packets). Parsing is aiortc's :class:`~aiortc.rtp.RtpPacket` (precise ``ValueError`` per
malformation); reordering, when enabled, is aiortc's :class:`~aiortc.jitterbuffer.JitterBuffer`.

What arrives is checked in order, each refusal counted in :class:`RtpStats`, never raised:
source host -> RTP syntax -> payload type -> SSRC (the first one seen is latched) -> sequence
(duplicates, remembered over the last 256 sequence numbers, and packets older than the play-out
point are dropped; gaps are counted as loss).
Decoded audio is re-cut into frames of ``frame_ms`` and queued with its stream time in ms (from the
RTP timestamp, so a gap in timestamps is a gap in time even when nothing was forwarded).

Audio to the caller (prompts, for barge-in) leaves from the SAME socket, towards Asterisk's side
of the leg (learnt from AMI ``UNICASTRTP_LOCAL_PORT``), paced by the router at 20 ms against
absolute monotonic deadlines (Asterisk does not re-time what it relays).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from ..exceptions import MediaError
from . import g711

__all__ = ["PortPool", "RtpFrame", "RtpStats", "RtpStream", "open_rtp_stream"]

log = logging.getLogger(__name__)

Pcm = npt.NDArray[np.int16]
PT_PCMU = 0
PT_PCMA = 8
_DECODERS: dict[int, Callable[[bytes], Pcm]] = {PT_PCMU: g711.ulaw_decode, PT_PCMA: g711.alaw_decode}
RATE = 8000


@dataclass(frozen=True, slots=True)
class RtpFrame:
    pcm: Pcm
    stream_ms: float  # start of this frame on the stream's clock (0 = first packet)
    arrival: float  # time.monotonic() when its packet arrived


@dataclass(slots=True)
class RtpStats:
    packets: int = 0  # accepted
    bytes: int = 0
    garbage: int = 0  # not RTP
    foreign_source: int = 0
    foreign_ssrc: int = 0
    unsupported_pt: int = 0
    duplicates: int = 0
    late: int = 0  # older than what was already played out
    reordered: int = 0
    lost: int = 0  # sequence numbers never received
    queue_overflow: int = 0
    jitter_ms: float = 0.0  # RFC 3550 interarrival jitter estimate
    sent: int = 0
    first_packet_at: float | None = None
    last_packet_at: float | None = None
    errors: list[str] = field(default_factory=list)  # the first few refusal reasons, for logs

    def note(self, reason: str) -> None:
        if len(self.errors) < 10:
            self.errors.append(reason)

    COUNTERS = (
        "packets",
        "bytes",
        "garbage",
        "foreign_source",
        "foreign_ssrc",
        "unsupported_pt",
        "duplicates",
        "late",
        "reordered",
        "lost",
        "queue_overflow",
        "sent",
    )

    def accumulate(self, other: RtpStats) -> None:
        """Add ``other``'s counters to these (totals over closed streams)."""
        for name in self.COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class PortPool:
    """Even UDP ports in ``[start, end)`` for RTP (RTCP would use port+1, which stays free).

    Must lie outside Asterisk's own rtp.conf range when both run on one host."""

    def __init__(self, start: int = 30000, end: int = 31000) -> None:
        if not 1024 <= start < end <= 65536:
            raise ValueError(f"bad RTP port range {start}-{end}")
        self.start, self.end = start + (start % 2), end
        self._free = list(range(self.start, end, 2))
        random.shuffle(self._free)
        self._used: set[int] = set()

    @property
    def available(self) -> int:
        return len(self._free)

    @property
    def in_use(self) -> int:
        return len(self._used)

    def acquire(self) -> int:
        if not self._free:
            raise MediaError(f"no free RTP port in {self.start}-{self.end} ({len(self._used)} in use)")
        port = self._free.pop()
        self._used.add(port)
        return port

    def release(self, port: int) -> None:
        if port in self._used:
            self._used.remove(port)
            self._free.insert(0, port)  # reuse last: give stale packets time to drain


class RtpStream(asyncio.DatagramProtocol):
    def __init__(
        self,
        *,
        expected_host: str | None = "127.0.0.1",
        frame_ms: int = 20,
        jitter_packets: int = 0,
        queue_frames: int = 500,
    ) -> None:
        if jitter_packets and jitter_packets & (jitter_packets - 1):
            raise ValueError("jitter_packets must be 0 or a power of 2")
        self.expected_host = expected_host
        self.frame_samples = RATE * frame_ms // 1000
        self.frame_ms = frame_ms
        self.stats = RtpStats()
        self.frames: asyncio.Queue[RtpFrame] = asyncio.Queue(maxsize=queue_frames)
        self.transport: asyncio.DatagramTransport | None = None
        self.local_port = 0
        self.peer: tuple[str, int] | None = None  # Asterisk's side of the leg, for sending
        self.source: tuple[str, int] | None = None  # where the caller's audio comes from
        self.ssrc: int | None = None
        self._jitter = JitterBuffer(capacity=jitter_packets) if jitter_packets else None
        self._next_seq: int | None = None  # next expected sequence number (without jitter buffer)
        self._max_seq: int | None = None
        self._recent: deque[int] = deque(maxlen=256)  # sequence numbers seen lately: duplicates
        self._recent_set: set[int] = set()
        self._ts0: int | None = None
        self._pending = np.zeros(0, dtype=np.int16)
        self._pending_ms = 0.0
        self._transit: float | None = None
        self._closed = asyncio.Event()
        self._send_seq = random.randint(0, 0xFFFF)
        self._send_ts = random.randint(0, 0xFFFFFFFF)
        self._send_ssrc = random.randint(1, 0xFFFFFFFF)

    # -- asyncio protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram transport, by construction
        self.local_port = transport.get_extra_info("sockname")[1]

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed.set()

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable after Asterisk tore the leg down: not an error of ours
        self.stats.note(f"socket: {exc}")

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        st = self.stats
        now = time.monotonic()
        if self.expected_host is not None and addr[0] != self.expected_host:
            st.foreign_source += 1
            st.note(f"packet from {addr[0]}, expected {self.expected_host}")
            return
        try:
            packet = RtpPacket.parse(data)
        except ValueError as exc:
            st.garbage += 1
            st.note(f"not RTP ({len(data)} bytes): {exc}")
            return
        decode = _DECODERS.get(packet.payload_type)
        if decode is None:
            st.unsupported_pt += 1
            st.note(f"payload type {packet.payload_type} not G.711")
            return
        if self.ssrc is None:
            self.ssrc = packet.ssrc
            self.source = addr
            self._ts0 = packet.timestamp
            st.first_packet_at = now
        elif packet.ssrc != self.ssrc:
            st.foreign_ssrc += 1
            st.note(f"SSRC {packet.ssrc:#x}, latched {self.ssrc:#x}")
            return
        st.last_packet_at = now
        seq = packet.sequence_number
        if seq in self._recent_set:
            st.duplicates += 1
            return
        if len(self._recent) == self._recent.maxlen:
            self._recent_set.discard(self._recent[0])
        self._recent.append(seq)
        self._recent_set.add(seq)
        if self._max_seq is not None and (seq - self._max_seq) & 0xFFFF >= 0x8000:
            st.reordered += 1  # arrived after a later one (duplicates count here too)
        else:
            self._max_seq = seq
        self._update_jitter(packet.timestamp, now)
        if self._jitter is not None:
            packet._data = packet.payload  # type: ignore[attr-defined]  # what aiortc's buffer joins
            self._accept_buffered(packet, decode, now)
        else:
            self._accept_direct(packet, decode, now)

    # -- sequence handling -------------------------------------------------------------------------

    def _accept_direct(self, packet: RtpPacket, decode: Callable[[bytes], Pcm], now: float) -> None:
        st = self.stats
        seq = packet.sequence_number
        if self._next_seq is not None:
            delta = (seq - self._next_seq) & 0xFFFF
            if delta >= 0x8000:  # behind the play-out point: too late to play
                st.late += 1
                return
            st.lost += delta
        self._next_seq = (seq + 1) & 0xFFFF
        self._emit(packet.payload, packet.timestamp, decode, now)

    def _accept_buffered(self, packet: RtpPacket, decode: Callable[[bytes], Pcm], now: float) -> None:
        jb = self._jitter
        assert jb is not None
        st = self.stats
        seq = packet.sequence_number
        origin = jb._origin
        if origin is not None:
            behind = (origin - seq) & 0xFFFF
            if 0 < behind < 0x8000:  # before the play-out point: already played or given up
                st.late += 1
                return
        _pli, frame = jb.add(packet)
        released = 0
        while frame is not None:
            self._emit(frame.data, frame.timestamp, decode, now)
            released += 1
            # add() releases one frame per packet: after a reordering, several may be complete
            frame = jb._remove_frame(seq)
        if origin is not None and jb._origin is not None:
            advanced = (jb._origin - origin) & 0xFFFF
            if advanced > released and advanced < 0x8000:
                st.lost += advanced - released  # skipped over a hole (or dropped for capacity)

    def _update_jitter(self, timestamp: int, now: float) -> None:
        transit = now * RATE - timestamp
        if self._transit is not None:
            d = abs(transit - self._transit)
            if d < RATE * 10:  # ignore timestamp jumps (silence suppression)
                self.stats.jitter_ms += (d / RATE * 1000 - self.stats.jitter_ms) / 16
        self._transit = transit

    # -- frames ----------------------------------------------------------------------------------------

    def _emit(self, payload: bytes, timestamp: int, decode: Callable[[bytes], Pcm], now: float) -> None:
        st = self.stats
        assert self._ts0 is not None
        st.packets += 1
        st.bytes += len(payload)
        pcm = decode(payload)
        start_ms = ((timestamp - self._ts0) & 0xFFFFFFFF) / RATE * 1000
        if abs(start_ms - (self._pending_ms + len(self._pending) / RATE * 1000)) > 1 or not len(self._pending):
            # a gap in the timestamps: drop the partial frame, restart framing at this packet
            self._pending = pcm
            self._pending_ms = start_ms
        else:
            self._pending = np.concatenate([self._pending, pcm])
        n = self.frame_samples
        while len(self._pending) >= n:
            frame, self._pending = self._pending[:n], self._pending[n:]
            item = RtpFrame(frame, self._pending_ms, now)
            self._pending_ms += self.frame_ms
            try:
                self.frames.put_nowait(item)
            except asyncio.QueueFull:
                st.queue_overflow += 1
                with contextlib.suppress(asyncio.QueueEmpty):
                    self.frames.get_nowait()
                self.frames.put_nowait(item)

    # -- sending -------------------------------------------------------------------------------------

    def send_frame(self, pcm: Pcm, *, marker: bool = False) -> None:
        """Send one 20 ms frame of audio to Asterisk's side of the leg (µ-law)."""
        if self.transport is None or self.peer is None:
            raise MediaError("no peer to send to yet (UNICASTRTP_LOCAL_PORT not known)")
        packet = RtpPacket(
            payload_type=PT_PCMU,
            marker=int(marker),
            sequence_number=self._send_seq,
            timestamp=self._send_ts,
            ssrc=self._send_ssrc,
            payload=g711.ulaw_encode(pcm),
        )
        self.transport.sendto(packet.serialize(), self.peer)
        self._send_seq = (self._send_seq + 1) & 0xFFFF
        self._send_ts = (self._send_ts + len(pcm)) & 0xFFFFFFFF
        self.stats.sent += 1

    async def play(self, pcm: Pcm, stop: asyncio.Event | None = None) -> bool:
        """Stream ``pcm`` paced at 20 ms; returns False if ``stop`` was set before the end (barge-in)."""
        n = RATE // 50
        start = time.monotonic()
        for i in range(0, len(pcm), n):
            if stop is not None and stop.is_set():
                return False
            chunk = pcm[i : i + n]
            if len(chunk) < n:
                chunk = np.concatenate([chunk, np.zeros(n - len(chunk), dtype=np.int16)])
            self.send_frame(chunk, marker=i == 0)
            deadline = start + (i // n + 1) * 0.020
            delay = deadline - time.monotonic()
            if delay > 0:
                if stop is not None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                else:
                    await asyncio.sleep(delay)
        return not (stop is not None and stop.is_set())

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def wait_closed(self) -> None:
        await self._closed.wait()


async def open_rtp_stream(pool: PortPool, host: str = "127.0.0.1", *, attempts: int = 10, **kw: object) -> RtpStream:
    """Bind a stream on a free port of ``pool`` (skipping ports another process holds)."""
    loop = asyncio.get_running_loop()
    last: OSError | None = None
    for _ in range(attempts):
        port = pool.acquire()
        try:
            _t, proto = await loop.create_datagram_endpoint(
                lambda: RtpStream(**kw),  # type: ignore[arg-type]
                local_addr=(host, port),
            )
        except OSError as exc:
            pool.release(port)
            last = exc
            continue
        stream = proto
        original_close = stream.close

        def close(port: int = port, original: Callable[[], None] = original_close) -> None:
            original()
            pool.release(port)

        stream.close = close  # type: ignore[method-assign]
        return stream
    raise MediaError(f"could not bind an RTP port after {attempts} attempts: {last}")
