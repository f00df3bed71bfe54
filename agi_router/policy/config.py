"""Policy files: TOML, validated on load with precise errors (file, key, what is wrong).

Unknown keys are errors too: a typo such as ``windows_minutes`` must not silently fall back
to a default on a production hotline.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, time, timedelta
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .._toml import TableReader as _BaseReader
from ..exceptions import PolicyError
from ..motives.catalogue import Catalogue

__all__ = ["DAYS", "OpeningHours", "Policy", "default_policy_path", "load_policy", "parse_policy"]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")


def default_policy_path() -> Path:
    return Path(str(resources.files("agi_router") / "data" / "policy-3646-2024.toml"))


@dataclass(frozen=True, slots=True)
class OpeningHours:
    enabled: bool
    timezone: ZoneInfo
    weekly: tuple[tuple[tuple[time, time], ...], ...]  # index 0 = Monday
    holidays: frozenset[date]
    closed_prompts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Safeguards:
    """``[safeguards]``: limits on the router ending a call itself (deflection, repeat hang-up). All off by
    default (the 2024 rules as they were); each one, when it acts, turns the router-ended call into the
    skill queue and says why with its own reason code (``safeguard.<name>``, counted by
    ``agi_router_safeguard_triggers_total``)."""

    exempt_flags: frozenset[str] = frozenset()  # directory flags whose holders are never ended by the router
    exempt_callers: frozenset[str] = frozenset()  # pseudonyms (`agi-router pseudonym NUMBER`), same
    daily_cap: int = 0  # router-ended calls per caller per day, after which a person answers (0: no cap)
    require_alternative: bool = False  # no hang-up without an alternative given (an SMS link): else queue
    dtmf_fallback: bool = False  # callers on the DTMF menu (speech failed or unavailable) are not deflected
    other_language: bool = False  # callers heard speaking another language than the line's are not deflected
    # after this many failed captures (sentences not understood, a menu not answered) a person, at once: no
    # further re-prompt or menu (0: the dialogue's own budget decides)
    person_after_failed_captures: int = 0

    @property
    def enabled(self) -> bool:
        return bool(
            self.exempt_flags
            or self.exempt_callers
            or self.daily_cap
            or self.require_alternative
            or self.dtmf_fallback
            or self.other_language
            or self.person_after_failed_captures
        )


@dataclass(frozen=True, slots=True)
class Policy:
    id: str
    version: str
    digest: str
    description: str
    timezone: ZoneInfo
    active_months: int
    deflection_enabled: bool
    deflect_motives: frozenset[str]
    deflect_min_confidence: float
    deflect_sms: bool
    deflect_prompts_before: tuple[str, ...]
    deflect_prompts_after: tuple[str, ...]
    deflect_sms_prompt: str | None
    hangup_enabled: bool
    repeat_window: timedelta
    hangup_prompts: tuple[str, ...]
    priority_enabled: bool
    priority_after_hangups: int
    chain_gap: timedelta
    priority_value: int
    memory_ttl: timedelta
    default_queue: str
    default_priority: int
    unstaffed_reroute: bool  # a skill queue with no agent logged in (fresh data) -> the default queue
    queue_map: Mapping[str, str]
    human_queue: str
    human_priority: int
    multi_route: str  # several requests: "human" (the human queue) | "most_urgent" (that request's queue)
    multi_urgency: tuple[str, ...]  # skills, most urgent first (a request's place in this list)
    hours: OpeningHours
    saturation_enabled: bool
    saturation_max_waiting: int
    saturation_max_wait_s: float
    saturation_callback: bool
    saturation_prompts: tuple[str, ...]
    catalogue: Catalogue = field(repr=False, compare=False)
    safeguards: Safeguards = Safeguards()
    language: str = "fr"  # the line's language (ISO 639-1): what its messages are recorded in

    @property
    def label(self) -> str:
        """``id@version+digest``: names exactly which file decided."""
        return f"{self.id}@{self.version}+{self.digest[:8]}"

    def most_urgent(self, motive_ids: tuple[str, ...]) -> str | None:
        """Of several requests, the one whose skill comes first in ``[multi] urgency`` (then as said)."""
        known = [m for m in motive_ids if m in self.catalogue]
        if not known:
            return None
        rank = {s: i for i, s in enumerate(self.multi_urgency)}
        return min(known, key=lambda m: rank.get(self.catalogue.motives[m].skill, len(rank)))

    def queue_for(self, motive_id: str | None) -> str:
        m = self.catalogue.get(motive_id or "")
        if m is None:
            return self.default_queue
        return self.queue_map.get(m.skill) or self.catalogue.skills[m.skill].queue


def _parse_ranges(r: _Reader, key: str) -> tuple[tuple[time, time], ...]:
    spec: str = r.get(key, str)
    out = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        m = _RANGE.match(part)
        if not m:
            raise r.err(key, f"{part!r} is not HH:MM-HH:MM")
        h1, m1, h2, m2 = (int(x) for x in m.groups())
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
            raise r.err(key, f"{part!r}: no such time of day")
        start = time(h1, m1)
        end = time(23, 59, 59, 999999) if h2 == 24 else time(h2, m2)
        if end <= start:
            raise r.err(key, f"{part!r}: the range ends before it starts")
        out.append((start, end))
    return tuple(out)


class _Reader(_BaseReader):
    error_class = PolicyError


SECTIONS = (
    "policy",
    "account",
    "deflection",
    "repeat",
    "queues",
    "human",
    "multi",
    "hours",
    "saturation",
    "safeguards",
)
#: sections without which a policy would silently behave otherwise than its author may think
REQUIRED_SECTIONS = {
    "policy": "id and version",
    "deflection": "enabled = false: nobody is deflected",
    "repeat": "hangup_enabled = false, priority_enabled = false",
    "queues": "default = the reception queue",
    "hours": "enabled = false: the line is open 24/7",
    "saturation": "enabled = false: no dissuasion, no callback offer",
}


def _table(root: _Reader, key: str) -> _Reader:
    return root.table(key)


def parse_policy(text: str, *, file: str = "<policy>", catalogue: Catalogue | None = None) -> Policy:
    """Validate a policy document; raise :class:`PolicyError` naming the first fault."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"not valid TOML: {exc}", file=file) from None
    catalogue = catalogue or Catalogue.load()
    root = _Reader(data, "", file)
    # sections first: a misspelt one is "unknown", not a missing key of the section it was meant to be;
    # those that change who is hung up on or when the line is open must be written out, even to say "off"
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise PolicyError(
            f"unknown section(s) {', '.join(f'[{u}]' for u in unknown)}; the sections are "
            f"{', '.join(f'[{k}]' for k in SECTIONS)}",
            file=file,
        )
    for section in REQUIRED_SECTIONS:
        if not isinstance(data.get(section), dict):
            raise PolicyError(
                f"section [{section}] is missing: write it out, even to turn it off ({REQUIRED_SECTIONS[section]})",
                file=file,
            )

    p = _table(root, "policy")
    pid = p.get("id", str)
    version = p.get("version", str)
    description = p.get("description", str, "")
    tzname = p.get("timezone", str, "Europe/Paris")
    try:
        tz = ZoneInfo(tzname)
    except (ZoneInfoNotFoundError, ValueError):
        raise p.err("timezone", f"unknown time zone {tzname!r}") from None
    language = p.get("language", str, "fr")
    if not re.fullmatch(r"[a-z]{2}", language):
        raise p.err("language", f'{language!r}: a two-letter ISO 639-1 code such as "fr"')
    p.finish()

    a = _table(root, "account")
    active_months = a.int_range("active_months", 1, 120)
    a.finish()

    d = _table(root, "deflection")
    deflection_enabled = d.get("enabled", bool)
    motives = d.strings("motives", ())
    for i, mid in enumerate(motives):
        m = catalogue.get(mid)
        if m is None:
            raise d.err(f"motives[{i}]", f"unknown motive {mid!r} (catalogue {catalogue.version})")
        if not m.simple or m.kind != "normal":
            raise d.err(f"motives[{i}]", f"motive {mid!r} is not a simple online procedure in the catalogue")
    min_conf: float = d.get("min_confidence", float, 0.0)
    if not 0.0 <= min_conf <= 1.0:
        raise d.err("min_confidence", f"must be between 0 and 1, got {min_conf}")
    sms = d.get("sms", bool, False)
    before = d.strings("prompts_before", ())
    after = d.strings("prompts_after", ())
    sms_prompt = d.get("sms_prompt", str, "") or None
    d.finish()

    r = _table(root, "repeat")
    hangup_enabled = r.get("hangup_enabled", bool)
    window = r.int_range("window_minutes", 1, 24 * 60)
    hangup_prompts = r.strings("hangup_prompts", ())
    priority_enabled = r.get("priority_enabled", bool)
    after_hangups = r.int_range("priority_after_hangups", 1, 20)
    chain_gap = r.int_range("chain_gap_minutes", 1, 24 * 60)
    priority_value = r.int_range("priority", 0, 1000)
    memory_hours = r.int_range("memory_hours", 1, 24 * 90, 24)
    if memory_hours * 60 < max(window, chain_gap):
        raise r.err("memory_hours", f"{memory_hours} h is shorter than the repeat windows")
    r.finish()

    q = _table(root, "queues")
    default_queue = q.get("default", str)
    default_priority = q.int_range("default_priority", 0, 1000, 0)
    unstaffed = q.choice("unstaffed", ("default", "skill"), "default")
    qmap = q.get("map", dict, {})
    for skill, queue in qmap.items():
        if skill not in catalogue.skills:
            raise q.err(f"map.{skill}", f"unknown skill; known: {sorted(catalogue.skills)}")
        if not isinstance(queue, str) or not queue:
            raise q.err(f"map.{skill}", "must be a queue name")
    q.finish()

    h = _table(root, "human")
    human_queue = h.get("queue", str, default_queue)
    human_priority = h.int_range("priority", 0, 1000, 0)
    h.finish()
    for key, name in (
        ("queues.default", default_queue),
        ("human.queue", human_queue),
        *((f"queues.map.{k}", v) for k, v in qmap.items()),
    ):
        if name.lower() == "general":
            raise PolicyError("'general' is the settings section of queues.conf, not a queue name", file=file, key=key)

    mt = _table(root, "multi")
    multi_route = mt.choice("route", ("human", "most_urgent"), "human")
    urgency = mt.strings("urgency", ())
    for i, skill in enumerate(urgency):
        if skill not in catalogue.skills:
            raise mt.err(f"urgency[{i}]", f"unknown skill {skill!r}; known: {sorted(catalogue.skills)}")
    mt.finish()

    o = _table(root, "hours")
    hours_enabled = o.get("enabled", bool, False)
    weekly = tuple(_parse_ranges(o, day) if day in o.data else () for day in DAYS)
    for day in DAYS:
        o.used.add(day)
    holidays = set()
    for i, day_text in enumerate(o.strings("holidays", ())):
        try:
            holidays.add(date.fromisoformat(day_text))
        except ValueError:
            raise o.err(f"holidays[{i}]", f"{day_text!r} is not an ISO date YYYY-MM-DD") from None
    closed_prompts = o.strings("closed_prompts", ())
    if hours_enabled and not any(weekly):
        raise o.err("enabled", "opening hours are enabled but no day has a range: the line would never open")
    o.finish()

    s = _table(root, "saturation")
    sat_enabled = s.get("enabled", bool, False)
    sat_waiting = s.int_range("max_waiting", 1, 100000, 50)
    sat_wait = float(s.int_range("max_wait_seconds", 1, 86400, 1800))
    sat_callback = s.get("callback_offer", bool, False)
    sat_prompts = s.strings("prompts", ())
    s.finish()

    g = _table(root, "safeguards")
    exempt_flags = g.strings("exempt_flags", ())
    for i, flag in enumerate(exempt_flags):
        if not re.fullmatch(r"[a-z0-9][a-z0-9_\-]*", flag):
            raise g.err(f"exempt_flags[{i}]", f"{flag!r}: directory flags are lower-case letters, digits, '_' and '-'")
    exempt_callers = g.strings("exempt_callers", ())
    for i, who in enumerate(exempt_callers):
        if not re.fullmatch(r"c-[0-9a-f]{24}", who):
            raise g.err(
                f"exempt_callers[{i}]", "a pseudonym c-<24 hex> (`agi-router pseudonym NUMBER`), never a number"
            )
    safeguards = Safeguards(
        exempt_flags=frozenset(exempt_flags),
        exempt_callers=frozenset(exempt_callers),
        daily_cap=g.int_range("daily_cap", 0, 100, 0),
        require_alternative=g.get("require_alternative", bool, False),
        dtmf_fallback=g.get("dtmf_fallback", bool, False),
        other_language=g.get("other_language", bool, False),
        person_after_failed_captures=g.int_range("person_after_failed_captures", 0, 5, 0),
    )
    if safeguards.daily_cap and memory_hours < 24:
        raise g.err("daily_cap", f"needs [repeat] memory_hours >= 24 (it is {memory_hours}) to count a day")
    g.finish()

    root.finish()
    return Policy(
        id=pid,
        version=version,
        digest=hashlib.sha256(text.encode()).hexdigest(),
        description=description,
        timezone=tz,
        active_months=active_months,
        deflection_enabled=deflection_enabled,
        deflect_motives=frozenset(motives),
        deflect_min_confidence=min_conf,
        deflect_sms=sms,
        deflect_prompts_before=before,
        deflect_prompts_after=after,
        deflect_sms_prompt=sms_prompt,
        hangup_enabled=hangup_enabled,
        repeat_window=timedelta(minutes=window),
        hangup_prompts=hangup_prompts,
        priority_enabled=priority_enabled,
        priority_after_hangups=after_hangups,
        chain_gap=timedelta(minutes=chain_gap),
        priority_value=priority_value,
        memory_ttl=timedelta(hours=memory_hours),
        default_queue=default_queue,
        default_priority=default_priority,
        unstaffed_reroute=unstaffed == "default",
        queue_map=dict(qmap),
        human_queue=human_queue,
        human_priority=human_priority,
        multi_route=multi_route,
        multi_urgency=urgency,
        hours=OpeningHours(hours_enabled, tz, weekly, frozenset(holidays), closed_prompts),
        saturation_enabled=sat_enabled,
        saturation_max_waiting=sat_waiting,
        saturation_max_wait_s=sat_wait,
        saturation_callback=sat_callback,
        saturation_prompts=sat_prompts,
        catalogue=catalogue,
        safeguards=safeguards,
        language=language,
    )


def load_policy(path: Path | None = None, *, catalogue: Catalogue | None = None) -> Policy:
    path = path or default_policy_path()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read: {exc.strerror or exc}", file=str(path)) from None
    return parse_policy(text, file=str(path), catalogue=catalogue)
