"""The line's SIP accounts: who may register with Asterisk (agents, softphones), with generated passwords.

The accounts live in one JSON file owned by the router (``[sip] accounts_file``, default
``var/sip/accounts.json``, mode 0600): created on the first ``agi-router asterisk setup`` with the shipped
roster (a test softphone and three agents, each with the skill queues of ``asterisk/queues.conf``'s
demonstration), each with a random password; ``agi-router asterisk agent add NAME --queue Q[:PENALTY]``
adds one. Asterisk gets them through the include that :mod:`.pjsip` renders from this file: no SIP
password is ever written into the repository.

A password is a *placeholder* when it is short or one of the well-known defaults (``change-me…``,
``1234``, the account's own name…): setup refuses to install one unless SIP listens on loopback only.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..exceptions import ConfigError

__all__ = ["DEFAULT_ROSTER", "AccountBook", "Membership", "SipAccount", "generate_password", "is_placeholder"]

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
ROLES = ("agent", "softphone")
MIN_PASSWORD = 16
_PASSWORD_RE = re.compile(r"^[A-Za-z0-9._~+/=@%^-]+$")  # nothing that ends a pjsip.conf value (; # spaces)
_WELL_KNOWN = frozenset(
    {"password", "secret", "admin", "1234", "12345", "123456", "0000", "1111", "pass", "sip", "asterisk", "test"}
)
FORMAT = 1


def generate_password() -> str:
    """24 URL-safe characters (144 random bits): no character pjsip.conf or a softphone's form mangles."""
    return secrets.token_urlsafe(18)


def is_placeholder(password: str, name: str = "") -> bool:
    low = password.lower()
    return (
        len(password) < MIN_PASSWORD
        or low.startswith("change-me")
        or low in _WELL_KNOWN
        or (bool(name) and name.lower() in low)
    )


@dataclass(frozen=True, slots=True)
class Membership:
    queue: str
    penalty: int = 0  # app_queue's member penalty: 0 is called first

    @classmethod
    def parse(cls, text: str) -> Membership:
        """``remboursements`` or ``accueil:5``."""
        queue, _, pen = text.partition(":")
        if not queue or (pen and not pen.isdigit()):
            raise ConfigError(f"queue membership {text!r}: write QUEUE or QUEUE:PENALTY (e.g. accueil:5)")
        return cls(queue, int(pen or 0))


@dataclass(frozen=True, slots=True)
class SipAccount:
    name: str  # the SIP user name, the endpoint and the queue member interface (PJSIP/<name>)
    role: str  # agent | softphone
    password: str
    queues: tuple[Membership, ...] = ()
    callerid: str = ""  # softphones: the caller ID Asterisk presents for them ("Name" <number>)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"name": self.name, "role": self.role, "password": self.password}
        if self.queues:
            out["queues"] = [f"{m.queue}:{m.penalty}" for m in self.queues]
        if self.callerid:
            out["callerid"] = self.callerid
        return out


def _agent(name: str, *queues: str) -> SipAccount:
    return SipAccount(name, "agent", "", tuple(Membership.parse(q) for q in queues))


# The demonstration roster of the shipped stack (what SIPp agents and the tests register as): the skill
# queues of the 3646 catalogue, each agent also on the reception queue with penalty 5.
DEFAULT_ROSTER: tuple[SipAccount, ...] = (
    SipAccount("softphone", "softphone", "", (), '"Softphone" <0612345678>'),
    _agent("agent1", "remboursements", "indemnites", "maternite", "accueil:5"),
    _agent("agent2", "remboursements", "droits", "accueil:5"),
    _agent("agent3", "indemnites", "droits", "risques_pro", "accueil:5"),
)


@dataclass
class AccountBook:
    """The accounts file, read and written whole (atomic replace, mode 0600)."""

    path: Path
    accounts: dict[str, SipAccount] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> AccountBook:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read the SIP accounts: {exc.strerror}", file=str(path)) from None
        except ValueError as exc:
            raise ConfigError(f"the SIP accounts file is not valid JSON ({exc}): restore it from a backup",
                              file=str(path)) from None  # fmt: skip
        book = cls(path)
        rows = data.get("accounts") if isinstance(data, dict) else None
        if not isinstance(rows, list):
            raise ConfigError('the SIP accounts file has no "accounts" list', file=str(path))
        for i, row in enumerate(rows):
            where = f"accounts[{i}]"
            if not isinstance(row, dict):
                raise ConfigError("an account must be an object", file=str(path), key=where)
            try:
                acc = SipAccount(
                    name=str(row["name"]),
                    role=str(row.get("role", "agent")),
                    password=str(row["password"]),
                    queues=tuple(Membership.parse(str(q)) for q in row.get("queues", [])),
                    callerid=str(row.get("callerid", "")),
                )
            except KeyError as exc:
                raise ConfigError(f"missing {exc.args[0]!r}", file=str(path), key=where) from None
            except ConfigError as exc:
                raise ConfigError(exc.reason, file=str(path), key=where) from None
            book._check(acc, where)
            book.accounts[acc.name] = acc
        return book

    @classmethod
    def load_or_create(cls, path: Path) -> tuple[AccountBook, list[SipAccount]]:
        """The book, created with :data:`DEFAULT_ROSTER` and fresh passwords if the file does not exist;
        the second item lists the accounts created now (their passwords are shown once)."""
        if path.exists():
            return cls.load(path), []
        book = cls(path)
        created = [SipAccount(a.name, a.role, generate_password(), a.queues, a.callerid) for a in DEFAULT_ROSTER]
        for acc in created:
            book.accounts[acc.name] = acc
        book.save()
        return book, created

    def _check(self, acc: SipAccount, where: str) -> None:
        if not NAME_RE.match(acc.name):
            raise ConfigError(
                f"account name {acc.name!r}: use 1-32 lower-case letters, digits, '-' or '_', starting with a letter",
                file=str(self.path), key=where,
            )  # fmt: skip
        if acc.role not in ROLES:
            raise ConfigError(f"role {acc.role!r}: one of {', '.join(ROLES)}", file=str(self.path), key=where)
        if not _PASSWORD_RE.match(acc.password):
            raise ConfigError(
                "the password may only hold letters, digits and ._~+/=@%^- (no spaces, ';', '#' or quotes)",
                file=str(self.path), key=where,
            )  # fmt: skip
        if any(c in acc.callerid for c in ";#\n"):
            raise ConfigError("callerid must not hold ';', '#' or a newline", file=str(self.path), key=where)

    def add_agent(self, name: str, queues: Iterable[Membership], *, known_queues: Iterable[str] = ()) -> SipAccount:
        """A new agent with a generated password (saved at once)."""
        memberships = tuple(queues)
        if name in self.accounts:
            raise ConfigError(f"account {name!r} exists already (`agi-router asterisk accounts` lists them)",
                              file=str(self.path))  # fmt: skip
        known = set(known_queues)
        unknown = [m.queue for m in memberships if known and m.queue not in known]
        if unknown:
            raise ConfigError(
                f"unknown queue(s) {', '.join(unknown)}: one of {', '.join(sorted(known))}", file=str(self.path)
            )
        acc = SipAccount(name, "agent", generate_password(), memberships)
        self._check(acc, name)
        self.accounts[name] = acc
        self.save()
        return acc

    def remove(self, name: str) -> None:
        if self.accounts.pop(name, None) is None:
            raise ConfigError(f"no account {name!r}", file=str(self.path))
        self.save()

    def placeholders(self) -> list[str]:
        return [a.name for a in self.accounts.values() if is_placeholder(a.password, a.name)]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        text = json.dumps({"format": FORMAT, "accounts": [a.to_json() for a in self.accounts.values()]}, indent=1)
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except OSError as exc:
            raise ConfigError(f"cannot write the SIP accounts: {exc.strerror}", file=str(self.path)) from None
