"""The SIPp side of the load harness: audio, caller files, agents, and a run through a real Asterisk.

    python -m loadtest.sipp prepare DIR            audio folders + callers.csv + directory.csv
    python -m loadtest.sipp run DIR --asterisk HOST:PORT [--rate R] [--calls N] [--agents 3]

``prepare`` writes, under DIR:

* ``voices/<name>/speech.ulaw``: what a speaking caller says, headerless 8 kHz µ-law (SIPp 3.6.1's
  ``rtp_stream`` sends a WAV header as audio and reads the file once per scenario: one folder, one SIPp
  instance per sentence), and ``voices/<name>/expects``, what the router should act on: the voices of
  ``loadtest/voices.py`` whose recognition was measured stable across ±40 ms shifts (real human recordings
  of Debian's French prompt package, a few espeak-ng sentences), so the run measures the speech path, not
  where the frame grid fell; the report gives the share of speaking callers routed on what they said;
* ``callers.csv`` (SIPp ``-inf``): the population of ``loadtest/population.py`` — numbers (a third active
  account holders, inactive, none), repeat callers, people asking for a person (0), silent callers —
  with when they speak and the digits they type if they get the menu;
* ``directory.csv``: the account directory that goes with those numbers (``agi-router directory import``).

``run`` registers the agents (``agent-register.xml``: PJSIP/agent1..N with the credentials of
``asterisk/pjsip.conf``), starts one SIPp UAS per agent (``agent.xml``: ring 2 s, talk ``--handling-s``,
hang up), then the callers (one SIPp UAC per voice folder sharing the rate), each with ``-trace_stat``,
``-trace_rtt``, ``-trace_counts`` and ``-trace_err`` in DIR/traces, waits for them, stops the agents and
prints the SIPp totals. Bounded: ``--calls`` in all, ``--timeout-s`` at most.
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path

import numpy as np

from agi_router.media.g711 import ulaw_encode

from .observe import AmiWatch, MetricsWatch, histogram_count, histogram_quantile
from .population import MENU, Population
from .report import SLO, ms, write_report
from .sim import CallerPlan, CallRecord
from .voices import stable_voices

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "loadtest" / "scenarios"
TRAILING_SILENCE_S = 0.8  # a phone goes on sending after its caller stops: the router hears the silence


def _write_ulaw(pcm: np.ndarray, folder: Path) -> float:
    """The sentence then 0.8 s of silence (without it, SIPp stops sending at the last word: a continuous
    stream going quiet is the network holding packets to the router, whose end of turn then waits its stall
    allowance: the load test would measure that, not the caller's pause)."""
    folder.mkdir(parents=True, exist_ok=True)
    audio = np.concatenate([pcm.astype(np.int16), np.zeros(int(8000 * TRAILING_SILENCE_S), np.int16)])
    (folder / "speech.ulaw").write_bytes(ulaw_encode(audio))
    return len(audio) / 8000


def prepare(out: Path, calls: int, seed: int = 3646) -> dict[str, float]:
    """Voices, callers.csv, directory.csv under ``out``; returns each voice's length in seconds (none:
    espeak-ng and Debian's French prompts are both missing)."""
    voices: dict[str, float] = {}
    for v in stable_voices():
        voices[v.name] = _write_ulaw(v.pcm, out / "voices" / v.name)
        (out / "voices" / v.name / "expects").write_text(v.expects + "\n")
    pop = Population([], seed=seed)
    pop.directory_csv(out / "directory.csv", date.today())
    r = random.Random(seed)
    with (out / "callers.csv").open("w", newline="") as f:
        f.write("SEQUENTIAL\n")
        w = csv.writer(f, delimiter=";", lineterminator="\n")
        for i in range(calls):
            plan = pop.next_call(float(i))
            number = plan.number or "anonymous"  # withheld: Asterisk's CALLERID(num) is "anonymous"
            skill, motive, _ = r.choice(MENU)
            tail = [plan.kind, plan.account]  # fields 6-7: not used by SIPp, read by the report
            if plan.kind == "person":  # says "conseiller"... in DTMF: 0 at the first menu
                w.writerow([number, r.randint(600, 1500), 3000, "0", "", 30000, *tail])
            elif plan.kind == "silent":  # says nothing, types nothing, hangs up after a minute
                w.writerow([number, 60000, 0, "", "", 1000, *tail])
            elif plan.kind == "hangup":  # hangs up during the welcome, ~3 s after the answer
                w.writerow([number, 500, 0, "", "", 0, *tail])
            else:
                w.writerow([number, r.randint(500, 1200), 12000, skill, motive, r.randint(20000, 60000), *tail])
    return voices


def _die_with_runner() -> None:
    """In each SIPp child: the kernel kills it when this runner dies, however it dies (a load test killed
    with SIGKILL must not leave SIPp agents answering calls on the host)."""
    import ctypes
    import signal

    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def _sipp(args: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    # stderr to a file, not a pipe: nobody reads it during the run, and a full pipe would block SIPp
    err = (cwd / "sipp-stderr.log").open("ab")
    try:
        return subprocess.Popen(["sipp", *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=err,
                                preexec_fn=_die_with_runner)  # fmt: skip
    finally:
        err.close()


def run(
    out: Path,
    asterisk: str,
    rate: float,
    calls: int,
    agents: int,
    handling_s: float,
    timeout_s: float,
    report: Path | None = None,
) -> int:
    if shutil.which("sipp") is None:
        print("loadtest: sipp not found (Debian package sip-tester)", file=sys.stderr)
        return 2
    voices = sorted(p for p in (out / "voices").iterdir() if (p / "speech.ulaw").is_file())
    if not voices or not (out / "callers.csv").is_file():
        print(f"loadtest: run `python -m loadtest.sipp prepare {out}` first", file=sys.stderr)
        return 2
    traces = out / "traces"
    traces.mkdir(exist_ok=True)
    host, _, port = asterisk.partition(":")
    passwords = _agent_passwords()
    if passwords is None:
        return 2
    uas = []
    for n in range(1, agents + 1):
        if f"agent{n}" not in passwords:
            print(f"loadtest: no SIP account agent{n}: `agi-router asterisk agent add agent{n} --queue accueil`",
                  file=sys.stderr)  # fmt: skip
            return 2
        local = str(5080 + n)
        reg = subprocess.run(
            ["sipp", "-sf", str(SCENARIOS / "agent-register.xml"), "-s", f"agent{n}", "-au", f"agent{n}",
             "-ap", passwords[f"agent{n}"], "-i", "127.0.0.1", "-p", local, "-m", "1", "-nostdin",
             "-timeout", "10s", f"{host}:{port or '5060'}"],
            cwd=traces, capture_output=True, text=True,
        )  # fmt: skip
        if reg.returncode != 0:
            print(f"loadtest: agent{n} could not register: {reg.stderr.strip()[-300:]}", file=sys.stderr)
            return 2
        uas.append(_sipp(["-sf", str(SCENARIOS / "agent.xml"), "-i", "127.0.0.1", "-p", local, "-mp",
                          str(6100 + 20 * n), "-d", str(int(handling_s * 1000)), "-trace_stat",
                          "-trace_counts", "-trace_err", "-nostdin"], traces))  # fmt: skip
    rng = random.Random(calls)
    voices = rng.sample(voices, min(calls, len(voices)))  # a call per voice at least, `calls` in all
    per = [calls // len(voices) + (i < calls % len(voices)) for i in range(len(voices))]
    ami, metrics = _watchers() if report is not None else (None, None)
    t0 = time.monotonic()
    uac = []
    callers = (out / "callers.csv").read_text().splitlines()[1:]
    for i, v in enumerate(voices):  # each instance its own callers: repeat callers stay repeat callers
        mine = callers[i :: len(voices)] or callers[:1]
        (v / "callers.csv").write_text("SEQUENTIAL\n" + "\n".join(mine) + "\n")
        uac.append(_sipp(["-sf", str(SCENARIOS / "caller-speaks.xml"), "-inf", "callers.csv", "-i", "127.0.0.1",
                          "-p", str(5100 + i), "-mp", str(7000 + 40 * i), "-r", f"{rate / len(voices):.3f}",
                          "-rp", "1000", "-m", str(per[i]), "-l", str(max(10, per[i])), "-timeout",
                          f"{int(timeout_s)}s", "-trace_stat", "-trace_rtt", "-rtt_freq", "1", "-trace_counts",
                          "-trace_err", "-nostdin", f"{host}:{port or '5060'}"], v))  # fmt: skip
    deadline = time.monotonic() + timeout_s + 30
    rcs = []
    for p in uac:
        try:
            rcs.append(p.wait(max(1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            p.kill()
            rcs.append(-9)
    for p in uas:  # our agents only (never pkill: other SIPp runs may share the host)
        p.terminate()
    for p in uas:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
    ok, failed = _totals(voices)
    print(f"SIPp callers: {ok} successful, {failed} failed, exit codes {rcs}; traces under {out}")
    sipp_ok = failed == 0 and all(rc == 0 for rc in rcs)
    if report is None or ami is None or metrics is None:
        return 0 if sipp_ok else 1
    time.sleep(3)  # the last hang-ups reach AMI
    ami.stop()
    metrics.stop()
    passed = _report(report, out, voices, ami, metrics, t0, rate, calls, agents)
    return 0 if sipp_ok and passed else 1


def _agent_passwords() -> dict[str, str] | None:
    """The agents' generated passwords, from the accounts of the router whose settings are in
    $AGI_ROUTER_CONFIG (what `agi-router asterisk setup` installed into Asterisk)."""
    from agi_router.config import load_settings
    from agi_router.exceptions import ConfigError
    from agi_router.sip.accounts import AccountBook

    settings = load_settings()
    path = settings.path(settings.sip.accounts_file)
    try:
        book = AccountBook.load(path)
    except ConfigError as exc:
        print(f"loadtest: {exc} (run `agi-router asterisk setup --etc DIR` with the same $AGI_ROUTER_CONFIG first)",
              file=sys.stderr)  # fmt: skip
        return None
    return {a.name: a.password for a in book.accounts.values() if a.role == "agent"}


def _watchers() -> tuple[AmiWatch, MetricsWatch]:
    """AMI and /metrics of the router whose settings are in $AGI_ROUTER_CONFIG (else the defaults)."""
    from agi_router.asterisk_setup import ami_secret
    from agi_router.config import load_settings

    settings = load_settings()
    ami = AmiWatch(settings.ami.host, settings.ami.port, settings.ami.username, ami_secret(settings))
    ami.start()
    ami.ready.wait(5)
    metrics = MetricsWatch(f"http://{settings.metrics.host}:{settings.metrics.port}/metrics")
    metrics.start()
    return ami, metrics


def _report(
    report: Path, out: Path, voices: list[Path], ami: AmiWatch, metrics: MetricsWatch, t0: float,
    rate: float, calls: int, agents: int,
) -> bool:  # fmt: skip
    """The router-only driver's report, from what AMI, the router's /metrics and SIPp saw."""
    who: dict[str, tuple[str, str]] = {}  # number -> (kind, account) of its first call
    for line in (out / "callers.csv").read_text().splitlines()[1:]:
        f = line.split(";")
        if len(f) >= 8:
            who.setdefault(f[0], (f[6], f[7]))
    expects: dict[str, set[str]] = {}  # number -> what its voice(s) should be routed on
    for v in voices:
        said = (v / "expects").read_text().strip() if (v / "expects").is_file() else ""
        for line in (v / "callers.csv").read_text().splitlines()[1:] if (v / "callers.csv").is_file() else ():
            f = line.split(";")
            if said and len(f) >= 8 and f[6] not in ("person", "silent", "hangup"):  # those do not speak first
                expects.setdefault(f[0], set()).add(said)
    records = []
    for ch in ami.snapshot():
        kind, account = who.get(ch.number, ("?", "?"))
        mine = expects.get(ch.number, set())
        plan = CallerPlan(ch.number if ch.number != "anonymous" else "", kind, account=account,
                          expects=next(iter(mine)) if len(mine) == 1 else "")  # fmt: skip
        rec = CallRecord(ch.uniqueid, plan, ch.started, connected_at=ch.started, ended_at=ch.ended)
        rec.variables = {
            f"ROUTER_{k.upper()}": v for k, v in ch.route.items() if k in ("Rule", "Action", "Queue", "Motive")
        }
        rec.route_at = ch.routed_at if ch.route.get("Done") == "1" else None
        if ch.ended is None:
            rec.failure = "never_ended"
        elif not ch.route and ch.ended - ch.started >= 45 and kind != "silent":
            rec.failure = "no_route"  # answered, never routed, hung up by the caller at last: left waiting
        records.append(rec)
    sipp_failed = Counter[str]()
    for v in voices:
        for stat in v.glob("caller-speaks_*_.csv"):
            rows = list(csv.DictReader(stat.read_text().splitlines(), delimiter=";"))
            for k, val in (rows[-1] if rows else {}).items():
                if k.startswith("Failed") and k.endswith("(C)") and val not in ("", "0"):
                    sipp_failed[k.removesuffix("(C)")] += int(val)
    for reason, n in sipp_failed.items():
        if reason != "FailedCall":
            records.extend(_failed_record(reason, t0) for _ in range(n))
    hist = "agi_router_speech_to_route_seconds"
    p99 = histogram_quantile(metrics.first, metrics.last, hist, 0.99)
    n = histogram_count(metrics.first, metrics.last, hist)
    wait = "agi_router_voice_to_route_seconds"
    last_word = {
        "p50": ms(histogram_quantile(metrics.first, metrics.last, wait, 0.5)),
        "p99": ms(histogram_quantile(metrics.first, metrics.last, wait, 0.99)),
        "n": histogram_count(metrics.first, metrics.last, wait),
        "source": "the router's histogram (bucket upper bound)",
    }
    notes = [
        f"SIPp through a real Asterisk: {calls} calls at {rate:g} calls/s, {agents} SIPp agents; "
        f"{len(voices)} voices measured stable across ±40 ms shifts (loadtest/voices.json: "
        f"{sum(v.name.startswith('real-') for v in voices)} real recordings of Debian's French prompts, the rest "
        "espeak-ng, SYNTHETIC)",
        f"{len(records)} caller channels seen on AMI; {sum(c.answered_by_agent for c in ami.snapshot())} "
        "answered by an agent",
        "end of speech -> route: the router's own histogram between the first and the last scrape",
        *(f"could not watch: {e}" for e in (ami.error, metrics.error) if e),
    ]
    verdict = write_report(report, "sipp", records, metrics.samples, t0, SLO(), notes, p99_override_s=p99,
                           override_n=n, last_word_ms=last_word)  # fmt: skip
    print(f"report: {report / 'report.md'} ({'PASSED' if verdict.passed else 'FAILED: ' + '; '.join(verdict.reasons)})")
    return verdict.passed


def _failed_record(reason: str, t0: float) -> CallRecord:
    rec = CallRecord("sipp-failed", CallerPlan("", "?"), t0, ended_at=t0)
    rec.failure = "sipp_" + reason.removeprefix("Failed").lower()
    return rec


def _totals(voices: list[Path]) -> tuple[int, int]:
    ok = failed = 0
    for v in voices:
        for stat in v.glob("caller-speaks_*_.csv"):
            rows = list(csv.DictReader(stat.open(), delimiter=";"))
            if rows:
                ok += int(rows[-1].get("SuccessfulCall(C)", 0) or 0)
                failed += int(rows[-1].get("FailedCall(C)", 0) or 0)
    return ok, failed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadtest.sipp", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("prepare", help="audio folders, callers.csv, directory.csv")
    pr.add_argument("dir", type=Path)
    pr.add_argument("--calls", type=int, default=200)
    ru = sub.add_parser("run", help="agents + callers through a real Asterisk")
    ru.add_argument("dir", type=Path)
    ru.add_argument("--asterisk", default="127.0.0.1:5060", help="Asterisk's PJSIP UDP transport")
    ru.add_argument("--rate", type=float, default=1.0, help="calls/s in all")
    ru.add_argument("--calls", type=int, default=20)
    ru.add_argument("--agents", type=int, default=3)
    ru.add_argument("--handling-s", type=float, default=30.0)
    ru.add_argument("--timeout-s", type=float, default=300.0)
    ru.add_argument("--report", type=Path, help="write the load-test report here (AMI + the router's /metrics, "
                    "located by $AGI_ROUTER_CONFIG)")  # fmt: skip
    a = ap.parse_args(argv)
    if a.cmd == "prepare":
        voices = prepare(a.dir, a.calls)
        print(f"{len(voices)} voice(s), {a.calls} callers under {a.dir}")
        return 0
    if a.rate <= 0 or a.calls <= 0 or not 1 <= a.agents <= 9:
        print("loadtest: --rate and --calls must be positive, --agents 1..9", file=sys.stderr)
        return 2
    return run(a.dir, a.asterisk, a.rate, a.calls, a.agents, a.handling_s, a.timeout_s, a.report)


if __name__ == "__main__":
    sys.exit(main())
