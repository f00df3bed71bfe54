"""Caller pseudonymisation: a keyed hash (HMAC-SHA256) of the E.164 number.

The clear number lives only in memory for the length of a call. State, logs, audit lines,
metrics and the embedded directory hold the pseudonym ``c-<24 hex>`` (96 bits). Without the
key a pseudonym cannot be reversed by enumerating the ~10^9 French numbers.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from .exceptions import ConfigError
from .numbers import is_withheld, normalize_e164

__all__ = ["WITHHELD", "Pseudonymizer", "load_or_create_key"]

WITHHELD = "c-withheld"


class Pseudonymizer:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ConfigError("the pseudonymisation key must be at least 16 bytes", key="privacy.key")
        self._key = key

    def of_e164(self, e164: str) -> str:
        digest = hmac.new(self._key, e164.encode("ascii"), hashlib.sha256).hexdigest()
        return "c-" + digest[:24]

    def subkey(self, purpose: bytes) -> bytes:
        """A key for another use (encryption at rest) derived from this one: one secret to manage."""
        return hmac.new(self._key, b"agi-router subkey " + purpose, hashlib.sha256).digest()

    def of_caller_id(self, raw: str | None) -> str:
        """Pseudonym of a caller ID as Asterisk gives it; withheld or unparsable -> ``c-withheld``
        (such callers have no history and no account, so they are never deflected or hung up on)."""
        if raw is None or is_withheld(raw):
            return WITHHELD
        try:
            return self.of_e164(normalize_e164(raw))
        except ValueError:
            return WITHHELD


def private_file(path: Path) -> None:
    """Create ``path`` empty and readable by this user only (0600) if it does not exist yet: the stores and
    the audit trail (pseudonyms, sealed numbers) are not for the other users of the machine. An existing
    file keeps the mode its operator gave it; SQLite gives its -wal/-shm files the database's mode."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


def load_or_create_key(path: Path) -> bytes:
    """Read the key file, or create a random 32-byte key (64 hex digits, mode 0600) on first start.
    Also used for the AMI secret shared by the router and Asterisk (``agi_router.asterisk_setup``)."""
    try:
        data = path.read_bytes().strip()
    except FileNotFoundError:
        key = secrets.token_hex(32).encode()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it meanwhile: use theirs
            return load_or_create_key(path)
        except OSError as exc:
            raise ConfigError(f"cannot create the key file: {exc.strerror}", file=str(path)) from exc
        with os.fdopen(fd, "wb") as fh:
            fh.write(key + b"\n")
        return key
    except OSError as exc:
        raise ConfigError(f"cannot read the key file: {exc}", file=str(path)) from exc
    if len(data) < 16:
        raise ConfigError("key file holds fewer than 16 bytes", file=str(path))
    return data
