"""The end of a load test: per-second series, PNG plots (matplotlib), a Markdown report, the SLO verdict.

SLOs (the exit code): no failed call; p99 end of speech -> route <= 100 ms; no caller left in silence
(``silence`` failures: the router sent nothing for the simulator's ``silence_s`` while the caller waited).
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .sim import CallRecord

__all__ = ["SLO", "Sample", "Verdict", "ms", "percentile", "write_report"]


@dataclass(frozen=True)
class SLO:
    max_failed: int = 0
    p99_speech_to_route_s: float = 0.100


@dataclass
class Sample:
    """One look at the router, once a second: its /metrics and its process."""

    t: float
    rss_mb: float
    fds: int
    inflight: float
    busy_s: float
    workers: float
    refused: float


@dataclass
class Verdict:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def _or_no_data(value: object, unit: str = "") -> str:
    return "no data" if value is None else f"{value}{unit}"


def judge(
    records: Sequence[CallRecord],
    slo: SLO,
    p99_override_s: float | None = None,
    override_n: int | None = None,
    last_word_ms: dict[str, Any] | None = None,
) -> Verdict:
    """``p99_override_s``: the p99 end of speech -> route measured elsewhere (the router's own histogram,
    when the driver cannot see the end of speech: a run through a real Asterisk), over ``override_n``
    observations. A percentile of no observation is "no data", never a breach. ``last_word_ms``: the caller's
    last word -> route (p50, p99, n, source) measured elsewhere (the router's histogram)."""
    failures = Counter(r.failure for r in records if r.failure)
    e2r = [x for r in records if (x := r.speech_to_route_s) is not None]
    overridden = override_n is not None or p99_override_s is not None
    n = (override_n or 0) if overridden else len(e2r)
    p99 = (p99_override_s if overridden else percentile(e2r, 99)) if n else None
    reasons = []
    if sum(failures.values()) > slo.max_failed:
        reasons.append(f"{sum(failures.values())} failed call(s): {dict(failures)}")
    if p99 is not None and p99 > slo.p99_speech_to_route_s:
        reasons.append(f"p99 end of speech -> route {p99 * 1000:.0f} ms > {slo.p99_speech_to_route_s * 1000:.0f} ms")
    if failures.get("silence"):
        reasons.append(f"{failures['silence']} caller(s) left in silence")
    outcomes = Counter(r.variables.get("ROUTER_RULE", "-") for r in records if r.failure is None)
    figures = {
        "calls": len(records),
        "failed": dict(failures),
        "speech_to_route_ms": {
            "n": n,
            "p50": ms(percentile(e2r, 50)),
            "p99": ms(p99),
            "source": "the router's histogram (bucket bound)" if overridden else "per call",
            "max": ms(max(e2r) if e2r else None),
        },
        "last_word_to_route_ms": last_word_ms
        or {
            "p50": ms(percentile(words := [x for r in records if (x := r.last_word_to_route_s) is not None], 50)),
            "p99": ms(percentile(words, 99)),
            "n": len(words),
            "source": "per call",
        },
        "setup_ms_p99": ms(
            percentile(
                [r.first_command_at - r.connected_at for r in records if r.first_command_at and r.connected_at], 99
            )
        ),
        "understood": understood(records),
        "rules": dict(outcomes.most_common()),
        "kinds": dict(Counter(r.plan.kind for r in records)),
    }
    return Verdict(not reasons, reasons, figures)


def understood(records: Sequence[CallRecord]) -> dict[str, Any]:
    """Of the routed callers who said a sentence (``plan.expects``), how many were routed on what they said
    (loadtest/voices.py: the voices are those whose recognition is stable, so a miss is the system's)."""
    from agi_router.motives.catalogue import Catalogue

    from .voices import route_matches

    skill_of = {m.id: m.skill for m in Catalogue.load()}
    said = [r for r in records if r.plan.expects and r.failure is None and r.variables.get("ROUTER_RULE")]
    hits = sum(route_matches(r.plan.expects, r.variables, skill_of) for r in said)
    return {"callers": len(said), "understood": hits, "share": round(hits / len(said), 3) if said else None}


def _understood_line(u: dict[str, Any]) -> str:
    if not u["callers"]:
        return "no data"
    return f"{u['understood']} of {u['callers']} ({100 * u['share']:.0f} %)"


def ms(x: float | None) -> float | None:
    """Seconds -> ms, one decimal (None stays None)."""
    return None if x is None else round(x * 1000, 1)


def write_report(
    out: Path,
    name: str,
    records: Sequence[CallRecord],
    samples: Sequence[Sample],
    t0: float,
    slo: SLO,
    notes: Sequence[str] = (),
    p99_override_s: float | None = None,
    override_n: int | None = None,
    last_word_ms: dict[str, Any] | None = None,
) -> Verdict:
    """Plots + report.md + summary.json into ``out``; returns the verdict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    verdict = judge(records, slo, p99_override_s, override_n, last_word_ms)
    end = max([r.ended_at or r.offered_at for r in records] + [s.t for s in samples] + [t0 + 1])
    n = int(end - t0) + 1
    secs = list(range(n))
    offered, completed, failed, concurrent = [0] * n, [0] * n, [0] * n, [0] * n
    e2r_by_s: list[list[float]] = [[] for _ in range(n)]
    for r in records:
        offered[int(r.offered_at - t0)] += 1
        if r.ended_at is not None:
            i = min(n - 1, int(r.ended_at - t0))
            (failed if r.failure else completed)[i] += 1
            for s in range(int(r.offered_at - t0), i + 1):
                concurrent[s] += 1
        if (x := r.speech_to_route_s) is not None and r.route_at is not None:
            e2r_by_s[min(n - 1, int(r.route_at - t0))].append(x * 1000)
    plots = []

    def save(fig: Any, fname: str, title: str) -> None:
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=90)
        plt.close(fig)
        plots.append((title, fname))

    fig, ax = plt.subplots(figsize=(8, 3))
    ax.plot(secs, offered, label="offered")
    ax.plot(secs, completed, label="completed")
    ax.plot(secs, failed, label="failed", color="red")
    ax.set_xlabel("s")
    ax.set_ylabel("calls/s")
    ax.legend()
    save(fig, "calls.png", "Offered, completed and failed calls per second")
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.plot(secs, concurrent)
    ax.set_xlabel("s")
    ax.set_ylabel("calls")
    save(fig, "concurrent.png", "Concurrent calls")
    fig, ax = plt.subplots(figsize=(8, 3))
    fails = Counter(r.failure for r in records if r.failure)
    ax.bar(list(fails) or ["none"], list(fails.values()) or [0], color="red")
    save(fig, "failures.png", "Failures by reason")
    fig, ax = plt.subplots(figsize=(8, 3))
    for q in (50, 99):
        ys = [percentile(v, q) if v else float("nan") for v in e2r_by_s]
        ax.plot(secs, ys, ".-", label=f"p{q}")
    ax.axhline(slo.p99_speech_to_route_s * 1000, color="red", lw=0.8, ls="--", label="SLO p99")
    ax.set_xlabel("s")
    ax.set_ylabel("ms")
    ax.legend()
    save(fig, "speech_to_route.png", "End of speech -> route (per second of routing)")
    if samples:
        ts = [s.t - t0 for s in samples]
        fig, ax = plt.subplots(figsize=(8, 3))
        ax.plot(ts, [s.inflight for s in samples], label="utterances in flight")
        busy = [0.0] + [
            (b.busy_s - a.busy_s) / max(1e-9, (b.t - a.t) * max(1.0, b.workers)) for a, b in itertools.pairwise(samples)
        ]
        ax2 = ax.twinx()
        ax2.plot(ts, busy, color="orange", label="busy share")
        ax2.set_ylim(0, 1.05)
        ax.set_xlabel("s")
        ax.legend(loc="upper left")
        ax2.legend(loc="upper right")
        save(fig, "recognizer.png", "Recogniser queue depth and busy share")
        fig, ax = plt.subplots(figsize=(8, 3))
        ax.plot(ts, [s.rss_mb for s in samples], label="RSS (MB)")
        ax2 = ax.twinx()
        ax2.plot(ts, [s.fds for s in samples], color="green", label="open FDs")
        ax.set_xlabel("s")
        ax.legend(loc="upper left")
        ax2.legend(loc="upper right")
        save(fig, "process.png", "Router RSS and file descriptors")
        verdict.figures["rss_mb"] = {
            "first": samples[0].rss_mb,
            "last": samples[-1].rss_mb,
            "max": max(s.rss_mb for s in samples),
        }
        verdict.figures["fds"] = {"first": samples[0].fds, "last": samples[-1].fds, "max": max(s.fds for s in samples)}
        verdict.figures["admission_refused"] = samples[-1].refused - samples[0].refused
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    rules = Counter(r.variables.get("ROUTER_RULE", "-") for r in records if not r.failure)
    segments = Counter(r.plan.account for r in records)
    axes[0].barh(list(rules), list(rules.values()))
    axes[0].set_title("rule")
    axes[1].barh(list(segments), list(segments.values()), color="gray")
    axes[1].set_title("caller account")
    save(fig, "outcomes.png", "Outcomes by rule, calls by caller segment")

    lines = [
        f"# Load test `{name}`: {'PASSED' if verdict.passed else 'FAILED'}",
        "",
        *(f"- {x}" for x in notes),
        "",
        "## SLOs",
        "",
        f"- failed calls: {sum(verdict.figures['failed'].values())} (allowed {slo.max_failed})",
        f"- p99 end of speech -> route: {_or_no_data(verdict.figures['speech_to_route_ms']['p99'], ' ms')} "
        f"(SLO {slo.p99_speech_to_route_s * 1000:.0f} ms, n = {verdict.figures['speech_to_route_ms']['n']})",
        f"- callers left in silence: {verdict.figures['failed'].get('silence', 0)}",
        *(f"- **broken**: {r}" for r in verdict.reasons),
        "",
        "## Speech path",
        "",
        f"- speaking callers routed on what they said: {_understood_line(verdict.figures['understood'])}",
        f"- caller's last word -> route: p50 {_or_no_data(verdict.figures['last_word_to_route_ms']['p50'], ' ms')}, "
        f"p99 {_or_no_data(verdict.figures['last_word_to_route_ms']['p99'], ' ms')} "
        f"(n = {verdict.figures['last_word_to_route_ms']['n']}, {verdict.figures['last_word_to_route_ms']['source']})",
        "",
        "## Figures",
        "",
        "```json",
        json.dumps(verdict.figures, indent=1),
        "```",
        "",
        *(f"## {title}\n\n![{title}]({fname})\n" for title, fname in plots),
    ]
    (out / "report.md").write_text("\n".join(lines))
    (out / "summary.json").write_text(
        json.dumps({"name": name, "passed": verdict.passed, "reasons": verdict.reasons, **verdict.figures}, indent=1)
    )
    return verdict
