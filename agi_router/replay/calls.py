"""The calls a replay runs over: read from the audit trail or a CSV; only what the policy needs, pseudonyms only."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from ..exceptions import ConfigError
from ..policy.model import AccountFacts, MotiveFacts

__all__ = ["CSV_COLUMNS", "ReplayCall", "read_audit", "read_csv"]

CSV_COLUMNS = ("time", "pseudonym", "account", "last_login", "flags", "motive", "confidence", "method")


@dataclass(frozen=True, slots=True)
class ReplayCall:
    at: datetime  # timezone-aware
    caller: str  # pseudonym ("" when withheld)
    withheld: bool
    account: AccountFacts
    motive: MotiveFacts
    sms_capable: bool = False
    call_id: str = ""


def read_audit(path: Path) -> list[ReplayCall]:
    """The decisions of the audit trail (``var/audit/decisions.jsonl``) as replay input, in time order. Calls
    without a decision (hung up before, fallback) are left out: the policy never saw them."""
    out = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read the call log: {exc.strerror or exc}", file=str(path)) from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            inp, m = rec.get("inputs"), rec.get("motive")
            if not inp or "decision" not in rec:
                continue
            a = inp["account"]
            account = AccountFacts(
                bool(a["known"]),
                bool(a["exists"]),
                date.fromisoformat(a["last_login"]) if a.get("last_login") else None,
                frozenset(a.get("flags", ())),
            )
            motive = MotiveFacts(
                (m or {}).get("id"),
                float((m or {}).get("confidence", 1.0)),
                (m or {}).get("method", "none"),
                human_requested=bool((m or {}).get("human_requested")),
                level=(m or {}).get("level") or "",
                parts=tuple((m or {}).get("parts") or ()),
                language=(m or {}).get("language") or "",
                failed_captures=int((m or {}).get("failed_captures") or 0),
            )
            out.append(
                ReplayCall(
                    datetime.fromisoformat(inp["now"]),
                    "" if inp["withheld"] else rec["caller"],
                    bool(inp["withheld"]),
                    account,
                    motive,
                    bool(inp.get("sms_capable")),
                    str(rec.get("call_id", "")),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"line {n}: not an audit record this version reads ({exc!r})", file=str(path)) from None
    return sorted(out, key=lambda c: c.at)


def read_csv(path: Path) -> list[ReplayCall]:
    """``time,pseudonym,account,last_login,flags,motive,confidence,method`` (account: active|inactive|none|
    unknown|withheld; flags ``;``-separated; method dtmf|speech|variable|none), in time order. Optional
    columns: ``language`` (heard, ISO 639-1) and ``failed_captures`` (sentences/menus not understood)."""
    out = []
    try:
        with Path(path).open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ConfigError(
                    f"missing column(s) {missing}; the columns are {','.join(CSV_COLUMNS)}", file=str(path)
                )
            for row in reader:
                n = reader.line_num
                try:
                    kind = row["account"].strip()
                    known = kind != "unknown"
                    exists = kind in ("active", "inactive")
                    last = date.fromisoformat(row["last_login"]) if row["last_login"].strip() else None
                    flags = frozenset(f.strip() for f in row["flags"].split(";") if f.strip())
                    at = datetime.fromisoformat(row["time"])
                    if at.tzinfo is None:
                        raise ValueError("time needs a timezone, e.g. 2026-12-03T09:15:00+01:00")
                    if kind not in ("active", "inactive", "none", "unknown", "withheld"):
                        raise ValueError(f"account {kind!r}: active, inactive, none, unknown or withheld")
                    out.append(
                        ReplayCall(
                            at,
                            "" if kind == "withheld" else row["pseudonym"].strip(),
                            kind == "withheld",
                            AccountFacts(known, exists, last, flags),
                            MotiveFacts(
                                row["motive"].strip() or None,
                                float(row["confidence"] or 1.0),
                                row["method"].strip() or "none",
                                human_requested=row["motive"].strip() == "human",
                                language=(row.get("language") or "").strip(),
                                failed_captures=int((row.get("failed_captures") or "0").strip() or 0),
                            ),
                            call_id=f"csv-{n}",
                        )
                    )
                except ValueError as exc:
                    raise ConfigError(f"line {n}: {exc}", file=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the call log: {exc.strerror or exc}", file=str(path)) from None
    return sorted(out, key=lambda c: c.at)
