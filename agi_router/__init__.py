"""agi-router: FastAGI call router for a health-insurance hotline.

Architecture (one folder per concern):

* ``agi/``        FastAGI edge: wire format, session, server
* ``callflow/``   per-call orchestration and motive capture sources
* ``policy/``     the pure decision core (facts in, decision out) and its validated config
* ``motives/``    the motive catalogue
* ``directory/``  online-account directory backends (SQLite, HTTP)
* ``state/``      caller memory backends (in-process, Redis)
"""

from .exceptions import (
    AGICommandError,
    AGIConnectionClosed,
    AGIDeadChannel,
    AGIError,
    AGIHangup,
    AGIHeaderTooLarge,
    AGIInvalidCommand,
    AGIProtocolError,
    AGITimeout,
    AGIUsageError,
    AMIActionError,
    AMIAuthError,
    AMIConnectionError,
    AMIError,
    AMIProtocolError,
    AMITimeout,
    ConfigError,
    DirectoryError,
    DirectoryImportError,
    DirectoryTimeout,
    MediaError,
    NumberFormatError,
    PolicyError,
    RouterError,
    StateStoreError,
)

__version__ = "0.1.0"

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
    "RouterError",
    "StateStoreError",
    "__version__",
]
