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
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from ..exceptions import ConfigError, DirectoryError, DirectoryImportError, DirectoryTimeout
from ..numbers import normalize_e164
from ..policy.model import AccountFacts
from ..privacy import Pseudonymizer, private_file
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
        private_file(path)
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


def import_csv(
    csv_path: Path,
    db_path: Path,
    pseudonymizer: Pseudonymizer,
    *,
    replace: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Stream the CSV into the directory in one transaction: every row, or nothing.

    Constant memory whatever the file's size: rows are checked and written in batches to a staging table
    inside the transaction (a duplicate number is found by the staging table's key, with the line it first
    appeared on); at the end the staging rows replace or update the accounts and the transaction commits —
    or, if any row was bad, rolls back. ``progress(rows)`` is called every :data:`_PROGRESS_EVERY` rows.
    Raises :class:`DirectoryImportError` listing each bad row by line number (the first 1000; then it says
    it stopped counting).
    """
    f = str(csv_path)
    try:
        fh = open(csv_path, "rb")  # decoded line by line below: an encoding error then has a line number
    except OSError as exc:
        raise DirectoryImportError(f, [(0, f"cannot read: {exc.strerror or exc}")]) from None
    errors: list[tuple[int, str]] = []
    rows = with_account = 0
    try:
        conn = _connect(Path(db_path))
    except BaseException:
        fh.close()
        raise
    try:
        if not replace:  # adding rows under another key would mix two pseudonym spaces
            _check_key(conn, key_fingerprint(pseudonymizer), Path(db_path))
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TEMP TABLE staging (caller TEXT PRIMARY KEY, line INTEGER, last_login TEXT, flags TEXT) "
                "WITHOUT ROWID"
            )
            with fh:
                for batch in _validated_batches(fh, f, pseudonymizer, errors):
                    if errors:
                        continue  # nothing will be imported: only keep finding (and counting) errors
                    _stage(conn, batch, errors)
                    rows += len(batch)
                    with_account += sum(1 for b in batch if b[2])
                    if progress is not None and rows // _PROGRESS_EVERY != (rows - len(batch)) // _PROGRESS_EVERY:
                        progress(rows)
            if errors:
                raise DirectoryImportError(f, errors)
            if replace:  # every row from this file, under this key: the fingerprint follows
                conn.execute("DELETE FROM accounts")
                conn.execute(
                    "INSERT INTO meta VALUES ('key_fingerprint', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    (key_fingerprint(pseudonymizer),),
                )
            conn.execute(
                "INSERT INTO accounts (caller, last_login, flags) SELECT caller, last_login, flags FROM staging "
                "WHERE true ON CONFLICT(caller) DO UPDATE SET last_login=excluded.last_login, flags=excluded.flags"
            )
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            digest = _sha256_file(Path(csv_path))
            conn.executemany(
                "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                [("last_import_at", stamp), ("last_import_sha256", digest), ("last_import_rows", str(rows))],
            )
            conn.execute("DROP TABLE staging")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot write the directory database: {exc}", file=str(db_path)) from None
    finally:
        conn.close()
        fh.close()
    return ImportReport(rows, with_account, replace)


_BATCH = 10_000
_PROGRESS_EVERY = 100_000
#: (pseudonym, line, last_login ISO or "", flags)
_Row = tuple[str, int, str, str]


def _validated_batches(
    fh: BinaryIO, f: str, pseudonymizer: Pseudonymizer, errors: list[tuple[int, str]]
) -> Iterator[list[_Row]]:
    """Check each row; yield the good ones in batches; append ``(line, message)`` for each bad one."""
    not_utf8: set[int] = set()
    reader = csv.reader(_utf8_lines(fh, not_utf8))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise DirectoryImportError(f, [(1, f"CSV syntax: {exc}")]) from None
    if not_utf8:
        raise DirectoryImportError(f, [(1, "not UTF-8 text: save the file as UTF-8 (CSV UTF-8)")])
    if header is None:
        raise DirectoryImportError(f, [(1, "empty file: a header row number,last_login,flags is required")])
    cols = [h.strip().lower() for h in header]
    if "number" not in cols or "last_login" not in cols:
        raise DirectoryImportError(f, [(1, f"header must name the columns number,last_login[,flags]; got {header!r}")])
    unknown = [c for c in cols if c not in ("number", "last_login", "flags")]
    if unknown:
        raise DirectoryImportError(f, [(1, f"unknown column(s) {unknown}")])
    i_num, i_last = cols.index("number"), cols.index("last_login")
    i_flags = cols.index("flags") if "flags" in cols else None
    batch: list[_Row] = []

    def bad(line: int, msg: str) -> bool:
        """Record an error; False once 1000 are recorded (then the file is not read further)."""
        if len(errors) >= _MAX_ERRORS:
            return False
        errors.append((line, msg))
        if len(errors) == _MAX_ERRORS:
            errors.append((line, f"stopped counting after {_MAX_ERRORS} bad rows; there may be more"))
            return False
        return True

    while True:
        try:
            row = next(reader, None)
        except csv.Error as exc:
            if not bad(reader.line_num, f"CSV syntax: {exc}"):
                break
            continue
        if row is None:
            break
        line = reader.line_num
        if line in not_utf8:
            if not bad(line, "not UTF-8 text on this line: save the file as UTF-8 (CSV UTF-8)"):
                break
            continue
        if not row or all(not c.strip() for c in row):
            continue
        msg = ""
        if len(row) != len(cols):
            msg = f"{len(row)} field(s), the header has {len(cols)}"
        else:
            try:
                e164 = normalize_e164(row[i_num])
                try:
                    last = parse_last_login(row[i_last])
                except ValueError as exc:
                    msg = f"last_login: {exc}"
            except ValueError as exc:
                msg = f"number: {exc}"
        if not msg:
            flags = [x.strip().lower() for x in (row[i_flags] if i_flags is not None else "").split(";")]
            flags = [x for x in flags if x]
            wrong = [x for x in flags if not _FLAG.match(x)]
            if wrong:
                msg = f"flags: {wrong} (letters, digits, '_' and '-' only, ';'-separated)"
        if msg:
            if not bad(line, msg):
                break
            continue
        batch.append((pseudonymizer.of_e164(e164), line, last.isoformat() if last else "", ";".join(sorted(flags))))
        if len(batch) >= _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _utf8_lines(fh: BinaryIO, not_utf8: set[int]) -> Iterator[str]:
    """The file's lines as text (a UTF-8 BOM dropped); the numbers of lines that are not UTF-8 go into
    ``not_utf8`` (their text, with replacement characters, is only used to keep counting lines)."""
    for n, raw in enumerate(fh, 1):
        try:
            yield raw.decode("utf-8-sig" if n == 1 else "utf-8")
        except UnicodeDecodeError:
            not_utf8.add(n)
            yield raw.decode("utf-8", errors="replace")


def _stage(conn: sqlite3.Connection, batch: list[_Row], errors: list[tuple[int, str]]) -> None:
    """Insert a batch into the staging table; a number already staged is an error with both lines."""
    try:
        conn.executemany("INSERT INTO staging VALUES (?, ?, ?, ?)", batch)
        return
    except sqlite3.IntegrityError:
        pass
    for caller, line, last, flags in batch:  # slow path, only for a batch holding a duplicate
        try:
            conn.execute("INSERT INTO staging VALUES (?, ?, ?, ?)", (caller, line, last, flags))
        except sqlite3.IntegrityError:
            first = conn.execute("SELECT line FROM staging WHERE caller=?", (caller,)).fetchone()
            if len(errors) < _MAX_ERRORS:
                errors.append((line, f"this number is already given on line {first[0]}"))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
