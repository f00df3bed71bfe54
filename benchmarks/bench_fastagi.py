"""FastAGI throughput and latency: agi_router's AGIServer against panoramisk's FastAGI Application.

Both servers serve the same trivial route (GET VARIABLE X, SET VARIABLE ROUTER_ACTION queue,
SET VARIABLE ROUTER_DONE 1, then the server closes the socket). Each server runs in its own child
process pinned to one CPU; the load client runs in this process, pinned to another CPU, and plays
res_agi the way Asterisk 22 does: it sends the ``agi_*`` environment block of
``tests/fakeasterisk.environment()``, answers one command line at a time, and the session ends when
the server closes the connection (``--until eof``, the default: what Asterisk waits for) or right
after the third answer (``--until answered``).

Closed loop: N workers, each runs sessions back to back. 1 s warm-up, then a measured window of
``--duration`` seconds (or ``--max-sessions`` completed sessions, whichever comes first). Besides
sessions/s and session latency, it reports the server's CPU time per session (from /proc), and
1e6 / that: the sessions/s one server core can carry, which does not depend on the client.

Paced (``--think-ms X``, X > 0): the fake res_agi waits X ms before it answers each command, as
Asterisk does while it plays a prompt or runs an application, so N workers are N calls in progress
at a moderate load. The client then measures the router's turn latency, what a caller waits on the
router: environment block written -> first command received, each answer written -> next command
received, last answer written -> server closes (EOF). Turns are reported as p50/p99/p99.9. The
calls start at random offsets over one session length so that they do not arrive in lockstep.

    .venv/bin/python benchmarks/bench_fastagi.py [--duration 5] [--concurrency 1,50,200] [--think-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from machine import cpu_model as _cpu_model  # benchmarks/machine.py

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fakeasterisk import environment, parse_args  # noqa: E402

HOST = "127.0.0.1"
SCRIPT = "3646"
SERVERS = ("agi_router", "panoramisk", "agi_router+uvloop", "panoramisk+uvloop")
N_COMMANDS = 3
# What each command must be (argv after res_agi's parse_args), in order.
EXPECTED: tuple[tuple[str, ...], ...] = (
    ("GET", "VARIABLE", "X"),
    ("SET", "VARIABLE", "ROUTER_ACTION", "queue"),
    ("SET", "VARIABLE", "ROUTER_DONE", "1"),
)
REPLY_GET = b"200 result=1 (value)\n"
REPLY_SET = b"200 result=1\n"
REPLY_UNKNOWN = b"510 Invalid or unknown command\n"
BACKLOG = 1024  # same listen backlog for both servers (panoramisk leaves it to the caller)
SERVER_LIFETIME = 3600.0  # a server child exits by itself after this, whatever happens to the parent


# -- servers (child processes) -------------------------------------------------------------------


def _pin(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


async def _serve_agi_router(conn: Connection) -> None:
    from agi_router.agi.server import AGIServer, AGIServerConfig
    from agi_router.agi.session import AGISession

    async def route(session: AGISession) -> None:
        await session.get_variable("X")
        await session.set_variable("ROUTER_ACTION", "queue")
        await session.set_variable("ROUTER_DONE", "1")
        # Returning ends the call: the server closes the socket (as it does in production).

    server = AGIServer({SCRIPT: route}, AGIServerConfig(host=HOST, port=0, max_sessions=10_000, backlog=BACKLOG))
    await server.start()
    conn.send(server.sockets[0][1])
    await _until_parent_gone(conn)
    await server.close(grace=1.0)


async def _serve_panoramisk(conn: Connection) -> None:
    from panoramisk.fast_agi import Application, Request  # type: ignore[import-untyped,unused-ignore]

    # Python 3.11: Application.add_route() wraps a plain function with asyncio.coroutine, which no
    # longer exists, so the route must be an ``async def``. Application() calls
    # asyncio.get_event_loop(): created inside the running loop and given it, so no warning either.
    async def route(request: Request) -> None:
        await request.send_command('GET VARIABLE "X"')
        await request.send_command('SET VARIABLE "ROUTER_ACTION" "queue"')
        await request.send_command('SET VARIABLE "ROUTER_DONE" "1"')
        # Application.handler closes the writer when the route returns.

    app = Application(loop=asyncio.get_running_loop())
    app.add_route(SCRIPT, route)
    # Started the way panoramisk's documentation does, with the same backlog as ours.
    server = await asyncio.start_server(app.handler, HOST, 0, backlog=BACKLOG)
    conn.send(server.sockets[0].getsockname()[1])
    await _until_parent_gone(conn)
    server.close()


async def _until_parent_gone(conn: Connection) -> None:
    """Serve until the parent says stop or goes away, or SERVER_LIFETIME has passed."""
    loop = asyncio.get_running_loop()
    gone = asyncio.Event()
    loop.add_reader(conn.fileno(), gone.set)  # readable: a message or EOF from the parent
    try:
        async with asyncio.timeout(SERVER_LIFETIME):
            await gone.wait()
    except TimeoutError:
        pass
    finally:
        loop.remove_reader(conn.fileno())


def server_main(kind: str, cpu: int | None, conn: Connection) -> None:
    _pin(cpu)
    serve = _serve_agi_router if kind.startswith("agi_router") else _serve_panoramisk
    try:
        if kind.endswith("+uvloop"):
            import uvloop

            uvloop.run(serve(conn))
        else:
            asyncio.run(serve(conn))
    except Exception as exc:
        with contextlib.suppress(OSError):
            conn.send(f"{type(exc).__name__}: {exc}")
        raise


@dataclass
class ServerProcess:
    kind: str
    process: mp.process.BaseProcess
    conn: Connection
    port: int

    def cpu_seconds(self) -> float:
        """CPU time of the child, from /proc: the sum over its threads of the nanosecond run time in
        ``task/*/schedstat``, else utime + stime of ``stat`` (clock ticks); 0.0 without /proc."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            total_ns = 0
            for task in Path(f"/proc/{self.process.pid}/task").iterdir():
                with contextlib.suppress(FileNotFoundError):  # a thread that just ended
                    total_ns += int((task / "schedstat").read_text().split()[0])
            if total_ns:
                return total_ns / 1e9
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.conn.send("stop")
        self.process.join(3.0)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(2.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(1.0)
        self.conn.close()


def start_server(kind: str, cpu: int | None) -> ServerProcess:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=server_main, args=(kind, cpu, child), name=f"bench-{kind}", daemon=True)
    proc.start()
    child.close()
    if not parent.poll(20.0):
        proc.kill()
        raise RuntimeError(f"{kind} server did not start within 20 s")
    msg = parent.recv()
    if not isinstance(msg, int):
        proc.join(2.0)
        raise RuntimeError(f"{kind} server failed to start: {msg}")
    return ServerProcess(kind, proc, parent, msg)


# -- load client ----------------------------------------------------------------------------------


class SessionFailed(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


_ARGV_CACHE: dict[bytes, tuple[str, ...]] = {}


class FakeResAGI(asyncio.Protocol):
    """One res_agi session, as a bare Protocol (cheaper than streams, so the client is not the
    bottleneck): answers each command line as soon as it is complete, or ``think_s`` later.

    With ``think_s`` > 0 it also records the router's turns in ``self.turns_ns``: environment block
    written -> first command line received, each answer written -> next command line received, last
    answer written -> EOF from the server."""

    def __init__(self, env: bytes, done: asyncio.Future[None], close_after_answers: bool, think_s: float = 0.0) -> None:
        self.env = env
        self.done = done
        self.close_after_answers = close_after_answers
        self.think_s = think_s
        self.buf = bytearray()
        self.answered = 0
        self.bad_command = False
        self.transport: asyncio.Transport | None = None
        self.turns_ns: list[int] = []
        self.mark_ns = 0  # when the client last wrote (environment or answer): a turn starts
        self.pending: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.env)
        if self.think_s:
            self.mark_ns = time.perf_counter_ns()

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter_ns() if self.think_s else 0
        self.buf += data
        while (i := self.buf.find(b"\n")) >= 0:
            line = bytes(self.buf[:i])
            del self.buf[: i + 1]
            if self.think_s and self.mark_ns:
                self.turns_ns.append(now - self.mark_ns)
                self.mark_ns = 0  # a second line before our answer is not a new turn
            self._command(line)

    def _command(self, line: bytes) -> None:
        assert self.transport is not None
        argv = _ARGV_CACHE.get(line)
        if argv is None:  # the same few lines come back in every session: parse each once
            argv = _ARGV_CACHE[line] = tuple(parse_args(line.decode("utf-8", "replace").rstrip("\r")))
        step = self.answered
        if step >= N_COMMANDS or argv != EXPECTED[step]:
            self.bad_command = True
        verb = " ".join(argv[:2]).upper()
        reply = REPLY_GET if verb == "GET VARIABLE" else REPLY_SET if verb == "SET VARIABLE" else REPLY_UNKNOWN
        if self.think_s:
            self.pending = asyncio.get_running_loop().call_later(self.think_s, self._answer, reply)
        else:
            self._answer(reply)

    def _answer(self, reply: bytes) -> None:
        self.pending = None
        if self.done.done() or self.transport is None or self.transport.is_closing():
            return
        self.transport.write(reply)
        if self.think_s:
            self.mark_ns = time.perf_counter_ns()
        self.answered += 1
        if self.answered == N_COMMANDS and self.close_after_answers:
            self._finish(None)

    def eof_received(self) -> bool:
        if self.think_s and self.mark_ns and self.answered == N_COMMANDS:
            self.turns_ns.append(time.perf_counter_ns() - self.mark_ns)
        self._finish(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(exc)

    def _finish(self, exc: Exception | None) -> None:
        if self.pending is not None:
            self.pending.cancel()
            self.pending = None
        if self.done.done():
            return
        if exc is not None:
            self.done.set_exception(exc)
        else:
            self.done.set_result(None)


@dataclass
class PointState:
    recording: bool = False
    stopping: bool = False
    max_sessions: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    turns_ns: list[int] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    warmup_ok: int = 0
    warmup_failures: Counter[str] = field(default_factory=Counter)
    full: asyncio.Event = field(default_factory=asyncio.Event)


async def one_session(
    port: int, env: bytes, *, timeout: float, close_after_answers: bool, think_s: float = 0.0
) -> list[int]:
    """Run one session; return its turn latencies (ns; empty unless ``think_s`` > 0)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    proto: FakeResAGI | None = None

    def factory() -> FakeResAGI:
        nonlocal proto
        proto = FakeResAGI(env, done, close_after_answers, think_s)
        return proto

    transport: asyncio.BaseTransport | None = None
    try:
        async with asyncio.timeout(timeout):
            transport, _ = await loop.create_connection(factory, HOST, port)
            await done
    except TimeoutError:
        answered = proto.answered if proto else 0
        raise SessionFailed("no_close_after_3" if answered >= N_COMMANDS else f"timeout_after_{answered}") from None
    except ConnectionRefusedError:
        raise SessionFailed("refused") from None
    except ConnectionResetError:
        raise SessionFailed("reset") from None
    except OSError as exc:
        raise SessionFailed(f"oserror_{exc.errno}") from None
    finally:
        if proto is not None and proto.pending is not None:
            proto.pending.cancel()
        if transport is not None:
            transport.close()
    assert proto is not None
    if proto.answered < N_COMMANDS:
        raise SessionFailed(f"closed_after_{proto.answered}")
    if proto.bad_command:
        raise SessionFailed("unexpected_command")
    return proto.turns_ns


async def worker(
    wid: int, port: int, state: PointState, *, timeout: float, close_after_answers: bool, think_s: float
) -> None:
    n = 0
    if think_s:
        # Paced: spread the calls over one session length, else all N start (and, with a fixed think
        # time, stay) in lockstep and the server sees bursts of N commands instead of a steady flow.
        await asyncio.sleep(random.uniform(0.0, N_COMMANDS * think_s))
    while not state.stopping:
        n += 1
        env = ("\n".join(environment(script=SCRIPT, uniqueid=f"1763900000.{wid}{n:07d}")) + "\n\n").encode()
        t0 = time.perf_counter_ns()
        try:
            turns = await one_session(
                port, env, timeout=timeout, close_after_answers=close_after_answers, think_s=think_s
            )
        except SessionFailed as exc:
            if state.stopping:
                break
            (state.failures if state.recording else state.warmup_failures)[exc.kind] += 1
            await asyncio.sleep(0.01)  # no hot spin against a dead server
            continue
        t1 = time.perf_counter_ns()
        if state.stopping:
            break
        if state.recording:
            state.latencies_ns.append(t1 - t0)
            state.turns_ns += turns
            if len(state.latencies_ns) >= state.max_sessions:
                state.full.set()
        else:
            state.warmup_ok += 1


def percentile(sorted_values: Sequence[int], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence; nan when empty."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return float(sorted_values[rank - 1])


@dataclass
class PointResult:
    server: str
    concurrency: int
    sessions: int
    failed: int
    failures: dict[str, int]
    warmup_sessions: int
    warmup_failed: int
    window_s: float
    sessions_per_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    server_cpu_pct: float
    client_cpu_pct: float
    # Server CPU time over the window / sessions completed in it, and 1e6 / that: the sessions/s one
    # server core could carry at this per-session cost, whatever the client.
    server_cpu_us_per_session: float
    max_sessions_per_core: float
    stragglers_cancelled: int
    think_ms: float = 0.0
    turns: int = 0  # router turns recorded (paced mode only): env->1st command, answer->next, last->EOF
    turn_p50_ms: float = float("nan")
    turn_p99_ms: float = float("nan")
    turn_p999_ms: float = float("nan")
    turn_max_ms: float = float("nan")


async def run_point(
    server: ServerProcess,
    concurrency: int,
    *,
    warmup: float,
    duration: float,
    max_sessions: int,
    timeout: float,
    close_after_answers: bool,
    think_s: float = 0.0,
) -> PointResult:
    state = PointState(max_sessions=max_sessions)
    tasks = [
        asyncio.create_task(
            worker(i, server.port, state, timeout=timeout, close_after_answers=close_after_answers, think_s=think_s)
        )
        for i in range(concurrency)
    ]
    try:
        await asyncio.sleep(warmup)
        srv_cpu0, cli_cpu0 = server.cpu_seconds(), time.process_time()
        t0 = time.perf_counter()
        state.recording = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.full.wait(), duration)
        state.stopping = True
        window = time.perf_counter() - t0
        srv_cpu, cli_cpu = server.cpu_seconds() - srv_cpu0, time.process_time() - cli_cpu0
        # Workers finish the session they are in (each bounded by `timeout`), then stop.
        _done, pending = await asyncio.wait(tasks, timeout=timeout + 1.0)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    lat = sorted(state.latencies_ns)
    n = len(lat)
    turns = sorted(state.turns_ns)
    cpu_us = 1e6 * srv_cpu / n if n and srv_cpu > 0 else float("nan")
    return PointResult(
        server=server.kind,
        concurrency=concurrency,
        sessions=n,
        failed=sum(state.failures.values()),
        failures=dict(state.failures),
        warmup_sessions=state.warmup_ok,
        warmup_failed=sum(state.warmup_failures.values()),
        window_s=round(window, 4),
        sessions_per_s=round(n / window, 1) if window > 0 else 0.0,
        p50_ms=round(percentile(lat, 50) / 1e6, 4),
        p99_ms=round(percentile(lat, 99) / 1e6, 4),
        mean_ms=round(sum(lat) / n / 1e6, 4) if n else float("nan"),
        max_ms=round(lat[-1] / 1e6, 4) if n else float("nan"),
        server_cpu_pct=round(100 * srv_cpu / window, 1) if window > 0 else 0.0,
        client_cpu_pct=round(100 * cli_cpu / window, 1) if window > 0 else 0.0,
        server_cpu_us_per_session=round(cpu_us, 1),
        max_sessions_per_core=round(1e6 / cpu_us) if cpu_us == cpu_us else float("nan"),
        stragglers_cancelled=len(pending),
        think_ms=round(think_s * 1e3, 3),
        turns=len(turns),
        turn_p50_ms=round(percentile(turns, 50) / 1e6, 4),
        turn_p99_ms=round(percentile(turns, 99) / 1e6, 4),
        turn_p999_ms=round(percentile(turns, 99.9) / 1e6, 4),
        turn_max_ms=round(turns[-1] / 1e6, 4) if turns else float("nan"),
    )


# -- report ---------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu_model = _cpu_model()
    from importlib.metadata import PackageNotFoundError, version

    try:
        pano_version = version("panoramisk")
    except PackageNotFoundError:
        pano_version = "not installed"
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpus_allowed": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "panoramisk": pano_version,
    }


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if x != x else f"{x:.{digits}f}"  # nan check


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b and a == a and b == b else float("nan")


def ratios(points: list[PointResult]) -> list[dict[str, Any]]:
    by = {(p.server, p.concurrency): p for p in points}
    out = []
    for c in sorted({p.concurrency for p in points}):
        ours, pano = by.get(("agi_router", c)), by.get(("panoramisk", c))
        if ours and pano:
            out.append(
                {
                    "concurrency": c,
                    "sessions_per_s": _ratio(ours.sessions_per_s, pano.sessions_per_s),
                    "p50": _ratio(ours.p50_ms, pano.p50_ms),
                    "p99": _ratio(ours.p99_ms, pano.p99_ms),
                    "server_cpu_us_per_session": _ratio(ours.server_cpu_us_per_session, pano.server_cpu_us_per_session),
                    "turn_p99": _ratio(ours.turn_p99_ms, pano.turn_p99_ms),
                }
            )
    return out


def markdown(points: list[PointResult], ratio_rows: list[dict[str, Any]], info: dict[str, Any]) -> str:
    paced = any(p.think_ms for p in points)
    lines = [
        f"FastAGI, {info['cpu_model']}, nproc={info['nproc']}, Python {info['python']}, {info['date']}, "
        f"loadavg {info['loadavg_at_start']}" + (f", think {points[0].think_ms:g} ms" if paced else ""),
        "",
    ]
    if paced:
        lines += [
            "| calls | server | sessions/s | turn p50 ms | turn p99 ms | turn p99.9 ms | turns | failed "
            "| server CPU % | CPU µs/session |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
    else:
        lines += [
            "| concurrency | server | sessions/s | p50 ms | p99 ms | failed | server CPU % | client CPU % "
            "| CPU µs/session | sessions/s per core |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
    for p in points:
        failed = f"{p.failed} {p.failures}" if p.failed else "0"
        if paced:
            lines.append(
                f"| {p.concurrency} | {p.server} | {p.sessions_per_s:.0f} | {_fmt(p.turn_p50_ms)} "
                f"| {_fmt(p.turn_p99_ms)} | {_fmt(p.turn_p999_ms)} | {p.turns} | {failed} "
                f"| {p.server_cpu_pct:.0f} | {_fmt(p.server_cpu_us_per_session, 0)} |"
            )
        else:
            lines.append(
                f"| {p.concurrency} | {p.server} | {p.sessions_per_s:.0f} | {_fmt(p.p50_ms)} | {_fmt(p.p99_ms)} "
                f"| {failed} | {p.server_cpu_pct:.0f} | {p.client_cpu_pct:.0f} "
                f"| {_fmt(p.server_cpu_us_per_session, 0)} | {_fmt(p.max_sessions_per_core, 0)} |"
            )
    lines += [
        "",
        "| concurrency | sessions/s ours/panoramisk | p50 ours/panoramisk | p99 ours/panoramisk "
        "| CPU/session ours/panoramisk | turn p99 ours/panoramisk |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in ratio_rows:
        lines.append(
            f"| {r['concurrency']} | {_fmt(r['sessions_per_s'])} | {_fmt(r['p50'])} | {_fmt(r['p99'])} "
            f"| {_fmt(r['server_cpu_us_per_session'])} | {_fmt(r['turn_p99'])} |"
        )
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------------


def parse_cli(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=5.0, help="measured seconds per point (default 5)")
    ap.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per point (default 1)")
    ap.add_argument("--concurrency", default="1,50,200", help="comma-separated session counts (default 1,50,200)")
    ap.add_argument("--max-sessions", type=int, default=500_000, help="stop a point after this many sessions")
    ap.add_argument("--timeout", type=float, default=5.0, help="per-session timeout, seconds (default 5)")
    ap.add_argument(
        "--until",
        choices=("eof", "answered"),
        default="eof",
        help="a session ends when the server closes (eof, as Asterisk) or after the 3rd answer",
    )
    ap.add_argument(
        "--think-ms",
        type=float,
        default=0.0,
        help="paced mode: wait this long before answering each command and report the router's turn "
        "latency (default 0: closed loop, answers at once)",
    )
    ap.add_argument("--servers", default=",".join(SERVERS), help=f"subset of {','.join(SERVERS)}")
    ap.add_argument(
        "--output",
        type=Path,
        default=None,
        help="JSON report (default benchmarks/results/fastagi.json, or fastagi-paced.json with --think-ms)",
    )
    ap.add_argument("--note", default=None, help="free text stored in the report's machine info")
    args = ap.parse_args(argv)
    if args.output is None:
        name = "fastagi-paced.json" if args.think_ms > 0 else "fastagi.json"
        args.output = Path(__file__).parent / "results" / name
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if not args.concurrency or min(args.concurrency) < 1:
        ap.error("--concurrency needs positive integers")
    if not args.servers or set(args.servers) - set(SERVERS):
        ap.error(f"--servers: choose among {SERVERS}")
    if args.duration <= 0 or args.warmup < 0 or args.timeout <= 0 or args.max_sessions < 1:
        ap.error("--duration, --timeout and --max-sessions must be positive, --warmup non-negative")
    if args.think_ms < 0 or args.think_ms * N_COMMANDS / 1e3 >= args.timeout:
        ap.error("--think-ms must be non-negative and its 3 waits shorter than --timeout")
    return args


def cpu_plan() -> tuple[int | None, int | None]:
    """(server CPU, client CPU): the first two CPUs this process may use, or no pinning."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return cpus[0], cpus[1]


async def bench(args: argparse.Namespace, servers: dict[str, ServerProcess]) -> list[PointResult]:
    points = []
    for c in args.concurrency:
        for kind in args.servers:
            p = await run_point(
                servers[kind],
                c,
                warmup=args.warmup,
                duration=args.duration,
                max_sessions=args.max_sessions,
                timeout=args.timeout,
                close_after_answers=args.until == "answered",
                think_s=args.think_ms / 1e3,
            )
            turns = (
                f"  turn p50 {_fmt(p.turn_p50_ms)} p99 {_fmt(p.turn_p99_ms)} p99.9 {_fmt(p.turn_p999_ms)} ms"
                if p.think_ms
                else ""
            )
            print(
                f"  c={c:<4} {kind:<17} {p.sessions_per_s:>9.0f}/s  p50 {_fmt(p.p50_ms)} ms  "
                f"p99 {_fmt(p.p99_ms)} ms{turns}  cpu {_fmt(p.server_cpu_us_per_session, 0)} us/session  "
                f"failed {p.failed}",
                file=sys.stderr,
                flush=True,
            )
            points.append(p)
            await asyncio.sleep(0.3)
    return points


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_cli(argv)
    server_cpu, client_cpu = cpu_plan()
    info = machine_info()
    info["pinning"] = {"server_cpu": server_cpu, "client_cpu": client_cpu}
    load1 = (info["loadavg_at_start"] or [0.0])[0]
    if load1 > 0.5:
        print(
            f"warning: 1-min load average {load1} at start: other work on the machine skews the numbers",
            file=sys.stderr,
        )
    if server_cpu is None:
        print("warning: fewer than 2 usable CPUs, no pinning: client and server share cores", file=sys.stderr)
    servers: dict[str, ServerProcess] = {}
    try:
        for kind in args.servers:  # both idle servers stay up; only one is under load at a time
            servers[kind] = start_server(kind, server_cpu)
        _pin(client_cpu)
        points = asyncio.run(bench(args, servers))
    finally:
        for server in servers.values():
            server.stop()
    if hasattr(os, "getloadavg"):
        info["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.note:
        info["note"] = args.note
    ratio_rows = ratios(points)
    report = {
        "benchmark": "fastagi-paced" if args.think_ms > 0 else "fastagi",
        "machine": info,
        "config": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "max_sessions": args.max_sessions,
            "session_timeout_s": args.timeout,
            "session_end": args.until,
            "think_ms": args.think_ms,
            "concurrency": args.concurrency,
            "listen_backlog": BACKLOG,
            "route": [" ".join(e) for e in EXPECTED],
        },
        "points": [asdict(p) for p in points],
        "ratios_ours_over_panoramisk": ratio_rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(points, ratio_rows, info))
    failed = sum(p.failed for p in points)
    if failed:
        print(f"\n{failed} failed sessions in measured windows (see 'failures' in {args.output})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
