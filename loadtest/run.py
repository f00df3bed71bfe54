"""Run a load test against a real ``agi-router serve`` process, with a simulated Asterisk (router-only driver).

    loadtest/run PROFILE [--rate R] [--duration S] [--out DIR] [--processes N] [--workers N] [--batch N]
                 [--model-dir DIR]

Profiles (every run is bounded in count and time and stops by itself; everything is on loopback):

=========  ==========================================================================================
smoke      1 call/s for 10 s: the plumbing (CI runs it)
peak       10 calls/s for 60 s: the national line's peak
ramp       +2 calls/s every 20 s from 2/s up to 20/s; the report says where an SLO broke (the knee)
soak       2 calls/s for 30 min: memory and file descriptors must stay flat
=========  ==========================================================================================

The runner writes a settings file (free ports, the bundled policy with its opening hours off, a
population directory imported with ``agi-router directory import``), starts the router with
``python -m agi_router serve``, points its AMI at the simulator (``loadtest/sim.py``), offers calls as a
Poisson process at the profile's rate (``loadtest/population.py``: who calls and what they do), prints a
progress line every second, samples the router's /metrics and /proc once a second, and ends with
``report.md`` + PNG plots + ``summary.json`` in ``--out``. Exit status: 0 when the SLOs held, 1 when not,
2 on bad input or a router that does not start.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from agi_router.policy.config import default_policy_path

from .population import Population
from .report import SLO, Sample, write_report
from .sim import CallRecord, SimulatedAsterisk
from .voices import stable_voices

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Profile:
    rate: float  # calls/s (the start rate for ramp)
    duration: float  # s
    step_s: float = 0.0  # ramp: seconds per step
    step_rate: float = 0.0  # ramp: + calls/s per step
    max_rate: float = 0.0


PROFILES = {
    "smoke": Profile(1.0, 10.0),
    "peak": Profile(10.0, 60.0),
    "ramp": Profile(2.0, 200.0, step_s=20.0, step_rate=2.0, max_rate=20.0),
    "soak": Profile(2.0, 1800.0),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rate_at(p: Profile, t: float) -> float:
    if not p.step_s:
        return p.rate
    return min(p.max_rate, p.rate + p.step_rate * int(t // p.step_s))


def _proc_figures(pid: int) -> tuple[float, int]:
    """RSS (MB) and open FDs of the router and its worker processes."""
    pids = [pid]
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().split(") ", 1)[1].split()[1]) == pid:
                    pids.append(int(d.name))
            except (OSError, IndexError, ValueError):
                continue
    rss, fds = 0.0, 0
    for p in pids:
        try:
            m = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{p}/status").read_text())
            rss += int(m.group(1)) / 1024 if m else 0
            fds += len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            continue
    return rss, fds


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("agi_router_recognizer_") or line.startswith("agi_router_speech_admission_refused"):
            name, _, value = line.rpartition(" ")
            out[name.split("{")[0]] = float(value)
    return out


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.profile = PROFILES[args.profile]
        if args.rate:
            self.profile = Profile(
                args.rate,
                self.profile.duration,
                self.profile.step_s,
                self.profile.step_rate,
                max(self.profile.max_rate, args.rate),
            )
        if args.duration:
            self.profile = Profile(
                self.profile.rate, args.duration, self.profile.step_s, self.profile.step_rate, self.profile.max_rate
            )
        self.out: Path = args.out or ROOT / "loadtest" / "reports" / f"{args.profile}-{time.strftime('%Y%m%d-%H%M%S')}"
        self.records: list[CallRecord] = []
        self.samples: list[Sample] = []
        self.inflight: set[asyncio.Task[CallRecord]] = set()

    def router_config(self, var: Path, agi: int, ami: int, metrics: int) -> Path:
        policy = var.parent / "policy.toml"
        text = default_policy_path().read_text()
        policy.write_text(text.replace("[hours]\nenabled = true", "[hours]\nenabled = false"))
        cfg = var.parent / "router.toml"
        speech = [
            f"processes = {self.args.processes}",
            f"workers = {self.args.workers}",
            f"batch = {self.args.batch}",
            "rtp_port_start = 33000",
            "rtp_port_end = 34000",
        ]
        if self.args.model_dir:
            speech.append(f'model_dir = "{self.args.model_dir}"')
        cfg.write_text(
            f'data_dir = "{var}"\npolicy_file = "{policy}"\n[agi]\nport = {agi}\nmax_sessions = 2000\n'
            f'[ami]\nport = {ami}\n[metrics]\nport = {metrics}\n[log]\nlevel = "{self.args.log_level}"\n[speech]\n'
            + "\n".join(speech)
            + "\n"
        )
        return cfg

    async def main(self) -> int:
        args = self.args
        self.out.mkdir(parents=True, exist_ok=True)
        work = self.out / "work"
        var = work / "var"
        var.mkdir(parents=True, exist_ok=True)
        voices = stable_voices()
        if not voices:
            print("loadtest: no caller voice: install espeak-ng and asterisk-core-sounds-fr "
                  "(scripts/test-debs.txt)", file=sys.stderr)  # fmt: skip
            return 2
        population = Population(voices, seed=args.seed)
        secret = secrets.token_hex(16)
        sim = SimulatedAsterisk(ami_secret=secret, silence_s=args.silence_s)
        await sim.start()
        agi_port, metrics_port = free_port(), free_port()
        cfg = self.router_config(var, agi_port, sim.ami_port, metrics_port)
        env = {**os.environ, "AGI_ROUTER_CONFIG": str(cfg), "AGI_ROUTER_AMI_SECRET": secret}
        population.directory_csv(work / "directory.csv", date.today())
        imp = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "agi_router", "directory", "import", str(work / "directory.csv")],
            env=env,
            capture_output=True,
            text=True,
        )
        if imp.returncode != 0:
            print(f"loadtest: directory import failed: {imp.stderr.strip()}", file=sys.stderr)
            return 2
        log = (work / "router.log").open("w")
        router = await asyncio.to_thread(
            subprocess.Popen, [sys.executable, "-m", "agi_router", "serve"], env=env, stdout=log, stderr=log
        )
        sim.agi = ("127.0.0.1", agi_port)
        try:
            if not await self._wait_ready(router, metrics_port, sim):
                print(f"loadtest: the router did not start (see {work / 'router.log'})", file=sys.stderr)
                return 2
            t0 = time.monotonic()
            sampler = asyncio.create_task(self._sample(router.pid, metrics_port))
            progress = asyncio.create_task(self._progress(t0))
            await self._offer(sim, population, t0)
            if self.inflight:
                await asyncio.wait(self.inflight)
            sampler.cancel()
            progress.cancel()
            try:  # the router's last word, kept with its log and audit trail (privacy checks read all three)
                final = await asyncio.to_thread(
                    lambda: urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).read()
                )
                (work / "metrics-final.txt").write_bytes(final)
            except OSError:
                pass
        finally:
            router.send_signal(signal.SIGTERM)
            try:
                router.wait(20)
            except subprocess.TimeoutExpired:
                router.kill()
            log.close()
            await sim.close()
        notes = [
            f"router-only driver (simulated Asterisk), profile `{args.profile}`: {self.profile.rate:g} calls/s"
            + (
                f" +{self.profile.step_rate:g} every {self.profile.step_s:g} s up to {self.profile.max_rate:g}/s"
                if self.profile.step_s
                else ""
            )
            + f" for {self.profile.duration:g} s; recogniser: "
            + (f"{args.processes} process(es)" if args.processes else f"{args.workers} thread(s)")
            + f", batch {args.batch}",
            f"{len(self.records)} calls; {len(voices)} voices measured stable across ±40 ms shifts "
            f"(loadtest/voices.json: {sum(v.name.startswith('real-') for v in voices)} real recordings of "
            "Debian's French prompts, the rest espeak-ng, SYNTHETIC)",
            f"machine: {os.cpu_count()} cores, load average at the end {os.getloadavg()[0]:.2f}",
        ]
        verdict = write_report(self.out, args.profile, self.records, self.samples, t0, SLO(), notes)
        if self.profile.step_s:
            knee = self._knee(t0)
            (self.out / "report.md").write_text((self.out / "report.md").read_text() + f"\n## Ramp\n\n{knee}\n")
            print(knee, file=sys.stderr)
        print(
            f"\nloadtest {args.profile}: {'PASSED' if verdict.passed else 'FAILED'} "
            f"{'; '.join(verdict.reasons)}\nreport: {self.out / 'report.md'}",
            file=sys.stderr,
        )
        return 0 if verdict.passed else 1

    async def _wait_ready(self, router: subprocess.Popen[bytes], port: int, sim: SimulatedAsterisk) -> bool:
        deadline = time.monotonic() + self.args.start_timeout
        while time.monotonic() < deadline:
            if router.poll() is not None:
                return False
            try:
                body = await asyncio.to_thread(
                    lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read().decode()
                )
                if '"ok"' in body and sim.ami_logins:
                    return True
            except OSError:
                pass
            await asyncio.sleep(0.3)
        return False

    async def _offer(self, sim: SimulatedAsterisk, population: Population, t0: float) -> None:
        rng = random.Random(self.args.seed)
        t = 0.0
        while True:
            rate = rate_at(self.profile, t)
            t += rng.expovariate(rate)
            if t >= self.profile.duration:
                return
            delay = t0 + t - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.monotonic()
            plan = population.next_call(now)
            task = asyncio.create_task(sim.call(plan, now))
            self.inflight.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[CallRecord]) -> None:
        self.inflight.discard(task)
        if not task.cancelled() and task.exception() is None:
            self.records.append(task.result())

    async def _progress(self, t0: float) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            recent = [r for r in self.records if r.ended_at and now - r.ended_at < 10]
            e2r = sorted(x for r in self.records[-500:] if (x := r.speech_to_route_s) is not None)
            p99 = f"{e2r[min(len(e2r) - 1, int(0.99 * len(e2r)))] * 1000:.0f} ms" if e2r else "-"
            failed = sum(1 for r in self.records if r.failure)
            rate = rate_at(self.profile, now - t0)
            print(
                f"\r t={now - t0:5.0f}s offered {rate:4.1f}/s completed {len(recent) / 10:4.1f}/s "
                f"concurrent {len(self.inflight):4d} done {len(self.records):5d} failed {failed:3d} "
                f"p99 speech->route {p99:>7}",
                end="",
                file=sys.stderr,
                flush=True,
            )

    async def _sample(self, pid: int, port: int) -> None:
        while True:
            try:
                m = await asyncio.to_thread(_scrape, port)
                rss, fds = _proc_figures(pid)
                self.samples.append(
                    Sample(
                        time.monotonic(),
                        rss,
                        fds,
                        m.get("agi_router_recognizer_inflight", 0.0),
                        m.get("agi_router_recognizer_busy_seconds_total", 0.0),
                        m.get("agi_router_recognizer_workers", 1.0),
                        m.get("agi_router_speech_admission_refused_total", 0.0),
                    )
                )
            except OSError:
                pass
            await asyncio.sleep(1.0)

    def _knee(self, t0: float) -> str:
        p = self.profile
        lines, knee = [], None
        for step in range(int(p.duration // p.step_s)):
            lo, hi = t0 + step * p.step_s, t0 + (step + 1) * p.step_s
            recs = [r for r in self.records if lo <= r.offered_at < hi]
            if not recs:
                continue
            e2r = sorted(x for r in recs if (x := r.speech_to_route_s) is not None)
            p99 = e2r[min(len(e2r) - 1, int(0.99 * len(e2r)))] if e2r else None  # no speech route: no data
            failed = sum(1 for r in recs if r.failure)
            ok = failed == 0 and (p99 is None or p99 <= SLO().p99_speech_to_route_s)
            shown = "no data (no speech route)" if p99 is None else f"{p99 * 1000:.0f} ms (n = {len(e2r)})"
            lines.append(
                f"- {rate_at(p, step * p.step_s):g} calls/s: {len(recs)} calls, {failed} failed, "
                f"p99 end of speech -> route {shown}: {'held' if ok else 'BROKE'}"
            )
            if not ok and knee is None:
                knee = rate_at(p, step * p.step_s)
        head = f"The SLOs broke at {knee:g} calls/s." if knee is not None else "The SLOs held at every step."
        return head + "\n\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="loadtest/run", description=__doc__.split("\n\n")[0])
    ap.add_argument("profile", choices=sorted(PROFILES))
    ap.add_argument("--rate", type=float, help="calls/s (the start rate for ramp)")
    ap.add_argument("--duration", type=float, help="seconds of offered load")
    ap.add_argument("--out", type=Path, help="report folder (default loadtest/reports/PROFILE-DATE)")
    ap.add_argument("--processes", type=int, default=0, help="recogniser worker processes (router [speech] processes)")
    ap.add_argument("--workers", type=int, default=1, help="recogniser threads when --processes is 0")
    ap.add_argument("--batch", type=int, default=4, help="utterances per recogniser pass (router [speech] batch)")
    ap.add_argument("--model-dir", help="an assembled Whisper model folder (default: assembled on first start)")
    ap.add_argument("--seed", type=int, default=3646)
    ap.add_argument("--log-level", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                    help="the router's log level (its log is kept in OUT/work/router.log)")  # fmt: skip
    ap.add_argument("--silence-s", type=float, default=15.0, help="nothing from the router this long = silence")
    ap.add_argument("--start-timeout", type=float, default=120.0)
    args = ap.parse_args(argv)
    if (args.rate is not None and args.rate <= 0) or (args.duration is not None and args.duration <= 0):
        print("loadtest: --rate and --duration must be positive", file=sys.stderr)
        return 2
    if not (0 <= args.processes <= 64 and 1 <= args.workers <= 16 and 1 <= args.batch <= 16):
        print("loadtest: --processes 0..64, --workers 1..16, --batch 1..16 (the router's ranges)", file=sys.stderr)
        return 2
    return asyncio.run(Run(args).main())


if __name__ == "__main__":
    sys.exit(main())
