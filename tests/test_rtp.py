"""The RTP media endpoint, fed real UDP datagrams: garbage, loss, reordering, duplicates, foreign
sources and SSRCs, 30 ms packets, wraparound, pacing of outgoing audio."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest
from aiortc.rtp import RtpPacket

from agi_router.exceptions import MediaError
from agi_router.media import g711
from agi_router.media.rtp import PortPool, RtpFrame, RtpStream, open_rtp_stream

SSRC = 0x1234ABCD


def tone(n: int, freq: float = 440.0, amp: int = 8000, start: int = 0) -> np.ndarray:
    t = np.arange(start, start + n) / 8000
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def packet(seq: int, ts: int, payload: bytes, *, pt: int = 0, ssrc: int = SSRC, marker: int = 0) -> bytes:
    return RtpPacket(
        payload_type=pt,
        marker=marker,
        sequence_number=seq & 0xFFFF,
        timestamp=ts & 0xFFFFFFFF,
        ssrc=ssrc,
        payload=payload,
    ).serialize()


def speech_packets(count: int, *, seq0: int = 1000, ts0: int = 50000, samples: int = 160, pt: int = 0) -> list[bytes]:
    enc = g711.ulaw_encode if pt == 0 else g711.alaw_encode
    return [packet(seq0 + i, ts0 + i * samples, enc(tone(samples, start=i * samples)), pt=pt) for i in range(count)]


@pytest.fixture
async def stream() -> AsyncIterator[RtpStream]:
    pool = PortPool(40000, 40100)
    s = await open_rtp_stream(pool)
    yield s
    s.close()
    assert pool.in_use == 0


@pytest.fixture
def sender() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock  # type: ignore[misc]
    sock.close()


async def send_all(sock: socket.socket, port: int, datagrams: list[bytes], settle: float = 0.05) -> None:
    for d in datagrams:
        sock.sendto(d, ("127.0.0.1", port))
    await asyncio.sleep(settle)


def drain(s: RtpStream) -> list[RtpFrame]:
    out = []
    while not s.frames.empty():
        out.append(s.frames.get_nowait())
    return out


async def test_clean_stream(stream: RtpStream, sender: socket.socket) -> None:
    await send_all(sender, stream.local_port, speech_packets(50))
    frames = drain(stream)
    assert len(frames) == 50
    assert [f.stream_ms for f in frames] == [i * 20.0 for i in range(50)]
    expected = g711.ulaw_decode(g711.ulaw_encode(tone(160 * 50)))
    assert np.array_equal(np.concatenate([f.pcm for f in frames]), expected)
    st = stream.stats
    assert (st.packets, st.lost, st.garbage, st.duplicates, st.late) == (50, 0, 0, 0, 0)
    assert stream.ssrc == SSRC and stream.source == sender.getsockname()


MALFORMED = [
    (b"", "length is less than 12"),
    (b"\x80\x00\x00", "length is less than 12"),
    (b"\x40" + b"\x00" * 15, "invalid version"),  # version 1
    (b"\x82" + b"\x00" * 11, "truncated CSRC"),  # CC=2 but no CSRC
    (b"\x90" + b"\x00" * 11 + b"\x00\x00", "truncated extension profile"),
    (b"\x90" + b"\x00" * 11 + b"\xbe\xde\x00\x05", "truncated extension value"),
    (b"\xa0" + b"\x00" * 11 + b"\x00\xff", "padding length is invalid"),
    (b"GET / HTTP/1.1\r\n\r\n", "invalid version"),
]


@pytest.mark.parametrize(("data", "reason"), MALFORMED)
async def test_garbage_is_counted_with_the_reason(
    stream: RtpStream, sender: socket.socket, data: bytes, reason: str
) -> None:
    await send_all(sender, stream.local_port, [data, *speech_packets(3)])
    assert stream.stats.garbage == 1
    assert reason in stream.stats.errors[0]
    assert len(drain(stream)) == 3  # the stream goes on


async def test_unsupported_payload_types(stream: RtpStream, sender: socket.socket) -> None:
    dtmf_event = packet(1, 0, b"\x05\x0a\x00\xa0", pt=101)
    g729 = packet(2, 0, b"\x00" * 20, pt=18)
    await send_all(sender, stream.local_port, [dtmf_event, g729, *speech_packets(2)])
    assert stream.stats.unsupported_pt == 2 and len(drain(stream)) == 2


async def test_pcma(stream: RtpStream, sender: socket.socket) -> None:
    await send_all(sender, stream.local_port, speech_packets(5, pt=8))
    frames = drain(stream)
    expected = g711.alaw_decode(g711.alaw_encode(tone(800)))
    assert np.array_equal(np.concatenate([f.pcm for f in frames]), expected)


async def test_loss_leaves_a_gap_in_time(stream: RtpStream, sender: socket.socket) -> None:
    pkts = speech_packets(20)
    await send_all(sender, stream.local_port, pkts[:5] + pkts[8:])
    frames = drain(stream)
    assert stream.stats.lost == 3
    times = [f.stream_ms for f in frames]
    assert times[:5] == [0, 20, 40, 60, 80] and times[5] == 160


async def test_duplicates_and_late_packets_without_jitter_buffer(stream: RtpStream, sender: socket.socket) -> None:
    p = speech_packets(10)
    order = [p[0], p[1], p[1], p[2], p[4], p[3], p[5], p[6], p[7], p[8], p[9]]
    await send_all(sender, stream.local_port, order)
    frames = drain(stream)
    st = stream.stats
    assert st.duplicates == 1 and st.late == 1 and st.lost == 1  # p3 came after p4: too late, counted lost
    assert len(frames) == 9
    assert st.reordered == 1  # p3 (a duplicate of the newest packet is not a reordering)


async def test_reordering_with_aiortc_jitter_buffer(sender: socket.socket) -> None:
    pool = PortPool(40100, 40200)
    s = await open_rtp_stream(pool, jitter_packets=8)
    try:
        p = speech_packets(12)
        order = [p[0], p[2], p[1], p[3], p[5], p[4], p[4], p[6], p[7], p[8], p[9], p[10], p[11]]
        await send_all(sender, s.local_port, order)
        frames = drain(s)
        times = [f.stream_ms for f in frames]
        assert times == sorted(times) and times == [i * 20.0 for i in range(len(times))]
        assert len(frames) == 11  # the last one waits for its successor
        assert s.stats.duplicates == 1 and s.stats.lost == 0
        expected = g711.ulaw_decode(g711.ulaw_encode(tone(160 * 11)))
        assert np.array_equal(np.concatenate([f.pcm for f in frames]), expected)
    finally:
        s.close()


async def test_foreign_ssrc_and_source(stream: RtpStream, sender: socket.socket) -> None:
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.2", 0))
    try:
        await send_all(sender, stream.local_port, speech_packets(3))
        intruder = packet(2000, 0, b"\xff" * 160, ssrc=0xDEAD)
        await send_all(sender, stream.local_port, [intruder])
        other.sendto(speech_packets(1, seq0=1003, ts0=50480)[0], ("127.0.0.1", stream.local_port))
        await asyncio.sleep(0.05)
        assert stream.stats.foreign_ssrc == 1 and stream.stats.foreign_source == 1
        assert len(drain(stream)) == 3
    finally:
        other.close()


async def test_30ms_packets_are_reframed_to_20ms(stream: RtpStream, sender: socket.socket) -> None:
    await send_all(sender, stream.local_port, speech_packets(10, samples=240))
    frames = drain(stream)
    assert len(frames) == 15 and all(len(f.pcm) == 160 for f in frames)
    assert [f.stream_ms for f in frames] == [i * 20.0 for i in range(15)]


async def test_sequence_and_timestamp_wraparound(stream: RtpStream, sender: socket.socket) -> None:
    await send_all(sender, stream.local_port, speech_packets(10, seq0=65530, ts0=0xFFFFFF00))
    frames = drain(stream)
    assert len(frames) == 10 and stream.stats.lost == 0
    assert [f.stream_ms for f in frames] == [i * 20.0 for i in range(10)]


async def test_queue_overflow_keeps_the_newest(sender: socket.socket) -> None:
    pool = PortPool(40200, 40300)
    s = await open_rtp_stream(pool, queue_frames=5)
    try:
        await send_all(sender, s.local_port, speech_packets(8))
        frames = drain(s)
        assert s.stats.queue_overflow == 3 and frames[0].stream_ms == 60.0
    finally:
        s.close()


async def test_play_is_paced_and_stoppable(stream: RtpStream) -> None:
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    stream.peer = peer.getsockname()
    try:
        t0 = time.monotonic()
        assert await stream.play(tone(160 * 10)) is True
        elapsed = time.monotonic() - t0
        assert 0.18 <= elapsed <= 1.0  # paced, not burst (a burst takes ~1 ms)
        got = []
        while True:
            try:
                got.append(RtpPacket.parse(peer.recv(2048)))
            except BlockingIOError:
                break
        assert len(got) == 10 and got[0].marker == 1 and all(p.payload_type == 0 for p in got)
        assert all((b.sequence_number - a.sequence_number) & 0xFFFF == 1 for a, b in itertools.pairwise(got))
        assert all((b.timestamp - a.timestamp) & 0xFFFFFFFF == 160 for a, b in itertools.pairwise(got))
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, stop.set)
        t0 = time.monotonic()
        assert await stream.play(tone(160 * 100), stop) is False  # barge-in
        assert time.monotonic() - t0 < 1.0  # stopped early, not after the 2 s of audio
    finally:
        peer.close()


async def test_send_without_peer_is_an_error(stream: RtpStream) -> None:
    with pytest.raises(MediaError, match="UNICASTRTP_LOCAL_PORT"):
        stream.send_frame(tone(160))


def test_port_pool() -> None:
    pool = PortPool(41001, 41009)  # even ports 41002..41008
    ports = {pool.acquire() for _ in range(4)}
    assert ports == {41002, 41004, 41006, 41008}
    with pytest.raises(MediaError, match="no free RTP port"):
        pool.acquire()
    pool.release(41004)
    assert pool.acquire() == 41004
    with pytest.raises(ValueError, match="bad RTP port range"):
        PortPool(100, 50)


async def test_busy_ports_are_skipped() -> None:
    pool = PortPool(41100, 41104)  # 41100, 41102
    blockers = []
    for port in (41100, 41102):
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b.bind(("127.0.0.1", port))
        blockers.append(b)
    try:
        with pytest.raises(MediaError, match="could not bind"):
            await open_rtp_stream(pool, attempts=2)
        assert pool.in_use == 0
        blockers.pop().close()
        s = await open_rtp_stream(pool, attempts=4)
        assert s.local_port == 41102
        s.close()
    finally:
        for b in blockers:
            b.close()
