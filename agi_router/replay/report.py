"""The replay's answer: per policy and caller segment, who the router ends, who reaches a person, how long
they wait, who never reaches anyone that day; the decisions that differ between policies; PNG plots."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..policy.config import Policy
from .engine import Outcome, never_reached

__all__ = ["Row", "segments_of", "summarize", "write_report"]


def segments_of(o: Outcome) -> tuple[str, ...]:
    """The closed set of segments a call counts in: its account status, and its cohorts (policy.cohorts)."""
    return (o.decision.segment.value, *o.cohorts)


@dataclass(frozen=True)
class Row:
    segment: str
    calls: int
    ended: float  # share ended by the router (deflected or hung up on)
    deflected: float
    hung_up: float
    person: float  # share that reached a person
    priority: float
    abandoned: float
    wait_mean_s: float | None
    wait_p90_s: float | None
    never_reached: int  # callers of this segment who reached nobody that day


def _p90(values: list[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(0.9 * len(s)))]


def summarize(outcomes: Sequence[Outcome], policy: Policy) -> list[Row]:
    lost = never_reached(list(outcomes), policy)
    groups: dict[str, list[Outcome]] = {"all": list(outcomes)}
    for o in outcomes:
        for s in segments_of(o):
            groups.setdefault(s, []).append(o)
    rows = []
    for seg, os_ in groups.items():
        n = len(os_)
        waits = [o.wait_s for o in os_ if o.wait_s is not None]
        rows.append(
            Row(
                seg,
                n,
                sum(o.ended_by_router for o in os_) / n,
                sum(o.decision.action.value == "deflect" for o in os_) / n,
                sum(o.decision.action.value == "hangup" for o in os_) / n,
                sum(o.reached_person for o in os_) / n,
                sum(o.decision.action.value == "priority" for o in os_) / n,
                sum(o.abandoned for o in os_) / n,
                sum(waits) / len(waits) if waits else None,
                _p90(waits),
                len({o.call.caller for o in os_ if o.call.caller in lost}),
            )
        )
    order = ["all", "account_active", "account_inactive", "no_account", "account_unknown", "withheld"]
    return sorted(rows, key=lambda r: (order.index(r.segment) if r.segment in order else len(order), r.segment))


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f} s"


def table(results: Mapping[str, tuple[Policy, Sequence[Outcome]]]) -> str:
    lines = [
        "| policy | segment | calls | ended by the router | deflected | hung up on | reached a person | priority "
        "| abandoned | wait mean / p90 | callers who reached nobody that day |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, (policy, outcomes) in results.items():
        for r in summarize(outcomes, policy):
            lines.append(
                f"| {label} | {r.segment} | {r.calls} | {_pct(r.ended)} | {_pct(r.deflected)} | {_pct(r.hung_up)} "
                f"| {_pct(r.person)} | {_pct(r.priority)} | {_pct(r.abandoned)} | {_s(r.wait_mean_s)} / "
                f"{_s(r.wait_p90_s)} | {r.never_reached} |"
            )
    return "\n".join(lines)


def write_report(out: Path, results: Mapping[str, tuple[Policy, Sequence[Outcome]]], notes: Sequence[str] = ()) -> Path:
    """report.md (+ PNG plots when matplotlib is installed) and differences.csv into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    labels = list(results)
    diff_rows = []
    if len(labels) >= 2:
        base = results[labels[0]][1]
        for label in labels[1:]:
            for a, b in zip(base, results[label][1], strict=True):
                if (a.decision.action, a.decision.rule) != (b.decision.action, b.decision.rule):
                    diff_rows.append([a.call.call_id, a.call.at.isoformat(), "|".join(segments_of(a)), labels[0],
                                      a.decision.action.value, a.decision.rule, label, b.decision.action.value,
                                      b.decision.rule])  # fmt: skip
        with (out / "differences.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["call_id", "time", "segments", "policy_a", "action_a", "rule_a", "policy_b", "action_b",
                        "rule_b"])  # fmt: skip
            w.writerows(diff_rows)
    plots = _plots(out, results)
    lines = [
        "# Policy replay",
        "",
        *(f"- {n}" for n in notes),
        "",
        table(results),
        "",
        f"{len(diff_rows)} decision(s) differ between {labels[0]} and the other policies (differences.csv)."
        if len(labels) >= 2
        else "",
        "",
        *(f"![{t}]({f})\n" for t, f in plots),
    ]
    (out / "report.md").write_text("\n".join(lines))
    return out / "report.md"


def _plots(out: Path, results: Mapping[str, tuple[Policy, Sequence[Outcome]]]) -> list[tuple[str, str]]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    summaries = {label: summarize(o, p) for label, (p, o) in results.items()}
    segments = [r.segment for r in next(iter(summaries.values()))]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(1, len(summaries))
    for i, (label, rows) in enumerate(summaries.items()):
        by = {r.segment: r for r in rows}
        xs = [j + i * width for j in range(len(segments))]
        axes[0].bar(xs, [100 * by[s].ended if s in by else 0 for s in segments], width, label=label)
        axes[1].bar(xs, [100 * by[s].person if s in by else 0 for s in segments], width, label=label)
    for ax, title in zip(axes, ("ended by the router (%)", "reached a person (%)"), strict=True):
        ax.set_xticks([j + width * (len(summaries) - 1) / 2 for j in range(len(segments))])
        ax.set_xticklabels(segments, rotation=40, ha="right", fontsize=8)
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "segments.png", dpi=90)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(8, 3))
    for label, (_, outcomes) in results.items():
        waits = sorted(o.wait_s / 60 for o in outcomes if o.wait_s is not None)
        if waits:
            ax.plot(waits, [i / len(waits) for i in range(len(waits))], label=label)
    ax.set_xlabel("wait for a person (min)")
    ax.set_ylabel("share of queued calls")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "waits.png", dpi=90)
    plt.close(fig)
    return [("Who the router ends and who reaches a person, by segment", "segments.png"),
            ("Waits for a person (cumulative)", "waits.png")]  # fmt: skip
