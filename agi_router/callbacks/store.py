"""Accepted callbacks (virtual hold), stored durably in SQLite so that none is lost across restarts.

A callback needs the caller's number to call back: it is the only place the router keeps one, encrypted
at rest (AES-GCM, key derived from the pseudonymisation key), next to the caller's pseudonym (for logs
and de-duplication). The number is wiped once the callback is placed, failed or expired.

States: ``pending`` -> ``placing`` -> ``placed`` | back to ``pending`` (retry later) | ``failed``;
``pending`` -> ``expired`` when it is too old. ``placing`` rows found at start-up (the router died while
placing) go back to ``pending``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..exceptions import ConfigError, StateStoreError
from ..privacy import private_file

__all__ = ["Callback", "CallbackRecords", "CallbackStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS callbacks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,
    call_id TEXT NOT NULL,
    caller TEXT NOT NULL,
    number BLOB,
    queue TEXT NOT NULL,
    motive TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS callbacks_due ON callbacks (status, next_attempt_at);
"""


@dataclass(frozen=True, slots=True)
class Callback:
    id: int
    created_at: float
    call_id: str
    caller: str
    number: str
    queue: str
    motive: str
    status: str
    attempts: int
    next_attempt_at: float
    last_error: str


class CallbackRecords(Protocol):
    """What the call flow and the placer need of a callback store (SQLite for one router, Redis for
    several: :mod:`agi_router.callbacks.redis_store`)."""

    recovered: int

    def add(self, *, call_id: str, caller: str, number: str, queue: str, motive: str, now: float) -> int: ...
    def due(self, now: float, limit: int = 50) -> list[Callback]: ...
    def get(self, callback_id: int) -> Callback | None: ...
    def count(self, status: str) -> int: ...
    def mark_placing(self, callback_id: int, now: float | None = None) -> bool: ...
    def mark_placed(self, callback_id: int) -> None: ...
    def mark_failed(self, callback_id: int, error: str, *, retry_at: float | None, counted: bool = True) -> None: ...
    def expire(self, older_than: float) -> int: ...
    def close(self) -> None: ...


class CallbackStore:
    def __init__(self, path: Path, key: bytes) -> None:
        self.path = Path(path)
        self._aead = AESGCM(hmac.new(key, b"agi-router callbacks v1", hashlib.sha256).digest())
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            private_file(self.path)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=5.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # an accepted callback must survive a crash
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(
                f"cannot open the callback store: {exc}; it must be a writable SQLite file in a writable folder",
                file=str(self.path),
            ) from None
        with self._lock:
            self.recovered = self._db.execute("UPDATE callbacks SET status='pending' WHERE status='placing'").rowcount

    def _seal(self, number: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, number.encode(), None)

    def _open(self, blob: bytes | None) -> str:
        if not blob:
            return ""
        return self._aead.decrypt(blob[:12], blob[12:], None).decode()

    def add(self, *, call_id: str, caller: str, number: str, queue: str, motive: str, now: float) -> int:
        """Record an accepted callback; a caller already waiting for one in that queue keeps the first.
        Raises :class:`~agi_router.exceptions.StateStoreError` when SQLite cannot (disk full, file gone):
        the caller is then never promised a call (the same contract as the Redis store)."""
        try:
            with self._lock:
                row = self._db.execute(
                    "SELECT id FROM callbacks WHERE caller=? AND queue=? AND status IN ('pending','placing')",
                    (caller, queue),
                ).fetchone()
                if row is not None:
                    return int(row[0])
                cur = self._db.execute(
                    "INSERT INTO callbacks (created_at, call_id, caller, number, queue, motive, next_attempt_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (now, call_id, caller, self._seal(number), queue, motive, now),
                )
                return int(cur.lastrowid or 0)
        except sqlite3.Error as exc:
            raise StateStoreError(f"callback store (SQLite) could not record a callback: {exc}") from None

    def _row(self, r: tuple[Any, ...]) -> Callback:
        return Callback(
            int(r[0]),
            float(r[1]),
            str(r[2]),
            str(r[3]),
            self._open(r[4]),
            str(r[5]),
            str(r[6]),
            str(r[7]),
            int(r[8]),
            float(r[9]),
            str(r[10]),
        )

    _COLS = "id, created_at, call_id, caller, number, queue, motive, status, attempts, next_attempt_at, last_error"

    def due(self, now: float, limit: int = 50) -> list[Callback]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {self._COLS} FROM callbacks WHERE status='pending' AND next_attempt_at <= ? "
                "ORDER BY created_at LIMIT ?",
                (now, limit),
            ).fetchall()
        return [self._row(r) for r in rows]

    def get(self, callback_id: int) -> Callback | None:
        with self._lock:
            r = self._db.execute(f"SELECT {self._COLS} FROM callbacks WHERE id=?", (callback_id,)).fetchone()
        return self._row(r) if r else None

    def count(self, status: str) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM callbacks WHERE status=?", (status,)).fetchone()[0])

    def mark_placing(self, callback_id: int, now: float | None = None) -> bool:
        """Claim a pending callback (``now`` is for stores with leases; one router here)."""
        with self._lock:
            return bool(
                self._db.execute(
                    "UPDATE callbacks SET status='placing', attempts=attempts+1 WHERE id=? AND status='pending'",
                    (callback_id,),
                ).rowcount
            )

    def mark_placed(self, callback_id: int) -> None:
        self._finish(callback_id, "placed", "")

    def mark_failed(self, callback_id: int, error: str, *, retry_at: float | None, counted: bool = True) -> None:
        """A failed attempt: back to pending at ``retry_at``, or ``failed`` for good when it is None;
        ``counted=False``: the attempt does not count (the PBX was lost, not the caller)."""
        if retry_at is None:
            self._finish(callback_id, "failed", error)
            return
        with self._lock:
            self._db.execute(
                "UPDATE callbacks SET status='pending', next_attempt_at=?, last_error=?, "
                "attempts=attempts-? WHERE id=?",
                (retry_at, error[:200], 0 if counted else 1, callback_id),
            )

    def expire(self, older_than: float) -> int:
        with self._lock:
            return int(
                self._db.execute(
                    "UPDATE callbacks SET status='expired', number=NULL WHERE status='pending' AND created_at < ?",
                    (older_than,),
                ).rowcount
            )

    def _finish(self, callback_id: int, status: str, error: str) -> None:
        with self._lock:
            self._db.execute(  # the number is wiped: nothing left to call
                "UPDATE callbacks SET status=?, last_error=?, number=NULL WHERE id=?",
                (status, error[:200], callback_id),
            )

    def close(self) -> None:
        self._db.close()
