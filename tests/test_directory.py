"""Account directory: CSV import (all or nothing, errors by line), SQLite lookups, HTTP backend."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import date
from pathlib import Path

import httpx
import pytest

from agi_router.cli import main
from agi_router.directory.http import HTTPDirectory
from agi_router.directory.sqlite import SQLiteDirectory, import_csv
from agi_router.exceptions import ConfigError, DirectoryError, DirectoryImportError, DirectoryTimeout
from agi_router.policy.model import AccountFacts
from agi_router.privacy import Pseudonymizer

GOOD = """number,last_login,flags
06 12 34 56 78,2026-10-01,
+33 6 98 76 54 32,2026-01-15T09:30:00Z,fragile;no_internet
0033145678901,,
0692123456,2025-03-01,
"""


def write(tmp_path: Path, text: str, name: str = "in.csv") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


async def test_import_and_lookup(tmp_path: Path, pseudonymizer: Pseudonymizer) -> None:
    db = tmp_path / "d.sqlite3"
    report = import_csv(write(tmp_path, GOOD), db, pseudonymizer)
    assert (report.rows, report.with_account) == (4, 3)
    d = SQLiteDirectory(db, pseudonymizer)
    try:

        def p(n: str) -> str:
            return pseudonymizer.of_e164(n)

        assert await d.lookup(None, p("+33612345678")) == AccountFacts(True, True, date(2026, 10, 1))
        got = await d.lookup(None, p("+33698765432"))
        assert got.last_login == date(2026, 1, 15) and got.flags == {"fragile", "no_internet"}
        assert await d.lookup(None, p("+33145678901")) == AccountFacts(True, False, None)
        assert (await d.lookup(None, p("+262692123456"))).last_login == date(2025, 3, 1)
        assert await d.lookup(None, p("+33600000000")) == AccountFacts.none()
    finally:
        await d.close()


def test_no_clear_number_is_stored(tmp_path: Path, pseudonymizer: Pseudonymizer) -> None:
    db = tmp_path / "d.sqlite3"
    import_csv(write(tmp_path, GOOD), db, pseudonymizer)
    blob = (
        db.read_bytes() + (tmp_path / "d.sqlite3-wal").read_bytes()
        if (tmp_path / "d.sqlite3-wal").exists()
        else db.read_bytes()
    )
    for needle in (b"612345678", b"698765432", b"145678901"):
        assert needle not in blob


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("number,last_login\n0612345678,2026-13-01\n", 2, "last_login"),
        ("number,last_login\n0612345678,2026-01-01\n06123,2026-01-01\n", 3, "10 digits"),
        ("number,last_login\n0612345678,2026-01-01\n06 12 34 56 78,2026-02-01\n", 3, "already given on line 2"),
        ("number,last_login,flags\n0612345678,,bad flag!\n", 2, "flags"),
        ("number,last_login\n0612345678,2026-01-01,extra\n", 2, "3 field(s)"),
        ("phone,last\n0612345678,2026-01-01\n", 1, "header must name"),
        ("number,last_login,color\n0612345678,2026-01-01,red\n", 1, "unknown column"),
        ("", 1, "empty file"),
    ],
)
def test_import_errors_name_the_line_and_import_nothing(
    tmp_path: Path, pseudonymizer: Pseudonymizer, text: str, line: int, message: str
) -> None:
    db = tmp_path / "d.sqlite3"
    import_csv(write(tmp_path, "number,last_login\n0711111111,2026-01-01\n", "first.csv"), db, pseudonymizer)
    with pytest.raises(DirectoryImportError) as info:
        import_csv(write(tmp_path, text), db, pseudonymizer, replace=True)
    assert any(ln == line and message in msg for ln, msg in info.value.errors), info.value.errors
    assert f"in.csv:{line}:" in str(info.value)
    with sqlite3.connect(db) as conn:  # nothing was replaced or added
        assert conn.execute("SELECT count(*) FROM accounts").fetchone()[0] == 1


def test_all_bad_rows_are_reported_at_once(tmp_path: Path, pseudonymizer: Pseudonymizer) -> None:
    text = "number,last_login\nx,2026-01-01\n0612345678,yesterday\n0612345679,2026-01-01\ny,\n"
    with pytest.raises(DirectoryImportError) as info:
        import_csv(write(tmp_path, text), tmp_path / "d.sqlite3", pseudonymizer)
    assert [ln for ln, _ in info.value.errors] == [2, 3, 5]


def test_bom_and_blank_lines(tmp_path: Path, pseudonymizer: Pseudonymizer) -> None:
    p = tmp_path / "bom.csv"
    p.write_bytes("\ufeffnumber,last_login\r\n0612345678,2026-01-01\r\n\r\n".encode())
    assert import_csv(p, tmp_path / "d.sqlite3", pseudonymizer).rows == 1


def test_replace_versus_merge(tmp_path: Path, pseudonymizer: Pseudonymizer) -> None:
    db = tmp_path / "d.sqlite3"
    import_csv(write(tmp_path, GOOD), db, pseudonymizer)
    import_csv(write(tmp_path, "number,last_login\n0711111111,2026-01-01\n", "b.csv"), db, pseudonymizer)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM accounts").fetchone()[0] == 5
    import_csv(write(tmp_path, "number,last_login\n0711111111,2026-01-01\n", "b.csv"), db, pseudonymizer, replace=True)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM accounts").fetchone()[0] == 1


def test_other_key_is_refused(tmp_path: Path, pseudonymizer: Pseudonymizer) -> None:
    db = tmp_path / "d.sqlite3"
    import_csv(write(tmp_path, GOOD), db, pseudonymizer)
    with pytest.raises(ConfigError, match="another pseudonymisation key"):
        SQLiteDirectory(db, Pseudonymizer(b"another-key-0123456789"))


async def test_a_new_key_takes_over_with_replace_and_only_with_it(tmp_path: Path, pseudonymizer: Pseudonymizer) -> None:
    """The refusal's advice leads somewhere: --replace re-imports under the new key; a plain import cannot mix
    two pseudonym spaces."""
    db = tmp_path / "d.sqlite3"
    csv_file = write(tmp_path, GOOD)
    import_csv(csv_file, db, pseudonymizer)
    new = Pseudonymizer(b"another-key-0123456789")
    with pytest.raises(ConfigError, match=r"import --replace FILE"):
        import_csv(csv_file, db, new)
    report = import_csv(csv_file, db, new, replace=True)
    assert report.replaced and report.rows >= 1
    d = SQLiteDirectory(db, new)  # the router with the new key opens it and finds the caller
    try:
        facts = await d.lookup("+33612345678", new.of_e164("+33612345678"))
    finally:
        await d.close()
    assert facts.known and facts.exists and facts.last_login is not None
    with pytest.raises(ConfigError, match="another pseudonymisation key"):
        SQLiteDirectory(db, pseudonymizer)  # and the old key no longer matches


def test_cli_import(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGI_ROUTER_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("AGI_ROUTER_CONFIG", raising=False)
    assert main(["directory", "import", str(write(tmp_path, GOOD))]) == 0
    assert "imported 4 number(s), 3 with an online account" in capsys.readouterr().out
    assert (tmp_path / "var" / "directory.sqlite3").exists()
    assert (tmp_path / "var" / "pseudonym.key").stat().st_mode & 0o077 == 0
    bad = write(tmp_path, "number,last_login\nnope,2026-01-01\n", "bad.csv")
    assert main(["directory", "import", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "import refused" in err and "bad.csv:2: number" in err


# -- HTTP backend -----------------------------------------------------------------------------


def handler_from(routes: dict[str, httpx.Response], seen: list[str]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return routes.get(request.url.path, httpx.Response(404))

    return httpx.MockTransport(handle)


async def test_http_answers_and_cache() -> None:
    seen: list[str] = []
    routes = {
        "/accounts/c-1": httpx.Response(200, json={"last_login": "2026-10-01", "flags": ["fragile"]}),
        "/accounts/c-2": httpx.Response(200, json={"last_login": None}),
    }
    d = HTTPDirectory("http://dir.test", transport=handler_from(routes, seen))
    try:
        a = await d.lookup("+33612345678", "c-1")
        assert (a.exists, a.last_login, a.flags) == (True, date(2026, 10, 1), frozenset({"fragile"}))
        assert (await d.lookup(None, "c-2")) == AccountFacts(True, False, None)
        assert (await d.lookup(None, "c-3")) == AccountFacts.none()
        await d.lookup("+33612345678", "c-1")
        assert seen == ["/accounts/c-1", "/accounts/c-2", "/accounts/c-3"]
        assert d.hits == 1
    finally:
        await d.close()


async def test_http_identify_by_e164() -> None:
    seen: list[str] = []
    d = HTTPDirectory("http://dir.test", identify_by="e164", transport=handler_from({}, seen))
    try:
        await d.lookup("+33612345678", "c-1")
        assert seen == ["/accounts/+33612345678"]
    finally:
        await d.close()


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(500), "answered 500"),
        (httpx.Response(200, text="<html>"), "not JSON"),
        (httpx.Response(200, json=[1]), "not a JSON object"),
        (httpx.Response(200, json={"last_login": 5}), "last_login must be"),
        (httpx.Response(200, json={"last_login": "01/02/2026"}), "ISO 8601"),
        (httpx.Response(200, json={"last_login": None, "flags": "x"}), "flags must be"),
    ],
)
async def test_http_bad_answers_are_errors(response: httpx.Response, message: str) -> None:
    d = HTTPDirectory("http://dir.test", transport=httpx.MockTransport(lambda r: response))
    try:
        with pytest.raises(DirectoryError, match=message):
            await d.lookup(None, "c-1")
        with pytest.raises(DirectoryError):  # errors are not cached
            await d.lookup(None, "c-1")
    finally:
        await d.close()


async def test_http_timeout_against_a_real_stalled_server() -> None:
    writers: list[asyncio.StreamWriter] = []

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await asyncio.sleep(5)

    server = await asyncio.start_server(stall, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    d = HTTPDirectory(f"http://127.0.0.1:{port}", timeout=0.1)
    try:
        with pytest.raises(DirectoryTimeout, match="100 ms"):
            await d.lookup(None, "c-1")
    finally:
        await d.close()
        for w in writers:
            w.close()
        server.close()


async def test_http_unreachable() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = HTTPDirectory(f"http://127.0.0.1:{port}", timeout=0.5)
    try:
        with pytest.raises(DirectoryError, match="unreachable"):
            await d.lookup(None, "c-1")
    finally:
        await d.close()


def test_a_file_that_is_not_utf8_names_the_line(tmp_path: Path, pseudonymizer: Pseudonymizer) -> None:
    p = tmp_path / "latin1.csv"
    p.write_bytes("number,last_login,flags\n0612345678,2026-10-01,\n0698765432,2026-10-01,accompagné\n".encode("latin-1"))
    with pytest.raises(DirectoryImportError) as ei:
        import_csv(p, tmp_path / "d.sqlite3", pseudonymizer)
    assert ei.value.errors == ((3, "not UTF-8 text on this line: save the file as UTF-8 (CSV UTF-8)"),)


def test_a_thousand_bad_rows_say_counting_stopped(tmp_path: Path, pseudonymizer: Pseudonymizer) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("number,last_login,flags\n" + "not-a-number,2026-10-01,\n" * 1500)
    with pytest.raises(DirectoryImportError) as ei:
        import_csv(p, tmp_path / "d.sqlite3", pseudonymizer)
    assert len(ei.value.errors) == 1001
    assert ei.value.errors[-1][1] == "stopped counting after 1000 bad rows; there may be more"
    assert str(ei.value).startswith("1000+ bad rows (counting stopped there), nothing imported:")


def test_a_large_import_streams_in_constant_memory_all_or_nothing(
    tmp_path: Path, pseudonymizer: Pseudonymizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tracemalloc

    import agi_router.directory.sqlite as directory_sqlite

    monkeypatch.setattr(directory_sqlite, "_PROGRESS_EVERY", 20_000)
    n = 50_000
    p = tmp_path / "big.csv"
    with p.open("w") as fh:
        fh.write("number,last_login,flags\n")
        for i in range(n):
            fh.write(f"06{i:08d},2026-10-01,\n")
    db = tmp_path / "d.sqlite3"
    seen: list[int] = []
    tracemalloc.start()
    try:
        report = import_csv(p, db, pseudonymizer, progress=seen.append)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.rows == n and seen == [20_000, 40_000]
    # all rows in memory at once took ~420 bytes each (~20 MB here, 960 MB for 2.3 M rows); batches of
    # 10,000 stay at a few MB whatever the size of the file
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MB"
    # a duplicate in the last row: nothing of the 50,001 rows is imported, and both lines are named
    with p.open("a") as fh:
        fh.write("0600000007,2026-11-01,\n")
    with pytest.raises(DirectoryImportError) as ei:
        import_csv(p, db, pseudonymizer, replace=True)
    assert ei.value.errors == ((n + 2, "this number is already given on line 9"),)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM accounts").fetchone()[0] == n  # the previous import, intact
