"""Measure recognition on labelled audio: ``agi-router speech label DIR`` and ``speech eval DIR``.

A folder to evaluate holds audio and one ``labels.tsv``::

    id<TAB>kind<TAB>expected<TAB>reference
    20261202T0931-1a2b3c4d	motive	carte_vitale_perte	j'ai perdu ma carte vitale
    vm-goodbye	-	-	au revoir

* ``id``: ``<id>.sample`` (an encrypted capture sample, see ``sampling.py``) or ``<id>.wav`` (8 kHz,
  mono, 16-bit) in the same folder;
* ``kind``: ``motive`` | ``person`` | ``several`` | ``out_of_scope`` (see ``motives/evaluation.py``), or
  ``-`` for audio that only measures the word error rate;
* ``expected``: motive id(s), ``a+b`` for several, ``-`` otherwise;
* ``reference``: what was really said, optional: the word error rate is computed where it is given.

``speech eval`` runs the product's own recogniser (the settings' Whisper model, window, beam) and
understander on every file, exactly as a live call does, and reports: first-time accuracy on the exact
motive and on the queue, misroutes, wrong deflections, re-prompts, confirmation rate, several requests and
persons, WER, recognition latency, and the thresholds that would have cost least on this data.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from ..exceptions import ConfigError
from ..motives.catalogue import Catalogue
from ..motives.evaluation import KINDS, Item, evaluate, search_thresholds
from ..motives.understanding import Understander
from .recognizer import Recognizer, normalize_text
from .sampling import SUFFIX, SampleStore

__all__ = ["LABELS", "Labelled", "append_labels", "evaluate_folder", "label_samples", "load_labelled", "word_errors"]

LABELS = "labels.tsv"
Pcm = npt.NDArray[np.int16]


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word edits, reference words) after lowercasing and removing accents and punctuation."""
    ref, hyp = normalize_text(reference).split(), normalize_text(hypothesis).split()
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1], len(ref)


@dataclass(frozen=True, slots=True)
class Labelled:
    id: str
    item: Item | None  # None: WER only
    reference: str
    path: Path


def read_wav(path: Path) -> Pcm:
    try:
        with wave.open(str(path)) as w:
            if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (8000, 1, 2):
                raise ConfigError(
                    f"{w.getframerate()} Hz, {w.getnchannels()} channel(s), {8 * w.getsampwidth()} bit: "
                    "convert it to 8 kHz mono 16-bit (sox IN -r 8000 -c 1 -b 16 OUT.wav)",
                    file=str(path),
                )
            return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
    except (OSError, wave.Error, EOFError) as exc:
        raise ConfigError(f"not a readable WAV file: {exc}", file=str(path)) from None


def load_labelled(folder: Path, catalogue: Catalogue) -> list[Labelled]:
    path = folder / LABELS
    if not path.is_file():
        raise ConfigError(
            f"no {LABELS} here: label the samples first (agi-router speech label {folder})", file=str(folder)
        )
    out: list[Labelled] = []
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip() or raw.startswith("#") or (n == 1 and raw.startswith("id\t")):
            continue
        cols = raw.split("\t")
        if len(cols) not in (3, 4):
            raise ConfigError(f"line {n}: expected id<TAB>kind<TAB>expected[<TAB>reference]", file=str(path))
        sid, kind, expected = (c.strip() for c in cols[:3])
        reference = cols[3].strip() if len(cols) == 4 else ""
        audio = next((p for p in (folder / f"{sid}{SUFFIX}", folder / f"{sid}.wav") if p.is_file()), None)
        if audio is None:
            raise ConfigError(f"line {n}: no {sid}{SUFFIX} nor {sid}.wav in {folder}", file=str(path))
        item: Item | None = None
        if kind != "-":
            if kind not in KINDS:
                raise ConfigError(f"line {n}: unknown kind {kind!r}; one of {', '.join(KINDS)} or -", file=str(path))
            ids = tuple(x for x in expected.split("+") if x and x != "-")
            bad = [m for m in ids if m not in catalogue]
            if bad:
                raise ConfigError(
                    f"line {n}: unknown motive {bad[0]!r} (catalogue {catalogue.version})", file=str(path)
                )
            item = Item(kind, ids, reference, n)
        out.append(Labelled(sid, item, reference, audio))
    return out


def _audio(lab: Labelled, store: SampleStore | None) -> Pcm:
    if lab.path.suffix == SUFFIX:
        if store is None:
            raise ConfigError("an encrypted sample needs the router's key (run with its --config)", file=str(lab.path))
        return store.read(lab.path).pcm
    return read_wav(lab.path)


def _pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def evaluate_folder(
    folder: Path,
    catalogue: Catalogue,
    recognizer: Recognizer,
    understander: Understander,
    deflectable: frozenset[str],
    *,
    store: SampleStore | None = None,
    progress: TextIO | None = None,
) -> dict[str, Any]:
    """Recognise every labelled file, then score (see the module docstring). Deterministic for a given
    recogniser and data (the latencies aside)."""
    labelled = load_labelled(folder, catalogue)
    transcripts: list[str] = []
    latencies: list[float] = []

    async def run() -> None:
        for i, lab in enumerate(labelled, 1):
            t0 = time.perf_counter()
            t = await recognizer.transcribe(_audio(lab, store))
            latencies.append(time.perf_counter() - t0)
            transcripts.append(t.text)
            if progress is not None:
                print(f"\r{i}/{len(labelled)} recognised", end="", file=progress, flush=True)
        if progress is not None:
            print(file=progress)

    asyncio.run(run())
    edits = words = 0
    for lab, text in zip(labelled, transcripts, strict=True):
        if lab.reference:
            e, n = word_errors(lab.reference, text)
            edits, words = edits + e, words + n
    scored = [(lab.item, text) for lab, text in zip(labelled, transcripts, strict=True) if lab.item is not None]
    items = [i for i, _ in scored]
    texts = [t for _, t in scored]
    out: dict[str, Any] = {
        "files": len(labelled),
        "labelled": len(items),
        "wer": round(edits / words, 4) if words else None,
        "wer_words": words,
        "latency_s": {
            "p50": _round(_pct(latencies, 0.5)),
            "p95": _round(_pct(latencies, 0.95)),
            "mean": _round(statistics.fmean(latencies)) if latencies else None,
        },
    }
    if items:
        r = evaluate(items, understander, deflectable, texts=texts)
        motive_items = sum(r.by_kind.get("motive", {}).values())
        m: Counter[str] = r.by_kind.get("motive", Counter())
        out.update(
            {
                "accuracy": _share(m["motive_right"], motive_items),
                "queue_accuracy": _share(m["motive_right"] + m["queue_right"], motive_items),
                "misrouted": r.outcomes["misrouted"],
                "deflected_wrongly": r.outcomes["deflected_wrongly"],
                "reprompted": r.outcomes["reprompted"],
                "confirmation_rate": _share(r.second_turns, r.n),
                "several_caught": r.outcomes["several_caught"],
                "person_honoured": r.outcomes["person_honoured"],
                "cost": round(r.cost, 4),
                "report": r.as_json(),
                "per_file": r.rows(),
            }
        )
        best = search_thresholds(items, catalogue, understander.classifier, deflectable, texts=texts)[0]
        out["suggested_thresholds"] = {**best.as_json()["thresholds"], "cost": round(best.cost, 4)}
    return out


def _share(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def label_samples(
    folder: Path,
    catalogue: Catalogue,
    store: SampleStore,
    *,
    ask: Callable[[str], str] = input,
    out: TextIO = sys.stdout,
    player: str | None = None,
) -> int:
    """Walk the samples not labelled yet; for each, show what was heard and understood (and play it with
    ``player``, e.g. ``"play -q"``), ask for the label; each answer is appended at once to labels.tsv
    (a session can stop at any time). Returns how many were labelled."""
    path = folder / LABELS
    done = set()
    if path.is_file():
        done = {line.split("\t", 1)[0] for line in path.read_text(encoding="utf-8").splitlines()[1:]}
    todo = [p for p in store if p.name.removesuffix(SUFFIX) not in done]
    print(f"{len(todo)} sample(s) to label in {folder} ({len(done)} already)", file=out)
    help_text = (
        "  motive id (Enter: what was understood) | p: a person | o: out of scope | a+b: several | "
        "-: WER only | s: skip | q: quit; then optionally '| what was really said'"
    )
    print(help_text, file=out)
    labelled = 0
    for i, p in enumerate(todo, 1):
        s = store.read(p)
        u = s.understood
        print(
            f"\n[{i}/{len(todo)}] {s.id} {s.at} {s.mode} {s.seconds:.1f} s\n  heard: {s.transcript!r}\n"
            f"  understood: {u.get('level', u.get('reply', '?'))} {u.get('motive') or ''}",
            file=out,
        )
        if player:
            _play(player, s.pcm)
        answer = ask("label> ").strip()
        label, _, reference = answer.partition("|")
        label = label.strip()
        if label == "q":
            break
        if label == "s":
            continue
        if label == "":
            label = str(u.get("motive") or "")
            if not label:
                print("  nothing was understood: type a label", file=out)
                continue
        kind, expected = _kind_of(label, catalogue)
        if kind is None:
            print(f"  unknown motive {label!r}: not labelled (see agi-router prompts list / the catalogue)", file=out)
            continue
        new = not path.is_file()
        with path.open("a", encoding="utf-8") as f:
            if new:
                f.write("id\tkind\texpected\treference\n")
            f.write(f"{s.id}\t{kind}\t{expected}\t{reference.strip()}\n")
        labelled += 1
    return labelled


def append_labels(folder: Path, rows: Sequence[tuple[str, str, str]]) -> int:
    """Append ``(sample id, kind, expected)`` rows to ``folder/labels.tsv`` (the agents' corrections label
    samples this way: the sample's id is all that is written, no call data); ids already labelled are kept
    as they are. Returns how many rows were added."""
    path = folder / LABELS
    done = set()
    if path.is_file():
        done = {line.split("\t", 1)[0] for line in path.read_text(encoding="utf-8").splitlines()[1:]}
    rows = [r for r in rows if r[0] not in done]
    if not rows:
        return 0
    new = not path.is_file()
    with path.open("a", encoding="utf-8") as f:
        if new:
            f.write("id\tkind\texpected\treference\n")
        for sid, kind, expected in rows:
            f.write(f"{sid}\t{kind}\t{expected}\t\n")
    return len(rows)


def _kind_of(label: str, catalogue: Catalogue) -> tuple[str | None, str]:
    if label == "p":
        return "person", "-"
    if label == "o":
        return "out_of_scope", "-"
    if label == "-":
        return "-", "-"
    ids = label.split("+")
    if not all(i in catalogue for i in ids):
        return None, ""
    return ("several" if len(ids) > 1 else "motive"), label


def _play(player: str, pcm: Pcm) -> None:
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        with wave.open(f.name, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(pcm.astype("<i2").tobytes())
        subprocess.run([*player.split(), f.name], check=False)  # the clear audio lives only this long


def dumps(report: dict[str, Any]) -> str:
    return json.dumps(report, ensure_ascii=False, indent=1)
