"""The French prompts the dialplan and the router play, generated from the catalogue.

``agi-router prompts build DIR`` speaks every prompt with espeak-ng and converts it with sox to
what Asterisk plays without transcoding: 8 kHz, mono, 16-bit WAV. Layout (Asterisk looks up
``router/x`` as ``<sounds>/fr/router/x.wav`` for a channel in language ``fr``)::

    DIR/router/menu-skills.wav
    DIR/router/menu-skill-<skill>.wav
    DIR/router/online/<motive id>.wav      (deflectable motives: the online procedure)
    DIR/router/<fixed prompt>.wav          (deflect-intro, goodbye, closed, ...)

Install with ``DIR = /var/lib/asterisk/sounds/fr`` (or ``astdatadir``/sounds/fr).
Recorded human prompts can replace any file later: the ids stay the same.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .exceptions import ConfigError
from .motives.catalogue import Catalogue

__all__ = ["FIXED_PROMPTS", "build_prompts", "prompt_texts", "speak_to_wav"]

FIXED_PROMPTS: dict[str, str] = {
    "router/invalid": "Ce choix n'est pas valide.",
    "router/ask-motive": ("Bienvenue à l'Assurance Maladie. En quelques mots, dites-nous la raison de votre appel."),
    "router/not-understood": (
        "Excusez-moi, je n'ai pas compris. Dites simplement la raison de votre appel, par exemple : "
        "ma carte Vitale, un remboursement, un arrêt de travail."
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
    "router/saturated": ("Nos conseillers sont actuellement très sollicités et le temps d'attente est important."),
    "router/callback-offer": (
        "Pour être rappelé dès qu'un conseiller sera disponible, tapez 1. Pour patienter, tapez 2."
    ),
    "router/callback-confirmed": ("C'est noté. Un conseiller vous rappellera à ce numéro dès que possible. Au revoir."),
    "router/callback-hello": (
        "Bonjour, ici l'Assurance Maladie. Nous vous rappelons comme convenu. Un conseiller va vous répondre."
    ),
    "router/queue-unavailable": (
        "Nous ne pouvons pas donner suite à votre appel pour le moment. Merci de rappeler plus tard. Au revoir."
    ),
    "router/repeat-hangup": (
        "Vous venez d'appeler pour la même demande. Elle peut être faite dans votre compte ameli. Au revoir."
    ),
}


def prompt_texts(catalogue: Catalogue) -> dict[str, str]:
    """Every prompt id -> its French text."""
    out = dict(FIXED_PROMPTS)
    skills = sorted(catalogue.skills.values(), key=lambda s: s.dtmf)
    parts = [f"Pour {s.label[0].lower() + s.label[1:]}, tapez {s.dtmf}." for s in skills if s.key != "general"]
    human = next((s for s in skills if s.key == "general"), None)
    if human is not None:
        parts.append(f"Pour parler à un conseiller, tapez {human.dtmf}.")
    out["router/menu-skills"] = "Bienvenue à l'Assurance Maladie. " + " ".join(parts)
    for s in skills:
        entries = sorted(
            (m for m in catalogue if m.dtmf and len(m.dtmf) == 2 and m.dtmf[0] == s.dtmf and m.dtmf[1] != "9"),
            key=lambda m: m.dtmf or "",
        )
        if not entries:
            continue
        said = [f"{m.label}, tapez {m.dtmf[1]}." for m in entries if m.dtmf]
        out[f"router/menu-skill-{s.key}"] = " ".join(said) + " Pour une autre demande, tapez 9."
    for m in catalogue:
        if m.simple and m.online:
            out[f"router/online/{m.id}"] = m.online
    return out


def speak_to_wav(text: str, target: Path, *, voice: str = "fr+f2", speed: int = 150) -> None:
    """French speech with espeak-ng, converted by sox to 8 kHz mono 16-bit WAV in the telephone band."""
    espeak = shutil.which("espeak-ng")
    sox = shutil.which("sox")
    if espeak is None or sox is None:
        raise ConfigError("espeak-ng and sox are needed to speak prompts (Debian: apt-get install espeak-ng sox)")
    raw = target.with_suffix(".espeak.wav")
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
                str(raw),
                "-r",
                "8000",
                "-c",
                "1",
                "-b",
                "16",
                "-e",
                "signed-integer",
                str(target),
                "highpass",
                "300",
                "lowpass",
                "3400",
            ],
            check=True,
            stderr=subprocess.PIPE,
        )
    finally:
        raw.unlink(missing_ok=True)


def build_prompts(
    catalogue: Catalogue, out_dir: Path, *, voice: str = "fr+f2", speed: int = 150, only_missing: bool = False
) -> list[Path]:
    """Speak every prompt into ``out_dir``; returns the files written."""
    written = []
    for pid, text in prompt_texts(catalogue).items():
        target = out_dir / f"{pid}.wav"
        if only_missing and target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        speak_to_wav(text, target, voice=voice, speed=speed)
        written.append(target)
    return written
