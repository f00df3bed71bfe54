"""Policy files: precise errors (file, key, what), and a bad file never replaces a good one."""

from __future__ import annotations

from pathlib import Path

import pytest

from agi_router.exceptions import ConfigError, PolicyError
from agi_router.motives.catalogue import Catalogue
from agi_router.policy.config import load_policy, parse_policy
from tests.conftest import FIXTURES

BASE = (FIXTURES / "policy-mini.toml").read_text()


def mutate(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        (mutate("window_minutes = 10", "window_minutes = 0"), "repeat.window_minutes", "between 1 and 1440"),
        (mutate("window_minutes = 10", 'window_minutes = "10"'), "repeat.window_minutes", "must be an integer"),
        (
            mutate("window_minutes = 10", "window_minutes = 10\nwindows_minutes = 5"),
            "repeat",
            "unknown key(s): windows_minutes",
        ),
        (mutate("hangup_enabled = true", "hangup_enabled = 1"), "repeat.hangup_enabled", "true or false"),
        (mutate('"attestation_droits", ', '"attestation_droit", '), "deflection.motives[0]", "unknown motive"),
        (mutate('"attestation_droits", ', '"carte_vitale_perdue", '), "deflection.motives[0]", "not a simple"),
        (mutate("min_confidence = 0.0", "min_confidence = 1.5"), "deflection.min_confidence", "between 0 and 1"),
        (mutate('timezone = "Europe/Paris"', 'timezone = "Europe/Pariss"'), "policy.timezone", "unknown time zone"),
        (mutate('version = "1"\n', ""), "policy.version", "missing"),
        (mutate("active_months = 6", "active_months = 0"), "account.active_months", "between 1 and 120"),
        (
            mutate("[hours]\nenabled = false", '[hours]\nenabled = true\nmon = "8:30-17:30"'),
            "hours.mon",
            "not HH:MM-HH:MM",
        ),
        (
            mutate("[hours]\nenabled = false", '[hours]\nenabled = true\nmon = "17:30-08:30"'),
            "hours.mon",
            "ends before it starts",
        ),
        (mutate("[hours]\nenabled = false", "[hours]\nenabled = true"), "hours.enabled", "never open"),
        (
            mutate("[hours]\nenabled = false", '[hours]\nenabled = false\nholidays = ["25/12/2026"]'),
            "hours.holidays[0]",
            "ISO date",
        ),
        (mutate("memory_hours = 24", "memory_hours = 24\n[extra]\nx = 1"), None, "unknown section(s) [extra]"),
        # a misspelt section is named as such, not as a missing key of the section it was meant to be
        (mutate("[hours]", "[hour]"), None, "unknown section(s) [hour]; the sections are [policy]"),
        # removing [hours] or [saturation] would silently open the line 24/7 or drop the saturation rule
        (BASE.split("[hours]")[0] + "[saturation]" + BASE.split("[saturation]")[1], None,
         "section [hours] is missing: write it out, even to turn it off (enabled = false: the line is open 24/7)"),
        (BASE.split("[saturation]")[0], None, "section [saturation] is missing"),
        (mutate("[queues]", '[queues]\nmap = { nope = "q" }'), "queues.map.nope", "unknown skill"),
        ("this is = = not toml", None, "not valid TOML"),
    ],
)
def test_precise_errors(mini_catalogue: Catalogue, text: str, key: str | None, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, file="p.toml", catalogue=mini_catalogue)
    err = info.value
    assert err.file == "p.toml"
    assert err.key == key
    assert message in str(err)
    assert str(err).startswith("p.toml")


def test_missing_file_names_it(tmp_path: Path, mini_catalogue: Catalogue) -> None:
    with pytest.raises(PolicyError, match=r"nope\.toml: cannot read"):
        load_policy(tmp_path / "nope.toml", catalogue=mini_catalogue)


def test_digest_changes_with_content(mini_catalogue: Catalogue) -> None:
    a = parse_policy(BASE, catalogue=mini_catalogue)
    b = parse_policy(BASE + "\n# comment\n", catalogue=mini_catalogue)
    assert a.label != b.label and a.label.startswith("test@1+")


def test_bundled_policy_and_catalogue_load() -> None:
    catalogue = Catalogue.load()
    policy = load_policy(catalogue=catalogue)
    assert policy.id == "3646-2024"
    assert policy.active_months == 6
    assert policy.repeat_window.total_seconds() == 600
    assert policy.priority_after_hangups == 2
    assert policy.deflect_motives and all(catalogue.motives[m].simple for m in policy.deflect_motives)
    assert 55 <= len(catalogue) <= 70
    assert len({m.skill for m in catalogue if m.kind == "normal"}) >= 5


@pytest.mark.parametrize(
    ("old", "new", "key", "message"),
    [
        ('dtmf = "31"', 'dtmf = "3a"', "motives[0] (attestation_droits).dtmf", "one or two digits"),
        (
            'skill = "droits"\nsimple = true',
            'skill = "nope"\nsimple = true',
            "motives[0] (attestation_droits).skill",
            "unknown skill",
        ),
        (
            'online = "Téléchargez votre attestation dans votre compte ameli."\n',
            "",
            "motives[0] (attestation_droits).online",
            "missing",
        ),
        ('id = "carte_vitale_perdue"', 'id = "attestation_droits"', "motives[1] (attestation_droits).id", "duplicate"),
        ('dtmf = "32"', 'dtmf = "31"', "motives[1] (carte_vitale_perdue).dtmf", "already used"),
    ],
)
def test_catalogue_errors(old: str, new: str, key: str, message: str) -> None:
    text = (FIXTURES / "catalogue-mini.toml").read_text()
    assert old in text
    import tomllib

    with pytest.raises(ConfigError) as info:
        Catalogue.from_dict(tomllib.loads(text.replace(old, new, 1)), file="c.toml")
    assert info.value.key == key and message in str(info.value)


def test_general_is_not_a_queue_name(mini_catalogue: Catalogue) -> None:
    """Found on a real Asterisk 22: [general] in queues.conf holds settings, so no queue can be called so."""
    with pytest.raises(PolicyError, match=r"settings section of queues\.conf") as info:
        parse_policy(mutate('default = "accueil"', 'default = "general"'), catalogue=mini_catalogue)
    assert info.value.key == "queues.default"
    import tomllib

    text = (FIXTURES / "catalogue-mini.toml").read_text().replace('queue = "accueil"', 'queue = "General"')
    with pytest.raises(ConfigError, match="settings section") as info2:
        Catalogue.from_dict(tomllib.loads(text))
    assert info2.value.key == "skills.general.queue"
