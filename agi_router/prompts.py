"""The French prompts the dialplan and the router play, generated from the catalogue.

``agi-router prompts build DIR`` speaks every prompt with espeak-ng and converts it with sox to
what Asterisk plays without transcoding: 8 kHz, mono, 16-bit WAV. Layout (Asterisk looks up
``router/x`` as ``<sounds>/fr/router/x.wav`` for a channel in language ``fr``)::

    DIR/router/menu-skills.wav
    DIR/router/menu-skill-<skill>.wav
    DIR/router/online/<motive id>.wav      (deflectable motives: the online procedure)
    DIR/router/confirm/<motive id>.wav     ("Vous appelez pour X ? Dites oui ou non, ou tapez 1 ou 2.")
    DIR/router/whisper/...                 (what the agent hears before the bridge: handoff/whisper.py)
    DIR/router/<fixed prompt>.wav          (deflect-intro, goodbye, closed, ...)

Install with ``DIR = /var/lib/asterisk/sounds/fr`` (or ``astdatadir``/sounds/fr).
Recorded human prompts can replace any file later: the ids stay the same.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import threading
import wave
from collections.abc import Iterable
from pathlib import Path

from .exceptions import ConfigError
from .handoff.whisper import whisper_texts
from .motives.catalogue import Catalogue

__all__ = [
    "CONFIRM_PREFIX",
    "FIXED_PROMPTS",
    "PROMPT_SPEED",
    "PromptLengths",
    "build_prompts",
    "confirm_text",
    "prompt_texts",
    "speak_to_wav",
]

# Short, recorded-style prompts: the whole fallback dialogue of a caller who is not understood must put
# them in a person's queue within 40 s of their first sentence (see callflow/capture.py), so every
# prompt says one thing, and "0 or 'conseiller'" reaches a person at any time.
FIXED_PROMPTS: dict[str, str] = {
    "router/invalid": "Ce choix n'est pas valide.",
    "router/sampling-notice": (
        "Pour améliorer notre service, un extrait de votre appel peut être conservé, sans votre numéro. "
        "Pour vous y opposer, tapez une touche."
    ),
    "router/ask-motive": "Bienvenue à l'Assurance Maladie. En quelques mots, dites la raison de votre appel.",
    "router/not-understood": "Je n'ai pas compris. Redites-le en quelques mots, ou dites conseiller.",
    # the caller spoke of something this line does not handle (motives/understanding.py, out_of_scope)
    "router/out-of-scope": (
        "Ce service répond aux questions sur l'assurance maladie : remboursements, arrêts de travail, "
        "carte Vitale, droits... Dites en quelques mots la raison de votre appel, ou dites conseiller."
    ),
    "router/deflect-intro": (
        "Bonjour. Votre demande peut être faite directement en ligne, dans votre compte ameli, "
        "sur le site ou sur l'application."
    ),
    "router/sms-sent": "Nous venons de vous envoyer un SMS avec le lien vers cette démarche.",
    "router/goodbye": "Merci de votre appel, et à bientôt sur votre compte ameli. Au revoir.",
    "router/closed": (
        "Bienvenue à l'Assurance Maladie. Nos conseillers vous répondent du lundi au vendredi, "
        "de huit heures trente à dix-sept heures trente. Vous pouvez aussi faire vos démarches "
        "dans votre compte ameli. Au revoir."
    ),
    "router/saturated": "Nos conseillers sont actuellement très sollicités et le temps d'attente est important.",
    "router/callback-offer": (
        "Pour être rappelé dès qu'un conseiller sera disponible, tapez 1. Pour patienter, tapez 2."
    ),
    "router/callback-confirmed": "C'est noté. Un conseiller vous rappellera à ce numéro dès que possible. Au revoir.",
    "router/callback-hello": (
        "Bonjour, ici l'Assurance Maladie. Nous vous rappelons comme convenu. Un conseiller va vous répondre."
    ),
    "router/queue-unavailable": (
        "Nous ne pouvons pas donner suite à votre appel pour le moment. Merci de rappeler plus tard. Au revoir."
    ),
    # to the agent (feature code *7): the digit of the right skill, or the correction refused
    "router/correct-which": "Transfert. Tapez le chiffre du bon service.",
    "router/correct-refused": "Transfert annulé.",
    "router/repeat-hangup": (
        "Vous venez d'appeler pour la même demande. Elle peut être faite dans votre compte ameli. Au revoir."
    ),
}

# What espeak-ng says them at (words per minute): brisk, like a recorded prompt, still clear.
PROMPT_SPEED = 165


def prompt_texts(catalogue: Catalogue) -> dict[str, str]:
    """Every prompt id -> its French text."""
    out = dict(FIXED_PROMPTS)
    skills = sorted(catalogue.skills.values(), key=lambda s: s.dtmf)
    human = next((s for s in skills if s.key == "general"), None)
    options = [f"{s.dtmf} {s.menu}" for s in skills if s.key != "general" and s.dtmf != "0"]
    if human is not None:
        options.append(f"{human.dtmf} {human.menu}")
    out["router/menu-skills"] = "Tapez " + ", ".join(options) + "."
    for s in skills:
        entries = sorted(
            (m for m in catalogue if m.dtmf and len(m.dtmf) == 2 and m.dtmf[0] == s.dtmf and m.dtmf[1] not in "09"),
            key=lambda m: m.dtmf or "",
        )
        if not entries:
            continue
        said = [f"{m.dtmf[1]} {m.label[0].lower() + m.label[1:]}" for m in entries if m.dtmf]
        tail = "9 autre demande" + (f", {human.dtmf} {human.menu}" if human is not None else "")
        out[f"router/menu-skill-{s.key}"] = "Tapez " + ", ".join(said) + ", " + tail + "."
    for m in catalogue:
        if m.simple and m.online:
            out[f"router/online/{m.id}"] = m.online
        if m.kind == "normal":
            out[f"{CONFIRM_PREFIX}{m.id}"] = confirm_text(m.label)
    out.update(whisper_texts(catalogue))
    return out


#: "Vous appelez pour X ?" of each motive (streamed by the router, with barge-in): router/confirm/<motive id>
CONFIRM_PREFIX = "router/confirm/"


def confirm_text(label: str) -> str:
    """The confirmation question for a motive label: its words without the parenthesis, then how to answer."""
    phrase = re.sub(r"\s*\([^)]*\)", "", label).strip()
    phrase = phrase[0].lower() + phrase[1:] if phrase[:2] != phrase[:2].upper() else phrase
    return f"Vous appelez pour : {phrase} ? Dites oui ou non, ou tapez 1 ou 2."


def speak_to_wav(text: str, target: Path, *, voice: str = "fr+f2", speed: int = 150, trim: bool = False) -> None:
    """French speech with espeak-ng, converted by sox to 8 kHz mono 16-bit WAV in the telephone band.
    ``trim``: cut the synthesiser's leading and trailing silence (prompts: every 100 ms counts)."""
    espeak = shutil.which("espeak-ng")
    sox = shutil.which("sox")
    if espeak is None or sox is None:
        raise ConfigError("espeak-ng and sox are needed to speak prompts (Debian: apt-get install espeak-ng sox)")
    # unique temporary names, then one rename: the router's first start and `asterisk setup` may speak the
    # same prompts at the same time, and a reader never sees a half-written file
    tag = f".{os.getpid()}.{threading.get_ident()}"
    # (hidden, not *.wav: whoever lists the prompts meanwhile does not pick them up)
    raw = target.parent / f".{target.name}{tag}.espeak"
    out = target.parent / f".{target.name}{tag}.part"
    try:
        subprocess.run(
            [espeak, "-v", voice, "-s", str(speed), "-w", str(raw), text],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        subprocess.run(
            [
                sox,
                "-t",
                "wav",
                str(raw),
                "-r",
                "8000",
                "-c",
                "1",
                "-b",
                "16",
                "-e",
                "signed-integer",
                "-t",
                "wav",
                str(out),
                "highpass",
                "300",
                "lowpass",
                "3400",
                *(
                    ["silence", "1", "0.02", "0.5%", "reverse", "silence", "1", "0.02", "0.5%", "reverse"]
                    if trim
                    else []
                ),
            ],
            check=True,
            stderr=subprocess.PIPE,
        )
        out.replace(target)
    except subprocess.CalledProcessError as exc:
        tool = Path(str(exc.cmd[0])).name
        said = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        hint = "; list the French voices with `espeak-ng --voices=fr`" if tool == "espeak-ng" else ""
        raise ConfigError(
            f"{tool} failed (exit {exc.returncode}) speaking a prompt with voice {voice!r}: "
            f"{said[-1] if said else 'no message'}{hint}",
            file=str(target),
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot write the prompt: {exc.strerror or exc}", file=str(target)) from None
    finally:
        raw.unlink(missing_ok=True)
        out.unlink(missing_ok=True)


def build_prompts(
    catalogue: Catalogue,
    out_dir: Path,
    *,
    voice: str = "fr+f2",
    speed: int = PROMPT_SPEED,
    only_missing: bool = False,
    only: Iterable[str] | None = None,
) -> list[Path]:
    """Speak every prompt into ``out_dir``; returns the files written. A failure (a path that is a file, an
    unknown voice, a full disk) is a :class:`ConfigError` naming the file and the cause, and leaves no
    folder this call created empty behind."""
    written = []
    texts = prompt_texts(catalogue)
    if only is not None:
        texts = {pid: texts[pid] for pid in only}
    created: list[Path] = []
    try:
        for pid, text in texts.items():
            target = out_dir / f"{pid}.wav"
            if only_missing and target.exists():
                continue
            _make_dirs(target.parent, created)
            speak_to_wav(text, target, voice=voice, speed=speed, trim=True)
            written.append(target)
    except ConfigError:
        for d in reversed(created):  # deepest first; only the folders still empty
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    return written


def _make_dirs(folder: Path, created: list[Path]) -> None:
    missing = []
    p = folder
    while not p.exists():
        missing.append(p)
        p = p.parent
    if not p.is_dir():
        raise ConfigError("is a file, not a folder: give a folder for the prompts", file=str(p))
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise ConfigError(f"cannot create the prompts folder: {exc.strerror or exc}", file=str(d)) from None
        created.append(d)


class PromptLengths:
    """How long each prompt plays, read once from the WAV headers under a sounds directory.

    The call flow budgets its fallback dialogue with it (a menu is not started when its prompt and
    timeout would overrun the time to a person). A prompt that is missing or unreadable counts as
    ``default_s``: Asterisk plays nothing for a missing file, so that over-estimates, never under."""

    def __init__(self, sounds_dir: Path | None, default_s: float = 8.0) -> None:
        self.sounds_dir = sounds_dir
        self.default_s = default_s
        self._cache: dict[str, float] = {}

    def seconds(self, prompt_id: str) -> float:
        if prompt_id not in self._cache:
            self._cache[prompt_id] = self._read(prompt_id)
        return self._cache[prompt_id]

    def _read(self, prompt_id: str) -> float:
        if self.sounds_dir is None:
            return self.default_s
        try:
            with wave.open(str(self.sounds_dir / f"{prompt_id}.wav")) as w:
                return float(w.getnframes()) / float(w.getframerate())
        except (OSError, wave.Error, EOFError, ZeroDivisionError):
            return self.default_s
