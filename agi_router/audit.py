"""The audit trail: one JSON line per call saying what the policy was given and what it decided, and why.

No clear number: the caller is the pseudonym. Files rotate at ``max_bytes`` and ``backups`` old files
are kept (retention by volume). ``agi-router audit explain CALL_ID`` reads them back.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import logging.handlers
import os
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .callflow.flow import CallResult

__all__ = ["AuditLog", "explain", "find", "record_of"]


def record_of(r: CallResult) -> dict[str, Any]:
    f, d = r.facts, r.decision
    rec: dict[str, Any] = {
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "call_id": r.call_id,
        "caller": r.caller,
        "arm": r.arm,
        "cohorts": list(r.cohorts),
        "hung_up": r.hung_up,
        "fallback": r.fallback_reason,
        "errors": r.errors,
        "latency_ms": round(r.decision_latency_s * 1000, 3) if r.decision_latency_s is not None else None,
        "speech_to_route_ms": round(r.speech_to_route_s * 1000, 1) if r.speech_to_route_s is not None else None,
        "voice_to_route_ms": round(r.voice_to_route_s * 1000, 1) if r.voice_to_route_s is not None else None,
    }
    if r.context is not None:  # what the agent was given (handoff/): the reference GET /calls/{ref} takes
        rec["handoff"] = {"ref": r.context.ref, "flags": list(r.context.flags)}
    if r.motive is not None:
        m = r.motive
        rec["motive"] = {
            "id": m.motive_id,
            "confidence": round(m.confidence, 3),
            "method": m.method,
            "runner_up": m.runner_up,
            "human_requested": m.human_requested,
            "level": m.level or None,
            "heard": m.heard,
            "parts": list(m.parts),
            "language": m.language or None,
            "failed_captures": m.failed_captures,
        }
    if f is not None:
        rec["inputs"] = {
            "now": f.now.isoformat(),
            "withheld": f.withheld,
            "account": {
                "known": f.account.known,
                "exists": f.account.exists,
                "last_login": f.account.last_login.isoformat() if f.account.last_login else None,
                "flags": sorted(f.account.flags),
            },
            "history": [{"at": c.at.isoformat(), "action": c.action.value} for c in f.history],
            "queues": {
                k: {
                    "waiting": q.waiting,
                    "available": q.available_agents,
                    "estimated_wait_s": q.estimated_wait_s,
                    "fresh": q.fresh,
                }
                for k, q in f.queues.items()
            },
            "sms_capable": f.sms_capable,
        }
    if d is not None:
        rec["decision"] = {
            "action": d.action.value,
            "queue": d.queue,
            "priority": d.priority,
            "rule": d.rule,
            "reasons": list(d.reasons),
            "segment": d.segment.value,
            "policy": d.policy_version,
            "prompts": list(d.prompts),
            "sms": d.sms_template is not None,
        }
    return rec


log = logging.getLogger(__name__)


class _PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """The trail's files: each one (the current one and every rotation) created 0600, since pseudonyms are
    personal data; and a line that cannot be written (disk full, file system gone read-only) is kept, in
    order, and written before the next one as soon as the disk takes it again — up to ``max_pending`` lines,
    beyond which the oldest are dropped and counted (``dropped``). ``failures`` counts failed attempts."""

    def __init__(self, *args: Any, max_pending: int = 10_000, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pending: deque[str] = deque(maxlen=max_pending)
        self.failures = 0
        self.dropped = 0

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.pending) == self.pending.maxlen:
            self.dropped += 1
        self.pending.append(self.format(record))
        try:
            while self.pending:
                if self.shouldRollover(record):
                    self.doRollover()
                if self.stream is None:
                    self.stream = self._open()
                self.stream.write(self.pending[0] + self.terminator)
                self.stream.flush()
                self.pending.popleft()
        except OSError as exc:
            self.failures += 1
            if self.failures == 1 or self.failures % 1000 == 0:
                log.error("audit trail not written (%s): %d line(s) kept to write later", exc, len(self.pending))
            with contextlib.suppress(OSError):
                if self.stream is not None:
                    self.stream.close()
            self.stream = None  # reopened on the next line


class AuditLog:
    def __init__(self, path: Path, *, max_bytes: int = 50 * 1024 * 1024, backups: int = 20) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._logger = logging.getLogger(f"agi_router.audit.{id(self)}")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        self._handler = _PrivateRotatingFileHandler(
            self.path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._logger.addHandler(self._handler)

    def write(self, r: CallResult) -> None:
        self._logger.info(json.dumps(record_of(r), ensure_ascii=False))

    def write_event(self, event: str, call_id: str, **fields: Any) -> None:
        """A later event of a call (an agent's correction): one line with ``event``, read back by
        ``audit explain`` with the call's decision, skipped by the replay."""
        rec = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event, "call_id": call_id}
        self._logger.info(json.dumps({**rec, **fields}, ensure_ascii=False))

    @property
    def pending(self) -> int:
        """Lines not yet on disk (the disk refused them); they go first when it takes writes again."""
        return len(self._handler.pending)

    @property
    def failures(self) -> int:
        return self._handler.failures

    @property
    def dropped(self) -> int:
        return self._handler.dropped

    def close(self) -> None:
        self._logger.removeHandler(self._handler)
        self._handler.close()


def _files(path: Path) -> list[Path]:
    rotated = sorted(
        path.parent.glob(path.name + ".*"),
        key=lambda p: int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0,
        reverse=True,
    )
    return [*rotated, path] if path.exists() else rotated


def find(path: Path, call_id: str) -> Iterator[dict[str, Any]]:
    for f in _files(Path(path)):
        with f.open(encoding="utf-8") as fh:
            for line in fh:
                if call_id in line:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    if rec.get("call_id") == call_id:
                        yield rec


def explain(rec: dict[str, Any]) -> str:
    """Why a call went where it went, in a few lines of plain text."""
    if rec.get("event") == "correction":
        return (
            f"  at {rec['ts']} agent {rec.get('agent') or '?'} moved the caller from {rec.get('from_queue')} "
            f"to {rec.get('to_queue')} (the motive had been captured by {rec.get('method')})"
        )
    out = [f"call {rec['call_id']} at {rec['ts']}, caller {rec['caller']}"]
    inp = rec.get("inputs") or {}
    acc = inp.get("account") or {}
    if inp:
        who = (
            "withheld number"
            if inp.get("withheld")
            else (
                "directory did not answer"
                if not acc.get("known")
                else f"last online-account use {acc.get('last_login') or 'never'}"
            )
        )
        out.append(f"  account: {who}; flags {acc.get('flags') or '-'}")
        hist = inp.get("history") or []
        out.append(
            f"  same motive before: {len(hist)} call(s)"
            + (" — " + ", ".join(f"{h['action']} at {h['at']}" for h in hist[-3:]) if hist else "")
        )
    m = rec.get("motive")
    if m:
        out.append(
            f"  motive: {m['id'] or 'none'} by {m['method']} (confidence {m['confidence']}"
            f"{', runner-up ' + m['runner_up'] if m.get('runner_up') else ''})"
            + (f", level {m['level']}" if m.get("level") else "")
            + (f", best exact guess {m['heard']}" if m.get("heard") and m.get("heard") != m["id"] else "")
            + (f", several requests: {' + '.join(m['parts'])}" if m.get("parts") else "")
            + (f", heard in {m['language']}" if m.get("language") else "")
            + (f", after {m['failed_captures']} failed capture(s)" if m.get("failed_captures") else "")
        )
    d = rec.get("decision")
    if d:
        where = f" -> queue {d['queue']} (priority {d['priority']})" if d.get("queue") else ""
        out.append(f"  decision: {d['action']}{where} by rule {d['rule']} of policy {d['policy']}")
        out.append(
            f"  reasons: {', '.join(d['reasons'])}; segment {d['segment']}"
            + (f"; cohorts {', '.join(rec['cohorts'])}" if rec.get("cohorts") else "")
        )
    if rec.get("fallback"):
        out.append(f"  fallback route to a person: {rec['fallback']}")
    if rec.get("hung_up"):
        out.append("  the caller hung up before the end")
    if rec.get("latency_ms") is not None:
        out.append(f"  decided in {rec['latency_ms']} ms")
    if rec.get("errors"):
        out.append(f"  degraded: {'; '.join(rec['errors'])}")
    return "\n".join(out)
