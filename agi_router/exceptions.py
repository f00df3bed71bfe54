"""The one exception tree of agi-router.

Every error the router raises on purpose derives from :class:`RouterError`::

    RouterError
    ├── ConfigError                 a settings or policy file is wrong (file, key, what is wrong)
    │   └── PolicyError             a policy file failed validation
    ├── NumberFormatError           a telephone number cannot be normalised to E.164
    ├── AGIError                    anything on the FastAGI connection
    │   ├── AGIProtocolError        Asterisk sent something that is not res_agi's wire format
    │   │   └── AGIHeaderTooLarge   the agi_* block exceeded the size or line limit
    │   ├── AGITimeout              a header or a command response did not arrive in time
    │   ├── AGIConnectionClosed     the socket closed before a complete answer
    │   ├── AGIHangup               the caller hung up (inline ``HANGUP`` line, or result=-1)
    │   └── AGICommandError         Asterisk answered a command with an error code
    │       ├── AGIInvalidCommand   510 Invalid or unknown command
    │       ├── AGIDeadChannel      511 Command Not Permitted on a dead channel
    │       └── AGIUsageError       520 Invalid command syntax (usage follows)
    ├── AMIError                    anything on the AMI connection
    │   ├── AMIProtocolError        not AMI's wire format (banner, oversized message)
    │   ├── AMIConnectionError      not connected, refused, lost, half-open (no Pong)
    │   │   └── AMIAuthError        login refused
    │   ├── AMITimeout              an action got no response in time
    │   └── AMIActionError          Asterisk answered ``Response: Error``
    ├── MediaError                  the RTP media endpoint cannot run (no free port, no peer yet)
    ├── RecognitionError            the speech recogniser failed on an utterance (caller -> DTMF menu)
    ├── DirectoryError              the account directory could not answer
    │   ├── DirectoryTimeout        it did not answer within its time budget
    │   └── DirectoryImportError    a CSV import was refused (nothing was imported)
    └── StateStoreError             the caller-memory store could not answer

Callers of the router catch :class:`RouterError`; the call flow never lets one reach a
caller: any of them ends in a fallback route to a human.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AGICommandError",
    "AGIConnectionClosed",
    "AGIDeadChannel",
    "AGIError",
    "AGIHangup",
    "AGIHeaderTooLarge",
    "AGIInvalidCommand",
    "AGIProtocolError",
    "AGITimeout",
    "AGIUsageError",
    "AMIActionError",
    "AMIAuthError",
    "AMIConnectionError",
    "AMIError",
    "AMIProtocolError",
    "AMITimeout",
    "ConfigError",
    "DirectoryError",
    "DirectoryImportError",
    "DirectoryTimeout",
    "MediaError",
    "NumberFormatError",
    "PolicyError",
    "RecognitionError",
    "RouterError",
    "StateStoreError",
]


class RouterError(Exception):
    """Base class of every error agi-router raises on purpose."""


class ConfigError(RouterError):
    """A configuration file is invalid. ``file`` and ``key`` locate the fault."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        self.file = file
        self.key = key
        self.reason = message
        where = ": ".join(p for p in (file, key) if p)
        super().__init__(f"{where}: {message}" if where else message)


class PolicyError(ConfigError):
    """A policy file failed validation; the running policy is kept."""


class NumberFormatError(RouterError, ValueError):
    """A telephone number cannot be normalised to E.164."""


class AGIError(RouterError):
    """Base class of FastAGI errors."""


class AGIProtocolError(AGIError):
    """Asterisk sent a line that is not in res_agi's wire format. ``consumed`` is False when the
    offending bytes are still unread (the header reader stopped at its size limit)."""

    consumed: bool = True


class AGIHeaderTooLarge(AGIProtocolError):
    """The ``agi_*`` environment block exceeded the configured size or line count."""


class AGITimeout(AGIError):
    """The header or a command response did not arrive within its deadline."""


class AGIConnectionClosed(AGIError):
    """The connection closed before a complete header or response."""


class AGIHangup(AGIError):
    """The caller hung up. Later commands would get 511."""


class AGICommandError(AGIError):
    """Asterisk answered a command with an error status code."""

    code: int = 0

    def __init__(self, command: str, message: str, usage: Sequence[str] = ()) -> None:
        self.command = command
        self.message = message
        self.usage = tuple(usage)
        super().__init__(f"{self.code} {message} (command: {command!r})")


class AGIInvalidCommand(AGICommandError):
    """510 Invalid or unknown command."""

    code = 510


class AGIDeadChannel(AGICommandError):
    """511 Command Not Permitted on a dead channel or intercept routine."""

    code = 511


class AGIUsageError(AGICommandError):
    """520 Invalid command syntax; ``usage`` holds the usage text Asterisk sent."""

    code = 520


class AMIError(RouterError):
    """Base class of AMI errors. While AMI is down the router routes on safe defaults."""


class AMIProtocolError(AMIError):
    """The peer does not speak AMI, or sent an oversized message."""


class AMIConnectionError(AMIError):
    """AMI is not connected (refused, lost, half-open); actions fail fast."""


class AMIAuthError(AMIConnectionError):
    """The AMI login was refused."""


class AMITimeout(AMIError):
    """An AMI action got no response within its timeout."""


class AMIActionError(AMIError):
    """Asterisk answered an action with ``Response: Error``."""

    def __init__(self, action: str, message: str) -> None:
        self.action = action
        self.message = message
        super().__init__(f"{action}: {message or 'error'}")


class MediaError(RouterError):
    """The RTP media endpoint cannot run: no free port, nothing to send to yet.

    Garbage or foreign packets are never raised: they are counted and dropped."""


class RecognitionError(RouterError):
    """The recogniser raised on an utterance (model fault, worker gone). The caller gets the DTMF
    menu; the original exception is the ``__cause__``."""


class DirectoryError(RouterError):
    """The account directory could not answer. The status is then 'unknown'."""


class DirectoryTimeout(DirectoryError):
    """The account directory did not answer within its time budget."""


class DirectoryImportError(DirectoryError):
    """A directory import was refused; ``errors`` lists ``(line, message)``; nothing was imported."""

    def __init__(self, file: str, errors: Sequence[tuple[int, str]]) -> None:
        self.file = file
        self.errors = tuple(errors)
        stopped = bool(self.errors) and self.errors[-1][1].startswith("stopped counting")
        rows = self.errors[:-1] if stopped else self.errors
        shown = "\n".join(f"{file}:{line}: {msg}" for line, msg in rows[:50])
        more = f"\n... and {len(rows) - 50} more" if len(rows) > 50 else ""
        count = f"{len(rows)}+ bad rows (counting stopped there)" if stopped else f"{len(rows)} bad row(s)"
        super().__init__(f"{count}, nothing imported:\n{shown}{more}")


class StateStoreError(RouterError):
    """The caller-memory store could not answer."""
