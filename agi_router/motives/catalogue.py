"""The motive catalogue: a versioned TOML data file of caller motives and skill queues.

Validated strictly on load; every error names the file and the key (``motives[12].skill``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .._toml import read_toml
from ..exceptions import ConfigError

__all__ = ["Catalogue", "Motive", "Skill", "default_catalogue_path"]

_ID = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)?$")
_KINDS = ("normal", "human", "multi")


@dataclass(frozen=True, slots=True)
class Skill:
    key: str
    label: str
    queue: str
    dtmf: str
    menu: str = ""  # the few words the DTMF menu says for it ("Tapez 1 remboursement, ..."); "" = label


@dataclass(frozen=True, slots=True)
class Motive:
    id: str
    label: str
    skill: str
    kind: str = "normal"
    simple: bool = False
    dtmf: str | None = None
    online: str | None = None
    sms: str | None = None
    examples: tuple[str, ...] = ()
    held_out: tuple[str, ...] = ()
    short: str = ""  # the few words the agent's whisper says; "" = the label without its parenthesis

    def __post_init__(self) -> None:
        if not self.short:
            phrase = re.sub(r"\s*\([^)]*\)", "", self.label).strip()
            object.__setattr__(self, "short", phrase[0].lower() + phrase[1:] if phrase[1:2].islower() else phrase)


def default_catalogue_path() -> Path:
    return Path(str(resources.files("agi_router") / "data" / "motives.toml"))


class Catalogue:
    def __init__(self, version: str, language: str, skills: Mapping[str, Skill], motives: Mapping[str, Motive]):
        self.version = version
        self.language = language
        self.skills = dict(skills)
        self.motives = dict(motives)
        self.by_dtmf = {m.dtmf: m for m in self.motives.values() if m.dtmf}
        self.skill_by_dtmf = {s.dtmf: s for s in self.skills.values()}

    def __contains__(self, motive_id: object) -> bool:
        return motive_id in self.motives

    def __iter__(self) -> Iterator[Motive]:
        return iter(self.motives.values())

    def __len__(self) -> int:
        return len(self.motives)

    def get(self, motive_id: str) -> Motive | None:
        return self.motives.get(motive_id)

    def queue_of(self, motive_id: str | None) -> str | None:
        m = self.motives.get(motive_id or "")
        return self.skills[m.skill].queue if m else None

    def generic_motive(self, skill: str) -> Motive | None:
        """The ``<skill>.autre`` motive picked when a caller only chose a skill."""
        return self.motives.get(f"{skill}.autre")

    def by_kind(self, kind: str) -> Motive | None:
        return next((m for m in self.motives.values() if m.kind == kind), None)

    @classmethod
    def load(cls, path: Path | None = None) -> Catalogue:
        path = path or default_catalogue_path()
        return cls.from_dict(read_toml(path), file=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, file: str = "<catalogue>") -> Catalogue:
        def err(key: str, msg: str) -> ConfigError:
            return ConfigError(msg, file=file, key=key)

        def text(obj: Mapping[str, Any], key: str, where: str, required: bool = True) -> str | None:
            v = obj.get(key)
            if v is None:
                if required:
                    raise err(f"{where}.{key}", "missing")
                return None
            if not isinstance(v, str) or not v.strip():
                raise err(f"{where}.{key}", f"must be a non-empty string, got {v!r}")
            return v.strip()

        version = text(data, "catalogue_version", "catalogue") or ""
        language = text(data, "language", "catalogue", required=False) or "fr-FR"
        raw_skills = data.get("skills")
        if not isinstance(raw_skills, dict) or not raw_skills:
            raise err("skills", "at least one [skills.<key>] table is required")
        skills: dict[str, Skill] = {}
        dtmf_seen: dict[str, str] = {}
        for key, s in raw_skills.items():
            where = f"skills.{key}"
            if not isinstance(s, dict):
                raise err(where, "must be a table")
            dtmf = text(s, "dtmf", where) or ""
            if not re.fullmatch(r"[0-9]", dtmf):
                raise err(f"{where}.dtmf", f"must be one digit, got {dtmf!r}")
            if dtmf in dtmf_seen:
                raise err(f"{where}.dtmf", f"digit {dtmf} already used by {dtmf_seen[dtmf]}")
            dtmf_seen[dtmf] = where
            queue = text(s, "queue", where) or ""
            if queue.lower() == "general":
                raise err(f"{where}.queue", "'general' is the settings section of queues.conf, not a queue name")
            unknown = set(s) - {"label", "queue", "dtmf", "menu"}
            if unknown:
                raise err(where, f"unknown key(s): {', '.join(sorted(unknown))}")
            label = text(s, "label", where) or ""
            skills[key] = Skill(key, label, queue, dtmf, text(s, "menu", where, required=False) or label)
        raw_motives = data.get("motives")
        if not isinstance(raw_motives, list) or not raw_motives:
            raise err("motives", "at least one [[motives]] entry is required")
        motives: dict[str, Motive] = {}
        motive_dtmf: dict[str, str] = {}
        known_keys = {
            "id", "label", "short", "skill", "kind", "simple", "dtmf", "online", "sms", "examples", "held_out"
        }  # fmt: skip
        for i, m in enumerate(raw_motives):
            where = f"motives[{i}]"
            if not isinstance(m, dict):
                raise err(where, "must be a table")
            unknown = set(m) - known_keys
            if unknown:
                raise err(where, f"unknown key(s) {sorted(unknown)}")
            mid = text(m, "id", where) or ""
            where = f"motives[{i}] ({mid})"
            if not _ID.match(mid):
                raise err(f"{where}.id", "must be lowercase ascii words joined by '_' (one '.' allowed)")
            if mid in motives:
                raise err(f"{where}.id", "duplicate motive id")
            skill = text(m, "skill", where) or ""
            if skill not in skills:
                raise err(f"{where}.skill", f"unknown skill {skill!r}; known: {sorted(skills)}")
            kind = m.get("kind", "normal")
            if kind not in _KINDS:
                raise err(f"{where}.kind", f"must be one of {_KINDS}, got {kind!r}")
            simple = m.get("simple", False)
            if not isinstance(simple, bool):
                raise err(f"{where}.simple", "must be true or false")
            mdtmf = text(m, "dtmf", where, required=False)
            if mdtmf is not None:
                if not re.fullmatch(r"[0-9]{1,2}", mdtmf):
                    raise err(f"{where}.dtmf", f"must be one or two digits, got {mdtmf!r}")
                if mdtmf in motive_dtmf:
                    raise err(f"{where}.dtmf", f"already used by {motive_dtmf[mdtmf]}")
                motive_dtmf[mdtmf] = mid
            online = text(m, "online", where, required=simple)
            sms = text(m, "sms", where, required=simple)
            if sms is not None and len(sms) > 300:
                raise err(f"{where}.sms", f"{len(sms)} characters; 300 at most")
            lists: dict[str, tuple[str, ...]] = {}
            for key in ("examples", "held_out"):
                v = m.get(key, [])
                if not isinstance(v, list) or not all(isinstance(x, str) and x.strip() for x in v):
                    raise err(f"{where}.{key}", "must be a list of non-empty strings")
                lists[key] = tuple(x.strip() for x in v)
            motives[mid] = Motive(
                mid,
                text(m, "label", where) or "",
                skill,
                kind,
                simple,
                mdtmf,
                online,
                sms,
                lists["examples"],
                lists["held_out"],
                text(m, "short", where, required=False) or "",
            )
        return cls(version, language, skills, motives)
