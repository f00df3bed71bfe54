"""Every sound the dialplan, the policy and the menus name exists, and the generator makes real audio."""

from __future__ import annotations

import re
import shutil
import wave
from pathlib import Path

import pytest

from agi_router.callflow.capture import DTMFMenuConfig
from agi_router.motives.catalogue import Catalogue
from agi_router.policy.config import Policy, load_policy
from agi_router.prompts import build_prompts, prompt_texts

ROOT = Path(__file__).resolve().parents[1]


def referenced_by_policy(policy: Policy) -> set[str]:
    ids = {
        *policy.deflect_prompts_before,
        *policy.deflect_prompts_after,
        *policy.hangup_prompts,
        *policy.hours.closed_prompts,
        *policy.saturation_prompts,
        *(f"router/online/{m}" for m in policy.deflect_motives),
    }
    if policy.deflect_sms_prompt:
        ids.add(policy.deflect_sms_prompt)
    return ids


def referenced_by_dialplan() -> set[str]:
    text = (ROOT / "asterisk" / "extensions.conf").read_text()
    return set(re.findall(r"\b(router/[a-z0-9/_.-]+)", text))


@pytest.mark.parametrize("which", ["bundled", "mini"])
def test_every_referenced_prompt_has_a_text(which: str, mini_catalogue: Catalogue, mini_policy: Policy) -> None:
    if which == "bundled":
        catalogue = Catalogue.load()
        policy = load_policy(catalogue=catalogue)
    else:
        catalogue, policy = mini_catalogue, mini_policy
    texts = prompt_texts(catalogue)
    menu = DTMFMenuConfig()
    needed = referenced_by_policy(policy) | referenced_by_dialplan() | {menu.skills_prompt, menu.invalid_prompt}
    needed |= {
        menu.skill_prompt_prefix + s.key
        for s in catalogue.skills.values()
        if any(m.dtmf and len(m.dtmf) == 2 and m.dtmf[0] == s.dtmf for m in catalogue)
    }
    assert needed - set(texts) == set()
    assert all(t.strip() for t in texts.values())


def test_menu_texts_say_the_digits(mini_catalogue: Catalogue) -> None:
    t = prompt_texts(mini_catalogue)
    assert "tapez 1" in t["router/menu-skills"] and "conseiller, tapez 9" in t["router/menu-skills"]
    assert t["router/menu-skill-droits"].startswith("Attestation de droits, tapez 1. Carte Vitale perdue, tapez 2.")


@pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("sox")), reason="needs espeak-ng and sox")
def test_build_writes_8khz_mono_speech(tmp_path: Path, mini_catalogue: Catalogue) -> None:
    files = build_prompts(mini_catalogue, tmp_path)
    assert len(files) == len(prompt_texts(mini_catalogue))
    wav = tmp_path / "router" / "online" / "attestation_droits.wav"
    assert wav in files
    with wave.open(str(wav)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        frames = w.readframes(w.getnframes())
        assert w.getnframes() > 8000  # more than a second of speech
    import array

    samples = array.array("h", frames)
    assert max(abs(s) for s in samples) > 3000  # not silence
    assert not list(tmp_path.rglob("*.espeak.wav"))
    assert build_prompts(mini_catalogue, tmp_path, only_missing=True) == []
