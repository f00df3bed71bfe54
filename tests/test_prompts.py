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
    assert t["router/menu-skills"] == "Tapez 1 Remboursements, 3 Droits, 0 Conseiller."
    assert t["router/menu-skill-droits"] == (
        "Tapez 1 attestation de droits, 2 carte Vitale perdue, 9 autre demande, 0 Conseiller."
    )
    bundled = prompt_texts(Catalogue.load())
    assert bundled["router/menu-skills"] == (
        "Tapez 1 remboursement, 2 arrêt de travail, 3 carte Vitale et droits, 4 accident du travail, "
        "5 maternité, 0 conseiller."
    )
    assert all(v.endswith("9 autre demande, 0 conseiller.") for k, v in bundled.items() if "menu-skill-" in k)


@pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("sox")), reason="needs espeak-ng and sox")
def test_fallback_prompts_are_short(tmp_path: Path) -> None:
    """The not-understood caller's dialogue is budgeted to reach a person within 40 s: its prompts say
    one thing each (bundled catalogue, as built by `prompts build`: leading/trailing silence trimmed)."""
    from agi_router.prompts import PromptLengths

    ids = ["router/ask-motive", "router/not-understood", "router/menu-skills", "router/invalid"]
    build_prompts(Catalogue.load(), tmp_path, only=ids)
    lengths = PromptLengths(tmp_path)
    assert 2.0 < lengths.seconds("router/ask-motive") < 5.5
    assert 2.0 < lengths.seconds("router/not-understood") < 4.5
    assert 4.0 < lengths.seconds("router/menu-skills") < 8.0
    assert lengths.seconds("router/invalid") < 2.0
    assert PromptLengths(tmp_path, default_s=7.5).seconds("router/missing") == 7.5


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


def test_prompts_build_into_a_file_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agi_router.cli import main

    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["prompts", "build", str(afile)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"agi-router: {afile}: is a file, not a folder: give a folder for the prompts"


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (scripts/test-debs.txt)")
def test_an_unknown_voice_says_espeaks_words_and_leaves_no_empty_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agi_router.cli import main

    out = tmp_path / "new" / "prompts"
    assert main(["prompts", "build", str(out), "--voice", "nosuchvoice"]) == 2
    err = capsys.readouterr().err.strip()
    assert "espeak-ng failed (exit 1) speaking a prompt with voice 'nosuchvoice'" in err
    assert "voice does not exist" in err and "espeak-ng --voices=fr" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "new").exists()  # every folder this call made, removed again
