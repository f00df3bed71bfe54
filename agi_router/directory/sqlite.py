"""The embedded directory: one SQLite file (WAL), keyed by caller pseudonym.

No clear number is stored: ``agi-router directory import`` hashes each number with the
router's pseudonymisation key. The key's fingerprint is stored too, so a router started with
another key refuses the file instead of silently finding nobody.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import re
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..exceptions import ConfigError, DirectoryError, DirectoryImportError, DirectoryTimeout
from ..numbers import normalize_e164
from ..policy.model import AccountFacts
from ..privacy import Pseudonymizer
from .base import parse_last_login

__all__ = ["ImportReport", "SQLiteDirectory", "import_csv"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    caller TEXT PRIMARY KEY,
    last_login TEXT,
    flags TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_FLAG = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
_MAX_ERRORS = 1000


def key_fingerprint(pseudonymizer: Pseudonymizer) -> str:
    return pseudonymizer.of_e164("+0fingerprint")


def _connect(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
    except (sqlite3.Error, OSError) as exc:
        raise ConfigError(
            f"cannot open the directory database: {exc}; it must be a writable SQLite file in a writable folder "
            "(or set [directory] sqlite_path)",
            file=str(path),
        ) from None
    return conn


def _check_key(conn: sqlite3.Connection, fingerprint: str, path: Path) -> None:
    row = conn.execute("SELECT value FROM meta WHERE key='key_fingerprint'").fetchone()
    if row is None:
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('key_fingerprint', ?)", (fingerprint,))
    elif row[0] != fingerprint:
        raise ConfigError(
            "this directory was imported with another pseudonymisation key: import the CSV again with "
            "`agi-router directory import --replace FILE` (every row then comes from that file, under this key), "
            "or run the router with the key it was imported with",
            file=str(path),
        )


class SQLiteDirectory:
    def __init__(self, path: Path, pseudonymizer: Pseudonymizer, *, timeout: float = 0.05) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._conn = _connect(self.path)
        _check_key(self._conn, key_fingerprint(pseudonymizer), self.path)
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="directory")

    def _lookup_sync(self, pseudonym: str) -> AccountFacts:
        with self._lock:
            row = self._conn.execute("SELECT last_login, flags FROM accounts WHERE caller = ?", (pseudonym,)).fetchone()
        if row is None:
            return AccountFacts.none()
        last = parse_last_login(row[0] or "")
        flags = frozenset(f for f in row[1].split(";") if f)
        return AccountFacts(known=True, exists=last is not None, last_login=last, flags=flags)

    async def lookup(self, e164: str | None, pseudonym: str) -> AccountFacts:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                return await loop.run_in_executor(self._pool, self._lookup_sync, pseudonym)
        except TimeoutError:
            raise DirectoryTimeout(f"sqlite directory did not answer within {self.timeout * 1000:.0f} ms") from None
        except (sqlite3.Error, ValueError) as exc:
            raise DirectoryError(f"sqlite directory lookup failed: {exc}") from exc

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM accounts").fetchone()[0])

    async def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._conn.close()


@dataclass(frozen=True, slots=True)
class ImportReport:
    rows: int
    with_account: int
    replaced: bool


def import_csv(csv_path: Path, db_path: Path, pseudonymizer: Pseudonymizer, *, replace: bool = False) -> ImportReport:
    """Validate every row first, then write them all in one transaction, or nothing.

    Raises :class:`DirectoryImportError` listing each bad row by line number.
    """
    f = str(csv_path)
    errors: list[tuple[int, str]] = []
    rows: dict[str, tuple[str, str]] = {}
    first_line: dict[str, int] = {}
    try:
        fh = open(csv_path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise DirectoryImportError(f, [(0, f"cannot read: {exc.strerror or exc}")]) from None
    with fh:
        try:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise DirectoryImportError(f, [(1, "empty file: a header row number,last_login,flags is required")])
            cols = [h.strip().lower() for h in header]
            if "number" not in cols or "last_login" not in cols:
                raise DirectoryImportError(
                    f, [(1, f"header must name the columns number,last_login[,flags]; got {header!r}")]
                )
            unknown = [c for c in cols if c not in ("number", "last_login", "flags")]
            if unknown:
                raise DirectoryImportError(f, [(1, f"unknown column(s) {unknown}")])
            i_num, i_last = cols.index("number"), cols.index("last_login")
            i_flags = cols.index("flags") if "flags" in cols else None
            for row in reader:
                line = reader.line_num
                if len(errors) >= _MAX_ERRORS:
                    break
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != len(cols):
                    errors.append((line, f"{len(row)} field(s), the header has {len(cols)}"))
                    continue
                try:
                    e164 = normalize_e164(row[i_num])
                except ValueError as exc:
                    errors.append((line, f"number: {exc}"))
                    continue
                try:
                    last = parse_last_login(row[i_last])
                except ValueError as exc:
                    errors.append((line, f"last_login: {exc}"))
                    continue
                flags = [x.strip().lower() for x in (row[i_flags] if i_flags is not None else "").split(";")]
                flags = [x for x in flags if x]
                bad = [x for x in flags if not _FLAG.match(x)]
                if bad:
                    errors.append((line, f"flags: {bad} (letters, digits, '_' and '-' only, ';'-separated)"))
                    continue
                if e164 in first_line:
                    errors.append((line, f"number {row[i_num].strip()!r} already given on line {first_line[e164]}"))
                    continue
                first_line[e164] = line
                rows[pseudonymizer.of_e164(e164)] = (last.isoformat() if last else "", ";".join(sorted(flags)))
        except csv.Error as exc:
            errors.append((reader.line_num, f"CSV syntax: {exc}"))
        except UnicodeDecodeError as exc:
            errors.append((0, f"not UTF-8 text: {exc}"))
    if errors:
        raise DirectoryImportError(f, errors)

    conn = _connect(Path(db_path))
    try:
        if not replace:  # adding rows under another key would mix two pseudonym spaces
            _check_key(conn, key_fingerprint(pseudonymizer), Path(db_path))
        conn.execute("BEGIN IMMEDIATE")
        try:
            if replace:  # every row from this file, under this key: the fingerprint follows
                conn.execute("DELETE FROM accounts")
                conn.execute(
                    "INSERT INTO meta VALUES ('key_fingerprint', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    (key_fingerprint(pseudonymizer),),
                )
            conn.executemany(
                "INSERT INTO accounts (caller, last_login, flags) VALUES (?, ?, ?) "
                "ON CONFLICT(caller) DO UPDATE SET last_login=excluded.last_login, flags=excluded.flags",
                ((k, v[0], v[1]) for k, v in rows.items()),
            )
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            digest = hashlib.sha256(Path(csv_path).read_bytes()).hexdigest()
            conn.executemany(
                "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                [("last_import_at", stamp), ("last_import_sha256", digest), ("last_import_rows", str(len(rows)))],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()
    return ImportReport(len(rows), sum(1 for v in rows.values() if v[0]), replace)
