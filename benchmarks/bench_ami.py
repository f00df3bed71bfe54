"""AMI client throughput and the delay from an AMI event to an updated routing input.

A server process (pinned to one core) writes queue events as Asterisk 22 formats them, as fast as the
socket takes them; the client (this process, the other core) parses and dispatches them into the live
queue model. Reports events/s, and for single events sent one at a time, the delay from the server's
write to the queue model's snapshot showing it (p50/p99).

    .venv/bin/python benchmarks/bench_ami.py [--events 200000]
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

from machine import machine_info  # benchmarks/machine.py

from agi_router.ami.client import AMIClient, AMIConfig
from agi_router.queues.model import QueueModel

RESULTS = Path(__file__).parent / "results" / "ami.json"
BANNER = b"Asterisk Call Manager/11.0.0\r\n"


def event(i: int) -> bytes:
    return (
        f"Event: QueueCallerJoin\r\nPrivilege: agent,all\r\nChannel: PJSIP/sipp-{i:08x}\r\nChannelState: 6\r\n"
        f"ChannelStateDesc: Up\r\nCallerIDNum: 0612345678\r\nCallerIDName: sipp\r\nLanguage: fr\r\n"
        f"AccountCode: \r\nContext: route-queue\r\nExten: s\r\nPriority: 3\r\nUniqueid: 1795.{i}\r\n"
        f"Linkedid: 1795.{i}\r\nQueue: droits\r\nPosition: 1\r\nCount: 1\r\n\r\n"
    ).encode()


def _server(port_conn: Any, n: int, singles: int) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {1})
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port_conn.send(srv.getsockname()[1])
    conn, _ = srv.accept()
    conn.sendall(BANNER)
    buf = b""
    while b"\r\n\r\n" not in buf:  # the Login action
        buf += conn.recv(4096)
    aid = next(ln.split(": ", 1)[1] for ln in buf.decode().split("\r\n") if ln.startswith("ActionID"))
    conn.sendall(f"Response: Success\r\nActionID: {aid}\r\nMessage: Authentication accepted\r\n\r\n".encode())
    port_conn.recv()  # go
    t0 = time.perf_counter()
    chunk = b"".join(event(i) for i in range(1000))
    for _ in range(n // 1000):
        conn.sendall(chunk)
    port_conn.send(time.perf_counter() - t0)
    for i in range(singles):  # one at a time, timestamped by the parent when it sees them
        port_conn.recv()
        port_conn.send(time.perf_counter())
        conn.sendall(event(10_000_000 + i).replace(b"Queue: droits", b"Queue: single"))
    port_conn.recv()
    conn.close()


async def run(n: int, singles: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_server, args=(child, n, singles), daemon=True)
    proc.start()
    port = parent.recv()
    client = AMIClient(AMIConfig(port=port, secret="x", ping_interval=3600))
    model = QueueModel()
    model.attach(client)
    model.synced = True
    seen = 0

    def count(_m: object) -> None:
        nonlocal seen
        seen += 1

    client.on("QueueCallerJoin", count)
    await client.start()
    assert await client.wait_connected(5)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    parent.send("go")
    t0 = time.perf_counter()
    while seen < (n // 1000) * 1000:  # noqa: ASYNC110 - polling is the measurement here
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - t0
    delays = []
    for i in range(singles):
        parent.send("next")
        sent_at = parent.recv()
        while model.snapshot("single").waiting < i + 1:  # noqa: ASYNC110 - the delay being measured
            await asyncio.sleep(0)
        delays.append(time.perf_counter() - sent_at)
    parent.send("stop")
    await client.close()
    proc.join(5)
    delays.sort()
    return {
        "events": seen,
        "seconds": round(elapsed, 3),
        "events_per_s": int(seen / elapsed),
        "event_to_model_ms_p50": round(delays[len(delays) // 2] * 1000, 3),
        "event_to_model_ms_p99": round(delays[int(len(delays) * 0.99)] * 1000, 3),
        "singles": singles,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--singles", type=int, default=500)
    args = ap.parse_args()
    result = asyncio.run(run(args.events, args.singles))
    out = {"benchmark": "ami", "machine": machine_info(), "result": result}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(
        f"{result['events_per_s']:,} events/s parsed and dispatched into the queue model; "
        f"event -> routing input p50 {result['event_to_model_ms_p50']} ms, p99 {result['event_to_model_ms_p99']} ms"
    )


if __name__ == "__main__":
    main()
