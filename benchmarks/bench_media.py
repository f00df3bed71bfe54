"""RTP + VAD cost per live-audio stream, and how many streams one core keeps up with in real time.

Two measurements:

1. per packet, in process: ``RtpStream.datagram_received`` (aiortc parse, SSRC/sequence checks,
   G.711 decode, re-framing) then ``Endpointer.feed`` (webrtcvad) on one 20 ms packet of speech,
   timed over many packets -> µs per packet -> streams per core (50 packets/s per stream);
2. over real sockets: a sender process paces N streams of µ-law speech at 20 ms to N RtpStreams in
   this process (pinned to one core), each consumed by an endpointer; the receiver's CPU share and
   how late frames are consumed tell whether one core keeps up with N streams.

    .venv/bin/python benchmarks/bench_media.py [--streams 100,300,500] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
from aiortc.rtp import RtpPacket
from machine import machine_info  # benchmarks/machine.py

from agi_router.media import g711
from agi_router.media.rtp import PortPool, RtpStream, open_rtp_stream
from agi_router.speech.endpointer import Endpointer, EndpointerConfig

RESULTS = Path(__file__).parent / "results" / "media.json"


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Voiced-looking audio (harmonics with a syllable envelope): webrtcvad takes it for speech."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(8000 * seconds)) / 8000
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.5 * t)
    sig = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / 8000) / k for k in range(1, 8))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    pcm = 6000 * sig * env + rng.normal(0, 100, len(t))
    return np.clip(pcm, -32768, 32767).astype(np.int16)


def packets_for(pcm: np.ndarray, ssrc: int) -> list[bytes]:
    out = []
    for i in range(len(pcm) // 160):
        payload = g711.ulaw_encode(pcm[i * 160 : (i + 1) * 160])
        out.append(
            RtpPacket(
                payload_type=0, sequence_number=i & 0xFFFF, timestamp=i * 160, ssrc=ssrc, payload=payload
            ).serialize()
        )
    return out


def per_packet_cost(n_packets: int = 20000) -> dict[str, float]:
    pkts = packets_for(speech_like(n_packets / 50), 1)
    stream = RtpStream(queue_frames=n_packets + 10)
    ep = Endpointer(
        EndpointerConfig(no_input_ms=10**9, max_utterance_ms=10**9, hangover_ms=10**6 - 1, pause_ms=10**6 - 2)
    )
    addr = ("127.0.0.1", 5000)
    t0 = time.perf_counter()
    for p in pkts:
        stream.datagram_received(p, addr)
    t1 = time.perf_counter()
    frames = []
    while not stream.frames.empty():
        frames.append(stream.frames.get_nowait())
    t2 = time.perf_counter()
    for f in frames:
        ep.feed(f.pcm, f.stream_ms)
    t3 = time.perf_counter()
    rtp_us = (t1 - t0) / len(pkts) * 1e6
    vad_us = (t3 - t2) / len(frames) * 1e6
    total = rtp_us + vad_us
    return {
        "rtp_us_per_packet": round(rtp_us, 2),
        "vad_us_per_frame": round(vad_us, 2),
        "total_us_per_20ms": round(total, 2),
        "cpu_share_per_stream": round(total / 20000, 5),
        "streams_per_core": int(20000 / total),
        "voiced_frames": ep.voiced_frames,
    }


def _sender(ports: list[int], seconds: float, cpu: int | None, ready: Any) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    pcm = speech_like(seconds + 1)
    base = packets_for(pcm, 0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    ready.wait()
    start = time.monotonic()
    n = int(seconds * 50)
    for i in range(n):
        data = base[i % len(base)]
        for k, port in enumerate(ports):
            # same payload, a distinct SSRC per stream (bytes 8-11)
            sock.sendto(data[:8] + (k + 1).to_bytes(4, "big") + data[12:], ("127.0.0.1", port))
        delay = start + (i + 1) * 0.02 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    sock.close()


async def real_time_run(n_streams: int, seconds: float) -> dict[str, Any]:
    pool = PortPool(33000, 33000 + 2 * n_streams + 200)
    streams: list[RtpStream] = [await open_rtp_stream(pool) for _ in range(n_streams)]
    eps = [
        Endpointer(
            EndpointerConfig(no_input_ms=10**9, max_utterance_ms=10**9, hangover_ms=10**6 - 1, pause_ms=10**6 - 2)
        )
        for _ in range(n_streams)
    ]
    lateness: list[float] = []
    consumed = 0

    async def consume(s: RtpStream, ep: Endpointer) -> None:
        nonlocal consumed
        while True:
            f = await s.frames.get()
            ep.feed(f.pcm, f.stream_ms)
            lateness.append(time.monotonic() - f.arrival)
            consumed += 1

    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_sender, args=([s.local_port for s in streams], seconds, 1, ready), daemon=True)
    proc.start()
    tasks = [asyncio.create_task(consume(s, ep)) for s, ep in zip(streams, eps, strict=True)]
    await asyncio.sleep(0.5)
    cpu0, wall0 = time.process_time(), time.monotonic()
    ready.set()
    await asyncio.to_thread(proc.join)
    await asyncio.sleep(0.2)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    for t in tasks:
        t.cancel()
    sent = int(seconds * 50) * n_streams
    received = sum(s.stats.packets for s in streams)
    lost = sum(s.stats.lost for s in streams)
    for s in streams:
        s.close()
    lateness.sort()
    return {
        "streams": n_streams,
        "packets_sent": sent,
        "packets_received": received,
        "delivery": round(received / sent, 4) if sent else None,
        "lost_by_sequence": lost,
        "receiver_cpu_share": round(cpu / wall, 3),
        "consume_lag_ms_p50": round(lateness[len(lateness) // 2] * 1000, 2) if lateness else None,
        "consume_lag_ms_p99": round(lateness[int(len(lateness) * 0.99)] * 1000, 2) if lateness else None,
        "frames_consumed": consumed,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", default="100,300,500")
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    cost = per_packet_cost()
    runs = [asyncio.run(real_time_run(int(n), args.seconds)) for n in args.streams.split(",")]
    out = {"benchmark": "media", "machine": machine_info(), "per_packet": cost, "real_time": runs}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(
        f"per 20 ms packet: RTP {cost['rtp_us_per_packet']} µs + VAD {cost['vad_us_per_frame']} µs "
        f"= {cost['total_us_per_20ms']} µs -> {cost['streams_per_core']} streams per core (CPU only)\n"
    )
    print("| streams | delivery | lost | receiver CPU (1 core) | consume lag p50 / p99 ms |")
    print("|---:|---:|---:|---:|---:|")
    for r in runs:
        print(
            f"| {r['streams']} | {r['delivery']} | {r['lost_by_sequence']} | {r['receiver_cpu_share']:.0%} | "
            f"{r['consume_lag_ms_p50']} / {r['consume_lag_ms_p99']} |"
        )


if __name__ == "__main__":
    main()
