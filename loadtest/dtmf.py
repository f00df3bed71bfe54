"""RFC 4733 DTMF as a pcap file that SIPp replays (``<exec play_pcap_audio="FILE"/>``).

SIPp 3.6.1's own ``play_dtmf`` sends its events as payload type 96, and the one-digit pcaps Debian ships
(/usr/share/sip-tester/dtmf_2833_*.pcap, payload 101) each restart their sequence numbers and timestamps
where they were captured: replayed one after the other ("*" then "7"), a digit whose timestamp is below the
previous one is dropped by Asterisk's RTP stack as old. This writes one file for a whole digit string, with
increasing sequence numbers and timestamps, as a phone sends it: per digit ``event_ms`` of event packets
every 20 ms (the last one three times, with the end bit), then ``gap_ms`` of silence.

    python -m loadtest.dtmf "*71" correct.pcap
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

__all__ = ["EVENTS", "rfc4733_pcap"]

EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14, "D": 15}


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _frame(payload: bytes, ident: int) -> bytes:
    udp = struct.pack("!HHHH", 49176, 10000, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), ident, 0, 64, 17, 0, bytes([192, 168, 0, 3]),
                     bytes([192, 168, 0, 1]))  # fmt: skip
    ip = ip[:10] + struct.pack("!H", _ip_checksum(ip)) + ip[12:]
    return b"\x00\x50\xbf\x99\x03\x36\x00\x0d\x87\x14\xac\x24\x08\x00" + ip + udp


def rfc4733_pcap(
    digits: str, path: Path, *, payload_type: int = 101, event_ms: int = 100, gap_ms: int = 400, ssrc: int = 0x0E05384E
) -> int:
    """Write ``digits`` as RFC 4733 events into ``path`` (pcap, Ethernet); returns the packets written."""
    bad = [d for d in digits if d not in EVENTS]
    if bad or not digits:
        raise ValueError(f"not DTMF digits: {digits!r} (0-9, *, #, A-D)")
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    seq, ts, t_us, n = 1000, 160_000, 0, 0
    for digit in digits:
        steps = max(1, event_ms // 20)
        for i in range(steps + 2):  # the last duration sent three times with the end bit (RFC 4733 2.5.1.4)
            end = i >= steps - 1
            duration = 8 * 20 * min(i + 1, steps)
            marker = 0x80 if i == 0 else 0
            rtp = struct.pack("!BBHII", 0x80, marker | payload_type, seq & 0xFFFF, ts, ssrc)
            event = struct.pack("!BBH", EVENTS[digit], (0x80 if end else 0) | 10, duration)
            frame = _frame(rtp + event, seq & 0xFFFF)
            sec, usec = divmod(t_us, 1_000_000)
            out.append(struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame)
            seq, n = seq + 1, n + 1
            if i < steps - 1:
                t_us += 20_000
        t_us += gap_ms * 1000
        ts += 8 * (event_ms + gap_ms)
    path.write_bytes(b"".join(out))
    return n


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: python -m loadtest.dtmf DIGITS FILE.pcap", file=sys.stderr)
        raise SystemExit(2)
    try:
        print(rfc4733_pcap(sys.argv[1], Path(sys.argv[2])), "packets")
    except (ValueError, OSError) as exc:
        print(f"loadtest.dtmf: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
