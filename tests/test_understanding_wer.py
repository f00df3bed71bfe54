"""The robustness benchmark's recognition-error simulator and a small fixed run of it (issue #23).

``benchmarks/bench_understanding_wer.py`` measures understanding on held-out sentences corrupted at 0-30 %
simulated WER; here a small fixed set of TUNE sentences (never held-out) goes through the same code with
fixed seeds, and the numbers it gives are checked: everything is deterministic, so a change in the
simulator, the classifier or the thresholds shows up as a changed number."""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from agi_router.motives.catalogue import Catalogue
from agi_router.motives.classifier import MotiveClassifier, load_out_of_scope
from agi_router.motives.evaluation import Item, load_items
from agi_router.motives.understanding import Understander
from agi_router.policy.config import load_policy

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench() -> Iterator[tuple[ModuleType, ModuleType]]:
    sys.path.insert(0, str(BENCH))
    try:
        import asr_noise
        import bench_understanding_wer

        yield asr_noise, bench_understanding_wer
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue.load()


def small_set(catalogue: Catalogue) -> list[Item]:
    items = load_items(BENCH / "data" / "understanding_tune.tsv", catalogue)
    by_kind = {k: [i for i in items if i.kind == k] for k in ("motive", "out_of_scope", "several")}
    return by_kind["motive"][:12:2] + by_kind["out_of_scope"][:4] + by_kind["several"][:2]


def test_simulator_is_deterministic_and_spends_its_error_budget(bench: tuple[ModuleType, ModuleType]) -> None:
    noise, _ = bench
    text = "Euh bonjour, j'ai envoyé une feuille de soins il y a 3 semaines et toujours rien sur mon compte !"
    a = noise.corrupt(text, 0.2, random.Random(1))
    assert a == noise.corrupt(text, 0.2, random.Random(1))
    assert a != noise.corrupt(text, 0.2, random.Random(2))
    assert not any(c in a for c in ",!?.") and a == a.lower()  # no punctuation, as a recogniser may write
    clean = noise.corrupt(text, 0.0, random.Random(1))
    assert noise.word_error_rate(clean, a) == pytest.approx(0.2, abs=0.06)
    assert noise.word_error_rate("a b c d", "a c d") == 0.25
    assert noise.word_error_rate("carte vitale", "cartevitale") == 1.0  # a merge costs 2 of 2 words


def test_small_fixed_set_gives_fixed_numbers(bench: tuple[ModuleType, ModuleType], catalogue: Catalogue) -> None:
    _, wer_bench = bench
    understander = Understander(catalogue, MotiveClassifier(catalogue, out_of_scope=load_out_of_scope()[0]))
    deflectable = frozenset(load_policy(catalogue=catalogue).deflect_motives)
    items = small_set(catalogue)
    got = {}
    for wer in (0.0, 0.2):
        r = wer_bench.run(items, understander, deflectable, wer, [1, 2], 50)
        got[wer] = (
            r["measured_wer"],
            r["wrong_deflections"],
            r["right queue first time"]["share"],
            r["re-asked"]["share"],
            r["out-of-scope not routed"]["share"],
            r["several requests caught"]["share"],
        )
    # measured once (deterministic seeds); 6 single motives, 4 out-of-scope, 2 several, 2 seeds each
    assert got == {
        0.0: (0.0048, 0, 1.0, 0.0, 1.0, 0.5),
        0.2: (0.1982, 0, 1.0, 0.0, 1.0, 0.25),
    }


def test_bad_arguments_exit_2(bench: tuple[ModuleType, ModuleType], monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    _, wer_bench = bench
    monkeypatch.setattr(sys, "argv", ["bench_understanding_wer.py", "--seeds", "0"])
    assert wer_bench.main() == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1
