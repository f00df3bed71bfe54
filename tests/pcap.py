"""Reading what tcpdump captured on lo, for the real-process tests (no pcap library in the test deps).

:func:`read_pcap` gives each IPv4 TCP/UDP packet with its capture time; :func:`rtp_payloads` the PCMU
payloads of one UDP flow (RTP header, CSRCs and extension skipped; telephone-event packets left out).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Packet", "read_pcap", "rtp_payloads"]


@dataclass
class Packet:
    time: float  # capture time (s)
    proto: int  # 6 TCP, 17 UDP
    sport: int
    dport: int
    payload: bytes


def read_pcap(path: Path) -> list[Packet]:
    data = path.read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    order = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    nano = magic in (0xA1B23C4D, 0x4D3CB2A1)
    link = struct.unpack(order + "I", data[20:24])[0]
    skip = {1: 14, 113: 16, 276: 20}[link]  # Ethernet (lo), Linux cooked v1/v2 (-i any)
    packets, off = [], 24
    while off + 16 <= len(data):
        sec, frac, incl = struct.unpack(order + "III", data[off : off + 12])
        frame = data[off + 16 : off + 16 + incl][skip:]
        off += 16 + incl
        if len(frame) < 20 or frame[0] >> 4 != 4:
            continue
        ihl, proto = (frame[0] & 15) * 4, frame[9]
        l4 = frame[ihl:]
        if len(l4) < 8:
            continue
        sport, dport = struct.unpack("!HH", l4[:4])
        t = sec + frac / (1e9 if nano else 1e6)
        if proto == 17:
            packets.append(Packet(t, proto, sport, dport, l4[8:]))
        elif proto == 6:
            packets.append(Packet(t, proto, sport, dport, l4[(l4[12] >> 4) * 4 :]))
    return packets


def rtp_payloads(packets: list[Packet], sport: int | None, dport: int) -> list[tuple[int, float, bytes]]:
    """(sequence number, capture time, bytes after the RTP header) of the PCMU packets ``sport`` -> ``dport``
    (``sport`` None: from any port), in capture order."""
    out = []
    for p in packets:
        if p.proto == 17 and p.dport == dport and (sport is None or p.sport == sport) and len(p.payload) > 12:
            b = p.payload
            if b[0] >> 6 != 2 or b[1] & 0x7F != 0:  # version 2, PCMU (not telephone-event)
                continue
            header = 12 + 4 * (b[0] & 15)
            if b[0] & 0x10:
                header += 4 + 4 * struct.unpack("!H", b[header + 2 : header + 4])[0]
            out.append((struct.unpack("!H", b[2:4])[0], p.time, b[header:]))
    return out
