"""A synthetic day of the national line, from public orders of magnitude, so that a replay runs out of the box.

About 150,000 calls a day on weekdays; about a third from callers with an online account used in the last six
months; a motive mix over the catalogue where the simple online procedures weigh about 40 %; about 15 % of
calls repeat the same request within ten minutes (some a third time); a daily curve with the morning peak;
directory flags for callers helped by the fund (complementary health aid, long-term illness, disability,
an adviser's follow-up, no internet); how the motive was captured (speech mostly, the DTMF menu when speech
failed twice or was refused), sentences not understood first, callers heard speaking another language.
SYNTHETIC: the shares are assumptions written here, not measurements of the real line.
"""

from __future__ import annotations

import random
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from ..motives.catalogue import Catalogue
from ..policy.model import AccountFacts, MotiveFacts
from .calls import ReplayCall

__all__ = ["synthetic_day"]

PARIS = ZoneInfo("Europe/Paris")
#: calls per half hour from 08:30 to 17:30 (relative weights: the morning peak, a lunch dip)
CURVE = (6, 10, 12, 11, 10, 9, 8, 6, 5, 6, 8, 8, 7, 6, 5, 4, 3, 2)
ACCOUNTS = (("active", 0.34), ("inactive", 0.16), ("none", 0.36), ("unknown", 0.04), ("withheld", 0.10))
FLAGS = (("css", 0.08), ("ald", 0.12), ("handicap", 0.03), ("accompagnement", 0.02), ("no_internet", 0.05))
METHODS = (("speech", 0.72), ("dtmf", 0.20), ("variable", 0.08))
OTHER_LANGUAGES = (("ar", 0.015), ("en", 0.01), ("pt", 0.005), ("es", 0.005), ("tr", 0.005))  # of speech callers
SPEECH_SECOND_TRY = 0.10  # speech callers understood only on their second sentence
MENU_AFTER_FAILURES = 0.60  # DTMF callers who got there because speech failed twice (the rest chose the menu)


def _pick(rng: random.Random, table: tuple[tuple[str, float], ...]) -> str:
    x, acc = rng.random(), 0.0
    for value, share in table:
        acc += share
        if x < acc:
            return value
    return table[-1][0]


def synthetic_day(n: int, *, day: date = date(2026, 12, 3), seed: int = 3646, catalogue: Catalogue | None = None,
                  deflectable: frozenset[str] = frozenset()) -> list[ReplayCall]:  # fmt: skip
    """``n`` calls of one weekday, in time order. ``deflectable``: the motives a policy may deflect (they
    get about 40 % of first calls, the rest of the catalogue shares the remainder)."""
    rng = random.Random(seed)
    cat = catalogue or Catalogue.load()
    normal = sorted(m for m, e in cat.motives.items() if e.kind == "normal")
    simple = sorted(deflectable & set(normal)) or normal[:5]
    other = [m for m in normal if m not in simple]
    people = max(1, int(n * 0.8))
    accounts = {i: _pick(rng, ACCOUNTS) for i in range(people)}
    flags = {i: frozenset(f for f, share in FLAGS if rng.random() < share) for i in range(people)}
    start = datetime.combine(day, time(8, 30), PARIS)

    calls: list[ReplayCall] = []
    recent: list[ReplayCall] = []
    while len(calls) < n:
        slot = rng.choices(range(len(CURVE)), weights=CURVE)[0]
        at = start + timedelta(minutes=30 * slot, seconds=rng.uniform(0, 1800))
        if recent and rng.random() < 0.15:  # the same caller, the same request, a few minutes later
            prev = rng.choice(recent[-200:])
            at = prev.at + timedelta(minutes=rng.uniform(1, 9))
            calls.append(ReplayCall(at, prev.caller, prev.withheld, prev.account, prev.motive, prev.sms_capable,
                                    f"synth-{len(calls)}"))  # fmt: skip
            continue
        who = rng.randrange(people)
        kind = accounts[who]
        account = {
            "active": AccountFacts(True, True, day - timedelta(days=rng.randint(1, 170)), flags[who]),
            "inactive": AccountFacts(True, True, day - timedelta(days=rng.randint(200, 1200)), flags[who]),
            "none": AccountFacts(True, False, None, flags[who] | ({"no_account"} if rng.random() < 0.5 else set())),
            "unknown": AccountFacts.unknown(),
            "withheld": AccountFacts.unknown(),
        }[kind]
        method = _pick(rng, METHODS)
        language, failed = "", 0
        if method == "speech":
            language = _pick(rng, (*OTHER_LANGUAGES, ("fr", 1.0)))
            failed = 1 if rng.random() < SPEECH_SECOND_TRY else 0
        elif method == "dtmf":
            failed = 2 if rng.random() < MENU_AFTER_FAILURES else 0
        if rng.random() < 0.06:
            motive = MotiveFacts(None, 1.0, method, human_requested=True, language=language, failed_captures=failed)
        else:
            mid = rng.choice(simple) if rng.random() < 0.4 else rng.choice(other)
            confidence = 1.0 if method != "speech" else rng.choice((0.97, 0.93, 0.91, 0.85))
            motive = MotiveFacts(mid, confidence, method, language=language, failed_captures=failed)
        call = ReplayCall(at, "" if kind == "withheld" else f"c-{who:024x}", kind == "withheld", account, motive,
                          rng.random() < 0.7, f"synth-{len(calls)}")  # fmt: skip
        calls.append(call)
        recent.append(call)
    return sorted(calls, key=lambda c: c.at)
