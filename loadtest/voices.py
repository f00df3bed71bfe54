"""What the load test's callers say: sentences whose recognition does not depend on where the frame grid falls.

    python -m loadtest.voices measure [--shifts -40,-30,...,40]   rewrites loadtest/voices.json
    python -m loadtest.voices rejudge                               the stored transcripts, today's understander
    python -m loadtest.voices show                                  the measured set, one line per voice

A load test that speaks synthetic sentences measures the synthesiser as much as the router: Whisper's output
on espeak-ng audio moves with a few ms of leading silence (the same sentence cut 10 ms apart was understood at
3 offsets of 8 and garbled at 5), so a caller population built from such audio tells where the 20 ms packets
happened to fall, not how recognition holds under load. ``measure`` therefore puts every candidate through
the product's own speech path offline — G.711 µ-law round trip, 20 ms frames into the real
:class:`~agi_router.speech.endpointer.Endpointer` (the utterance it cuts, pre-roll and tail included), the
real Whisper base recogniser (one thread, the shipped window) and the real understander — once per leading
shift (default -40..+40 ms in 10 ms steps around 200 ms of silence), and keeps a voice only if the router acts
on the SAME thing at every shift, and that thing is what its written text means (a sure motive, its skill's
queue, or a person). Candidates: motive sentences spoken by espeak-ng (three voices, two speeds; SYNTHETIC)
and the real human recordings of Debian's French prompt package whose published transcript the router routes
at once (a real voice, though not a caller's words).

``loadtest/voices.json`` records, per candidate, what was heard at each shift; the harness
(:func:`stable_voices`) speaks only the stable ones, and reports which motive each should reach, so a run's
report can say what share of speaking callers the router understood. The measurement depends on the
espeak-ng build and the model: the file says which; :func:`stable_voices` warns when this host's espeak-ng
differs (run ``measure`` again there).
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["CANDIDATES", "Voice", "measure", "route_matches", "stable_voices"]

Pcm = npt.NDArray[np.int16]
ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "loadtest" / "voices.json"
REAL = Path("/usr/share/asterisk/sounds/fr_CA_f_June")
REAL_TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-fr/core-sounds-fr.txt.gz")
SHIFTS_MS = tuple(range(-40, 41, 10))
LEAD_MS = 200  # silence before the sentence; each shift moves it
TRAIL_MS = 800  # a phone goes on sending after its caller stops

#: what speaking callers say (one clear request each; written for the load test, not taken from the held-out
#: sets that the accuracy figures use)
CANDIDATES = (
    "bonjour je voudrais une attestation de droits",
    "j'ai besoin d'une attestation de droits pour mon employeur",
    "je voudrais commander une nouvelle carte vitale",
    "j'ai perdu ma carte vitale",
    "on m'a volé ma carte vitale",
    "je n'ai pas reçu mes indemnités journalières",
    "mes indemnités journalières ne sont pas payées depuis un mois",
    "je voudrais savoir où en est le remboursement de ma consultation",
    "je n'ai toujours pas été remboursé de mes soins",
    "je voudrais des renseignements sur mon congé maternité",
    "je voudrais déclarer un accident du travail",
    "je voudrais changer mon adresse",
    "je voudrais changer de médecin traitant",
    "je voudrais parler à un conseiller",
    "je veux parler à quelqu'un s'il vous plaît",
)
VOICES = ("fr+f2", "fr+m3", "fr+m7")
SPEEDS = (150, 170)
ROUTED = ("deflectable", "queue", "person")  # what a caller's sentence is routed on at once (no question back)


@dataclass(frozen=True)
class Voice:
    name: str
    pcm: Pcm  # 8 kHz, the sentence only (the harness adds the silences)
    level: str  # what the router should act on: deflectable | queue | person
    motive: str  # the motive id it should reach ("" for a person)
    skill: str
    queue: str  # the queue the router names for it ("" for a person)

    @property
    def expects(self) -> str:
        """What the router should act on, as :func:`route_matches` reads it."""
        if self.level == "person":
            return "person"
        return f"deflectable:{self.motive}" if self.level == "deflectable" else f"queue:{self.skill}:{self.queue}"


def route_matches(expects: str, variables: dict[str, str], skill_of: dict[str, str]) -> bool:
    """Did the router act on what the caller said? ``variables``: the call's ROUTER_* variables;
    ``skill_of``: motive id -> skill. A sure motive must be that motive (whatever the route: deflected,
    queued, hung up as a repeat); a skill, its queue or a motive of that skill; a person, the person rule."""
    level, _, what = expects.partition(":")
    motive = variables.get("ROUTER_MOTIVE", "")
    if level == "person":
        return variables.get("ROUTER_RULE", "") == "motive.human"
    if level == "deflectable":
        return motive == what
    skill, _, queue = what.partition(":")
    return skill_of.get(motive) == skill or (bool(queue) and variables.get("ROUTER_QUEUE", "") == queue)


def espeak_version() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        return ""
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout
    return out.split("Data at")[0].strip()


def _espeak(text: str, voice: str, speed: int, work: Path) -> Pcm:
    from agi_router.prompts import speak_to_wav
    from agi_router.speech.evaluation import read_wav

    wav = work / "say.wav"
    speak_to_wav(text, wav, voice=voice, speed=speed, trim=True)
    return read_wav(wav)


def _real_candidates() -> list[tuple[str, str]]:
    """(file name, published transcript) of Debian's French prompts of three words or more."""
    if not (REAL_TRANSCRIPTS.is_file() and REAL.is_dir()):
        return []
    pairs = []
    for line in gzip.decompress(REAL_TRANSCRIPTS.read_bytes()).decode().splitlines():
        name, sep, text = line.partition(":")
        if sep and not line.startswith(";") and (REAL / f"{name.strip()}.wav").is_file() and len(text.split()) >= 3:
            pairs.append((name.strip(), text.strip()))
    return pairs


def _candidates(work: Path, understander: Any) -> list[tuple[dict[str, Any], Pcm]]:
    """Every candidate with what its written text means, keeping those routed at once."""
    from agi_router.speech.evaluation import read_wav

    out: list[tuple[dict[str, Any], Pcm]] = []
    for i, text in enumerate(CANDIDATES):
        for voice in VOICES:
            for speed in SPEEDS:
                meta = {"name": f"s{i:02d}-{voice.replace('+', '')}-{speed}", "source": "espeak-ng", "text": text,
                        "voice": voice, "speed": speed}  # fmt: skip
                out.append((meta, _espeak(text, voice, speed, work)))
    for name, text in _real_candidates():
        meta = {"name": f"real-{name}", "source": "real", "text": text, "file": name}
        out.append((meta, read_wav(REAL / f"{name}.wav")))
    kept = []
    for meta, pcm in out:
        u = understander.understand(meta["text"])
        if u.level.value in ROUTED:
            meta["expected"] = _decision(u)
            meta["queue"] = u.queue or ""
            kept.append((meta, pcm))
    return kept


def _decision(u: Any) -> str:
    """What the router acts on, as one comparable string."""
    if u.level.value == "person":
        return "person"
    if u.level.value == "deflectable":
        return f"deflectable:{u.motive_id}"
    return f"{u.level.value}:{u.skill or u.motive_id}"


def heard(pcm: Pcm, shift_ms: int, rec: Any, understander: Any) -> tuple[str, str]:
    """(transcript, decision) of ``pcm`` said after LEAD_MS + shift_ms of silence, as a live call hears it:
    µ-law on the wire, 20 ms frames, the endpointer's utterance, the recogniser, the understander."""
    from agi_router.media.g711 import ulaw_decode, ulaw_encode
    from agi_router.speech.endpointer import Endpointer, EndpointerConfig, SpeechEnd

    lead = np.zeros(8 * (LEAD_MS + shift_ms), np.int16)
    audio = ulaw_decode(ulaw_encode(np.concatenate([lead, pcm, np.zeros(8 * TRAIL_MS, np.int16)])))
    ep = Endpointer(EndpointerConfig())
    utterance = None
    for i in range(len(audio) // 160):
        for ev in ep.feed(audio[i * 160 : (i + 1) * 160], i * 20.0):
            if isinstance(ev, SpeechEnd):
                utterance = ev.audio
        if utterance is not None:
            break
    if utterance is None:
        return "", "no_speech"
    text = rec.transcribe_sync(utterance).text
    u = understander.understand(text)
    return text, _decision(u) if u.level.value in ROUTED else u.level.value


def measure(shifts: Sequence[int] = SHIFTS_MS, out: Path = MANIFEST) -> dict[str, Any]:
    from agi_router.app import build_understander
    from agi_router.config import Settings
    from agi_router.motives.catalogue import Catalogue
    from agi_router.speech.model import default_model_dir, ensure_whisper_base
    from agi_router.speech.recognizer import WhisperRecognizer

    settings = Settings()
    understander = build_understander(settings, Catalogue.load())
    rec = WhisperRecognizer(ensure_whisper_base(default_model_dir(ROOT / "var")), workers=1, beam_size=1,
                            window_s=settings.speech.window_s)  # fmt: skip
    voices = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for meta, pcm in _candidates(Path(tmp), understander):
                by_shift = {}
                for s in shifts:
                    text, decision = heard(pcm, s, rec, understander)
                    by_shift[str(s)] = {"heard": text, "decision": decision}
                decisions = {v["decision"] for v in by_shift.values()}
                meta["by_shift"] = by_shift
                meta["stable"] = decisions == {meta["expected"]}
                meta["right_shifts"] = sum(v["decision"] == meta["expected"] for v in by_shift.values())
                voices.append(meta)
                print(f"{meta['name']:<36} {meta['right_shifts']}/{len(shifts)} {meta['expected']}", file=sys.stderr)
    finally:
        rec.close()
    manifest = {
        "about": "loadtest/voices.py: what each candidate was heard as at each leading shift (ms)",
        "espeak_ng": espeak_version(),
        "model": "Whisper base int8, beam 1, one thread (the product's WhisperRecognizer)",
        "shifts_ms": list(shifts),
        "lead_ms": LEAD_MS,
        "voices": voices,
    }
    out.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return manifest


def rejudge(out: Path = MANIFEST) -> dict[str, Any]:
    """Apply today's understander to the transcripts ``measure`` stored (what each voice was heard as at each
    shift): after a change to the understander only, no need to decode everything again (the endpointer
    and the recogniser are deterministic for the same audio; a change to them needs ``measure``)."""
    from agi_router.app import build_understander
    from agi_router.config import Settings
    from agi_router.motives.catalogue import Catalogue

    understander = build_understander(Settings(), Catalogue.load())
    data = json.loads(out.read_text())
    for meta in data["voices"]:
        u = understander.understand(meta["text"])
        meta["expected"] = _decision(u) if u.level.value in ROUTED else u.level.value
        meta["queue"] = u.queue or ""
        for shot in meta["by_shift"].values():
            if shot["decision"] != "no_speech":
                h = understander.understand(shot["heard"])
                shot["decision"] = _decision(h) if h.level.value in ROUTED else h.level.value
        decisions = {v["decision"] for v in meta["by_shift"].values()}
        meta["stable"] = meta["expected"].split(":")[0] in ROUTED and decisions == {meta["expected"]}
        meta["right_shifts"] = sum(v["decision"] == meta["expected"] for v in meta["by_shift"].values())
    out.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    return data


def stable_voices(manifest: Path = MANIFEST, warn: bool = True) -> list[Voice]:
    """The voices measured stable, spoken again (espeak-ng is deterministic for one build) or read from
    Debian's package; [] without espeak-ng / the package. Warns once if espeak-ng is not the measured build."""
    from agi_router.motives.catalogue import Catalogue
    from agi_router.speech.evaluation import read_wav

    data = json.loads(manifest.read_text())
    if warn and shutil.which("espeak-ng") and espeak_version() != data["espeak_ng"]:
        print(f"loadtest: voices were measured with {data['espeak_ng']!r}, this host has {espeak_version()!r}: "
              "run `python -m loadtest.voices measure` to check them here", file=sys.stderr)  # fmt: skip
    cat = Catalogue.load()
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for v in data["voices"]:
            if not v["stable"]:
                continue
            if v["source"] == "real":
                path = REAL / f"{v['file']}.wav"
                if not path.is_file():
                    continue
                pcm = read_wav(path)
            elif shutil.which("espeak-ng"):
                pcm = _espeak(v["text"], v["voice"], v["speed"], Path(tmp))
            else:
                continue
            level, _, what = v["expected"].partition(":")
            motive = what if level == "deflectable" else ""
            skill = cat.motives[motive].skill if motive else (what if level == "queue" else "")
            out.append(Voice(v["name"], pcm, level, motive, skill, v.get("queue", "")))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadtest.voices", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure", help="hear every candidate at every shift; rewrite loadtest/voices.json")
    m.add_argument("--shifts", default=",".join(map(str, SHIFTS_MS)), help="ms, comma-separated")
    sub.add_parser("rejudge", help="today's understander on the stored transcripts (after an understander change)")
    sub.add_parser("show", help="the measured set")
    a = ap.parse_args(argv)
    if a.cmd == "measure":
        try:
            shifts = [int(x) for x in a.shifts.split(",")]
        except ValueError:
            print(f"loadtest: --shifts {a.shifts!r}: give whole ms, comma-separated (e.g. -40,0,40)", file=sys.stderr)
            return 2
        if any(LEAD_MS + s < 0 for s in shifts):
            print(f"loadtest: --shifts must be >= -{LEAD_MS} ms", file=sys.stderr)
            return 2
        data = measure(shifts)
    elif a.cmd == "rejudge":
        data = rejudge()
    else:
        data = json.loads(MANIFEST.read_text())
        for v in data["voices"]:
            print(f"{v['name']:<36} {'stable' if v['stable'] else 'unstable':<9} {v['right_shifts']}/"
                  f"{len(v['by_shift'])} {v['expected']}")  # fmt: skip
    stable = [v for v in data["voices"] if v["stable"]]
    print(f"{len(stable)} of {len(data['voices'])} candidate voices stable across shifts {data['shifts_ms']} ms "
          f"(espeak-ng: {len(stable) - sum(v['source'] == 'real' for v in stable)}, "
          f"real: {sum(v['source'] == 'real' for v in stable)})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
