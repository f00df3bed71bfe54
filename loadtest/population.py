"""Who calls, and what they do: the call mix of a load test, and the directory that goes with it.

Orders of magnitude from the public descriptions of the 3646 line: about a third of callers are active
online-account holders; some hold an account they have not used for months; many have none; a few
withhold their number. Some call back within ten minutes with the same request, some a third time. Some
ask for a person. Behaviour on the line (``kind``):

=========  =====  =================================================================================
speak      55 %   says a sentence (a voice of loadtest/voices.py) at the first prompt; types the menu if asked
dtmf       12 %   stays silent at the prompt, then answers the DTMF menu (skill, motive)
person      8 %   presses 0 during the prompt (a person)
silent      8 %   says and types nothing (the budgeted fallback dialogue takes them to a person)
hangup      5 %   hangs up during the first prompt
hint       12 %   the dialplan already knows the motive (MOTIVE_HINT): no capture, the 2024 rules at once
=========  =====  =================================================================================

Repeat callers (15 % of calls) reuse the number and hint of a call made less than ten minutes before, so
the repeat rules (hang-up, then priority) fire under load as they do in production. Deterministic for a
seed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from .sim import CallerPlan, Round
from .voices import Voice

__all__ = ["MIX", "Population"]


MIX = {"speak": 0.55, "dtmf": 0.12, "person": 0.08, "silent": 0.08, "hangup": 0.05, "hint": 0.12}
ACCOUNTS = {"active": 0.34, "inactive": 0.16, "none": 0.45, "withheld": 0.05}
#: motives a caller picks in the menu or the dialplan knows (deflectable ones first: the 2024 rules bite)
MENU = [
    ("3", "4", "attestation_droits"),
    ("3", "1", "carte_vitale_commande"),
    ("1", "1", "suivi_remboursement"),
    ("2", "1", "ij_non_payees"),
    ("5", "2", "conge_maternite"),
    ("4", "1", "accident_travail_declaration"),
]


@dataclass
class Population:
    voices: Sequence[Voice]  # what speaking callers say (one is picked per call)
    seed: int = 3646
    repeat_share: float = 0.15
    size: int = 5000  # distinct numbers

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.numbers = [f"06{self.seed % 100:02d}{i:06d}" for i in range(self.size)]
        self.accounts = {n: _pick(self.rng, ACCOUNTS) for n in self.numbers}
        self._recent: list[tuple[float, CallerPlan]] = []

    def directory_csv(self, path: Path, today: date) -> int:
        """``number,last_login,flags`` for the account holders (active: used within 6 months; inactive:
        1-3 years ago); returns the number of rows."""
        rows = ["number,last_login,flags"]
        for n, acc in self.accounts.items():
            if acc == "active":
                rows.append(f"{n},{today - timedelta(days=self.rng.randint(1, 150))},")
            elif acc == "inactive":
                rows.append(f"{n},{today - timedelta(days=self.rng.randint(400, 1100))},")
        path.write_text("\n".join(rows) + "\n")
        return len(rows) - 1

    def next_call(self, now: float) -> CallerPlan:
        """The next caller at loop time ``now``."""
        self._recent = [(t, p) for t, p in self._recent if now - t < 600]
        if self._recent and self.rng.random() < self.repeat_share:
            _, prev = self.rng.choice(self._recent)
            plan = prev
        else:
            plan = self._fresh()
        self._recent.append((now, plan))
        return plan

    def _fresh(self) -> CallerPlan:
        rng = self.rng
        number = rng.choice(self.numbers)
        account = self.accounts[number]
        shown = "" if account == "withheld" else number
        kind = _pick(rng, MIX)
        skill, motive_digit, motive = rng.choice(MENU)
        if kind == "speak":
            said = self.voices[rng.randrange(len(self.voices))] if self.voices else None
            rounds: tuple[Round, ...] = (Round(audio=said.pcm if said else None, after_s=rng.uniform(0.4, 1.2)),)
            return CallerPlan(shown, kind, rounds, menu=(skill, motive_digit), account=account,
                              expects=said.expects if said else "")  # fmt: skip
        if kind == "dtmf":
            return CallerPlan(shown, kind, (Round(), Round()), menu=(skill, motive_digit), account=account)
        if kind == "person":
            return CallerPlan(shown, kind, (Round(dtmf="0", after_s=rng.uniform(0.5, 2.0)),), account=account)
        if kind == "silent":
            return CallerPlan(shown, kind, (Round(), Round()), account=account)
        if kind == "hangup":
            return CallerPlan(shown, kind, (Round(hang_up_s=rng.uniform(0.3, 2.0)),), account=account)
        return CallerPlan(shown, kind, hint=motive, account=account)


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]
