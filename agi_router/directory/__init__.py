"""Account directory backends: SQLite (embedded default, CSV import) and HTTP (budget + cache)."""

from .base import AccountDirectory, parse_last_login
from .http import HTTPDirectory
from .sqlite import ImportReport, SQLiteDirectory, import_csv

__all__ = ["AccountDirectory", "HTTPDirectory", "ImportReport", "SQLiteDirectory", "import_csv", "parse_last_login"]
