"""Draw the README's two pictures: the call (call.svg) and the architecture (architecture.svg).

    .venv/bin/python docs/figures/make_figures.py [OUT_DIR]      (default: this folder)

The SVGs are committed; tests/test_docs.py regenerates them and checks they are identical byte for byte,
so a picture cannot drift from this source. The output is deterministic: a fixed ``svg.hashsalt`` for
the element ids, text kept as text (``svg.fonttype = none``: no glyph outlines from the local fonts) and
no date in the metadata. matplotlib is a test dependency (``pip install -e '.[test]'``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

HERE = Path(__file__).resolve().parent

# colours: what Asterisk does (blue), what the router does (green), stores and tools (grey), a person (orange)
AST = "#dbe9f6"
ROUTER = "#dff0d8"
STORE = "#eeeeee"
PERSON = "#fde3c8"
FAULT = "#f8d7da"
EDGE = "#ffffff"


def _setup() -> None:
    plt.rcParams.update(
        {
            "svg.hashsalt": "agi-router",
            "svg.fonttype": "none",
            "font.family": "sans-serif",  # written as "'DejaVu Sans', sans-serif": a browser without it falls back
            "font.sans-serif": ["DejaVu Sans"],
            "font.size": 9,
        }
    )


def _canvas(w: float, h: float) -> tuple[Figure, Axes]:
    fig = plt.figure(figsize=(w, h))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, w * 10)
    ax.set_ylim(0, h * 10)
    ax.axis("off")
    return fig, ax


def _box(
    ax: Axes,
    x: float,
    y: float,
    w: float,
    h: float,
    text: str,
    colour: str,
    *,
    size: float = 9,
    bold: bool = False,
    dashed: bool = False,
    va: str = "center",
) -> None:
    ax.add_patch(
        FancyBboxPatch(
            (x, y),
            w,
            h,
            boxstyle="round,pad=0.3,rounding_size=1.2",
            facecolor=colour,
            edgecolor="#555555",
            linewidth=0.9,
            linestyle="--" if dashed else "-",
        )
    )
    ty = y + h / 2 if va == "center" else y + h - 1.2
    ax.text(
        x + w / 2,
        ty,
        text,
        ha="center",
        va=va,
        fontsize=size,
        fontweight="bold" if bold else "normal",
        linespacing=1.25,
    )


def _arrow(
    ax: Axes,
    a: tuple[float, float],
    b: tuple[float, float],
    label: str = "",
    *,
    colour: str = "#333333",
    both: bool = False,
    offset: tuple[float, float] = (0, 1.2),
    size: float = 8,
) -> None:
    ax.annotate(
        "",
        xy=b,
        xytext=a,
        arrowprops={
            "arrowstyle": "<|-|>" if both else "-|>",
            "color": colour,
            "linewidth": 1.1,
            "shrinkA": 2,
            "shrinkB": 2,
        },
    )
    if label:
        ax.text(
            (a[0] + b[0]) / 2 + offset[0],
            (a[1] + b[1]) / 2 + offset[1],
            label,
            ha="center",
            va="bottom",
            fontsize=size,
            color=colour,
        )


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)


def call(path: Path) -> None:
    fig, ax = _canvas(12, 7.2)
    ax.text(
        60,
        69,
        "One call to 3646: Asterisk asks, the router decides, the dialplan carries it out",
        ha="center",
        va="center",
        fontsize=12,
        fontweight="bold",
    )
    # top row: Asterisk's side
    _box(ax, 2, 52, 14, 10, "caller\n(SIP / carrier)", STORE)
    _box(
        ax,
        22,
        52,
        30,
        10,
        "Asterisk 22 dialplan [hotline]\nanswers; sets the default route:\nROUTER_ACTION=human, ROUTER_DONE=0",
        AST,
    )
    _arrow(ax, (16.5, 57), (21.5, 57))
    _box(ax, 60, 52, 22, 10, "AGI(agi://router:4573/3646)\nFastAGI session", AST)
    _arrow(ax, (52.5, 57), (59.5, 57))
    _box(
        ax,
        88,
        50,
        30,
        14,
        "router down, slow, crashed,\nover max_sessions, bad header:\n"
        "AGISTATUS=FAILURE or no ROUTER_DONE=1\n→ the dialplan's human route\n(never silence)",
        FAULT,
        size=8.5,
    )
    _arrow(ax, (82.5, 57), (87.5, 57), colour="#a94442")
    # middle row: the router's steps
    _box(ax, 2, 27, 20, 17, "1  read the agi_* header\n(2 s, 16 KiB, 200 lines)\npseudonymise the\ncaller ID", ROUTER)
    _arrow(ax, (71, 51.5), (12, 44.5), "FastAGI: the agi_* header, then commands", offset=(0, 0.6))
    _box(ax, 27, 36, 25, 8, "2a  directory lookup\n(account, last login, flags)", ROUTER)
    _box(
        ax,
        27,
        19,
        25,
        14,
        "2b  motive capture\nhint, else live audio: RTP leg,\nendpointer, Whisper, understanding;\n"
        "confirm / re-prompt / DTMF menu",
        ROUTER,
        size=8.5,
    )
    _arrow(ax, (22.5, 38), (26.5, 40))
    _arrow(ax, (22.5, 33), (26.5, 28))
    _box(
        ax,
        57,
        27,
        25,
        17,
        "3  decide(policy, facts)\npure: no I/O, no clock\n2024 rules + safeguards\nhistory + decision ≤ 100 ms",
        ROUTER,
    )
    _arrow(ax, (52.5, 40), (56.5, 38))
    _arrow(ax, (52.5, 26), (56.5, 31))
    _box(
        ax,
        88,
        27,
        30,
        17,
        "4  write ROUTER_ACTION, _QUEUE,\n_PRIO, _PROMPTS, _MOTIVE, _RULE,\n"
        "_REASON, … then ROUTER_DONE=1 last;\nclose the session",
        ROUTER,
        size=8.5,
    )
    _arrow(ax, (82.5, 35.5), (87.5, 35.5))
    _box(
        ax, 27, 8, 25, 7.5, "0 or « conseiller » at any prompt,\nnot understood within 40 s → a person", PERSON, size=8
    )
    _arrow(ax, (39.5, 18.5), (39.5, 16))
    # bottom row: the dialplan carries it out
    _box(ax, 60, 3, 58, 16, "", AST)
    ax.text(89, 16.5, "dialplan: route-<ROUTER_ACTION>", ha="center", va="center", fontsize=9.5, fontweight="bold")
    routes = [
        ("deflect", "message\n(+ SMS),\nhang up"),
        ("hangup", "repeat within\n10 min"),
        ("closed", "outside hours"),
        ("queue /\npriority", "skill queue,\nQUEUE_PRIO"),
        ("dissuade", "message +\ncallback offer"),
        ("human", "a person"),
    ]
    for i, (name, what) in enumerate(routes):
        x = 61.5 + i * 9.4
        _box(ax, x, 4.5, 8, 9, f"{name}\n\n{what}", PERSON if name in ("human", "queue /\npriority") else EDGE, size=7)
    _arrow(ax, (103, 26.5), (103, 19.5), "ROUTER_DONE=1", offset=(6, -2))
    _save(fig, path)


def architecture(path: Path) -> None:
    fig, ax = _canvas(12, 7.5)
    ax.text(
        60,
        72,
        "Architecture: Asterisk carries the calls, the router decides",
        ha="center",
        va="center",
        fontsize=12,
        fontweight="bold",
    )
    # left: who calls and who answers
    _box(ax, 1, 50, 16, 12, "callers\n(carrier SBC,\nsoftphones)", STORE)
    _box(ax, 1, 8, 16, 12, "agents' phones\n(TLS + SRTP,\ngenerated accounts)", PERSON)
    _box(
        ax,
        21,
        42,
        17,
        20,
        "Kamailio (optional)\nedge/kamailio.cfg:\nbans floods and\nscanners\nedge/dispatcher.cfg:\nseveral PBX nodes",
        EDGE,
        size=8,
        dashed=True,
    )
    _arrow(ax, (17.5, 56), (20.5, 54), "SIP", offset=(0, 0.5))
    # Asterisk
    _box(ax, 42, 8, 20, 54, "", AST)
    ax.text(52, 59, "Asterisk 22", ha="center", va="center", fontsize=10, fontweight="bold")
    for i, t in enumerate(
        [
            "PJSIP\n(pjsip.conf + generated\naccounts)",
            "dialplan [hotline]\nextensions.conf",
            "app_queue\nqueues, agents, whisper",
            "chan_rtp\nUnicastRTP capture leg",
            "manager (AMI)",
        ]
    ):
        _box(ax, 43.5, 46 - i * 9.2, 17, 7.4, t, EDGE, size=7.5)
    _arrow(ax, (38.5, 52), (42.5, 52), "SIP", offset=(0, 0.5))
    _arrow(ax, (17.5, 14), (43, 31), "SIP, SRTP", offset=(-4, 1))
    # the router
    _box(ax, 68, 4, 34, 60, "", ROUTER)
    ax.text(85, 61, "agi-router (asyncio, one process)", ha="center", va="center", fontsize=10, fontweight="bold")
    parts = [
        ("agi/  FastAGI server :4573", 53),
        ("callflow/  identify → capture → decide", 46.5),
        ("media/ + speech/  RTP, endpointer,\nWhisper workers, understanding", 38.5),
        ("policy/  decide(): pure, no I/O", 30.5),
        ("ami/ + queues/  AMI client, queue model", 24),
        ("callbacks/ + handoff/  placer, agent context", 17.5),
        ("metrics/  /metrics, /healthz :9646", 11),
    ]
    for text, y in parts:
        h = 6.5 if "\n" in text else 5
        _box(ax, 69.5, y, 31, h, text, EDGE, size=7.5)
    _arrow(ax, (62.5, 40.5), (69, 55.5), "FastAGI", both=True, offset=(-4, 0), size=7.5)
    _arrow(ax, (62.5, 22), (69, 41.5), "RTP", offset=(-2.5, 0), size=7.5)
    _arrow(ax, (62.5, 13), (69, 26.5), "AMI", both=True, offset=(-2.5, 0), size=7.5)
    # stores and tools
    _box(ax, 106, 50, 13, 12, "directory\nSQLite (embedded)\nor HTTP", STORE, size=8)
    _box(
        ax,
        106,
        34,
        13,
        13,
        "caller memory,\ncallbacks:\nin-process/SQLite,\nor Redis (several\nrouters)",
        STORE,
        size=7.5,
    )
    _box(ax, 106, 21, 13, 10, "audit trail\nvar/audit/*.jsonl\n(pseudonyms)", STORE, size=7.5)
    _box(ax, 106, 6, 13, 12, "Prometheus\n+ Grafana\n(monitoring/)", STORE, size=8)
    _arrow(ax, (102.5, 56), (105.5, 56))
    _arrow(ax, (102.5, 40), (105.5, 40), both=True)
    _arrow(ax, (102.5, 26), (105.5, 26))
    _arrow(ax, (105.5, 12), (102.5, 13), "scrape", offset=(1.5, 0.3), size=7)
    _save(fig, path)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else HERE
    out.mkdir(parents=True, exist_ok=True)
    _setup()
    call(out / "call.svg")
    architecture(out / "architecture.svg")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
